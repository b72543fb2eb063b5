//! Reading settings from the TOML file and the environment, collecting every problem.
//!
//! Each setting is read once, by name, from the merged view: the environment variable (when the
//! setting has one) wins over the TOML key, which wins over the default. A value that does not
//! parse is recorded as one line naming the setting, and reading goes on, so that start-up can
//! report every bad setting at once. Keys left unread in the TOML are reported as unknown.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// The process environment, passed as a value so that tests never touch the real one.
#[derive(Debug, Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    /// Snapshot of the process environment (only `main` calls this).
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// Sets `name`, replacing any value (the demo points the gateway at its own mock).
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_owned(), value.to_owned());
    }

    /// Sets `name` when it is unset (commands that need only part of the configuration).
    pub fn set_default(&mut self, name: &str, value: &str) {
        if self.get(name).is_none() {
            self.0.insert(name.to_owned(), value.to_owned());
        }
    }

    /// The value of a variable; empty values count as unset, as shells often export `X=`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// A type a setting can be read as, from a TOML value or an environment string.
pub trait Setting: Sized {
    /// What the reader expected, for the error line.
    const EXPECTED: &'static str;
    /// Whether a bad value may be echoed in the error line.
    const ECHO: bool = true;
    fn from_toml(value: &toml::Value) -> Option<Self>;
    fn from_env(value: &str) -> Option<Self>;
    /// The value as the file would hold it, for `config check`'s effective configuration.
    fn to_toml(&self) -> toml::Value;
}

/// What `config check` prints in place of a secret. The loader refuses it by name, so a
/// printed configuration fed back without the secret fails loudly instead of running with a
/// placeholder for a password.
pub const MASKED: &str = "<masked: set this secret again>";

macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            const EXPECTED: &'static str = "a whole number";
            fn from_toml(value: &toml::Value) -> Option<Self> {
                value.as_integer().and_then(|i| <$t>::try_from(i).ok())
            }
            fn from_env(value: &str) -> Option<Self> {
                value.trim().parse().ok()
            }
            fn to_toml(&self) -> toml::Value {
                toml::Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
integer_setting!(u16, u32, u64, usize);

impl Setting for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value
            .as_float()
            .or_else(|| value.as_integer().map(|i| i as f64))
            .filter(|f| f.is_finite())
    }
    fn from_env(value: &str) -> Option<Self> {
        value.trim().parse().ok().filter(|f: &f64| f.is_finite())
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Float(*self)
    }
}

impl Setting for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_bool()
    }
    fn from_env(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Boolean(*self)
    }
}

impl Setting for String {
    const EXPECTED: &'static str = "a string";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
    fn from_env(value: &str) -> Option<Self> {
        Some(value.to_owned())
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.clone())
    }
}

impl Setting for SecretString {
    const EXPECTED: &'static str = "a string";
    const ECHO: bool = false;
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().map(|s| SecretString::from(s.to_owned()))
    }
    fn from_env(value: &str) -> Option<Self> {
        Some(SecretString::from(value.to_owned()))
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(MASKED.to_owned())
    }
}

/// A comma-separated list in the environment, an array of strings in TOML.
impl Setting for Vec<String> {
    const EXPECTED: &'static str = "a list of strings";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect()
    }
    fn from_env(value: &str) -> Option<Self> {
        Some(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Array(self.iter().cloned().map(toml::Value::String).collect())
    }
}

impl Setting for Url {
    const EXPECTED: &'static str = "an http(s) URL";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().and_then(Self::from_env)
    }
    fn from_env(value: &str) -> Option<Self> {
        Url::parse(value.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
    }
    /// A URL with a password or a query (which may carry a token) is shown masked.
    fn to_toml(&self) -> toml::Value {
        if self.password().is_some() || self.query().is_some() {
            toml::Value::String(MASKED.to_owned())
        } else {
            toml::Value::String(self.as_str().to_owned())
        }
    }
}

/// Durations are written as whole milliseconds (`OPENAI_TIMEOUT=60000`, `timeout_ms = 60000`).
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub Duration);

impl Setting for Millis {
    const EXPECTED: &'static str = "milliseconds (a whole number)";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value
            .as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .map(|ms| Self(Duration::from_millis(ms)))
    }
    fn from_env(value: &str) -> Option<Self> {
        value
            .trim()
            .parse()
            .ok()
            .map(|ms| Self(Duration::from_millis(ms)))
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Integer(i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Seconds, as `AI_CACHE_TTL` is written.
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub Duration);

impl Setting for Seconds {
    const EXPECTED: &'static str = "seconds (a whole number)";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value
            .as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .map(|s| Self(Duration::from_secs(s)))
    }
    fn from_env(value: &str) -> Option<Self> {
        value
            .trim()
            .parse()
            .ok()
            .map(|s| Self(Duration::from_secs(s)))
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Integer(i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX))
    }
}

/// The merged view of file and environment, and the problems found while reading it.
pub struct Sources<'a> {
    file_label: String,
    table: toml::Table,
    env: &'a Env,
    read: BTreeSet<String>,
    errors: Vec<String>,
    effective: toml::Table,
    from_env_only: BTreeSet<String>,
}

/// What reading found: the problems, and the effective configuration in the file's own keys.
pub struct Finished {
    /// One line per problem; empty when the configuration is valid.
    pub errors: Vec<String>,
    /// Every setting read, at its TOML path, with the value in force (defaults included,
    /// secrets masked): a file that loads back to the same configuration.
    pub effective: toml::Table,
    /// Settings only the environment may give that were set (their names, never values).
    pub from_env_only: BTreeSet<String>,
}

impl<'a> Sources<'a> {
    /// `file_label` names the file in error lines (`tollgate.toml`).
    pub fn new(file_label: impl Into<String>, table: toml::Table, env: &'a Env) -> Self {
        Self {
            file_label: file_label.into(),
            table,
            env,
            read: BTreeSet::new(),
            errors: Vec::new(),
            effective: toml::Table::new(),
            from_env_only: BTreeSet::new(),
        }
    }

    /// Reads `path` (dotted TOML key) or `env_var`, falling back to `default`.
    pub fn get<T: Setting>(&mut self, path: &str, env_var: Option<&str>, default: T) -> T {
        let value = self.optional(path, env_var).unwrap_or(default);
        self.note_effective(path, value.to_toml());
        value
    }

    /// Reads `path` or `env_var`; `None` when neither is set or the value is bad (then recorded).
    pub fn optional<T: Setting>(&mut self, path: &str, env_var: Option<&str>) -> Option<T> {
        if let Some(name) = env_var
            && let Some(raw) = self.env.get(name)
        {
            // The TOML key is still marked read: it is known, merely overridden.
            self.read.insert(path.to_owned());
            return match T::from_env(raw) {
                Some(value) => {
                    self.note_effective(path, value.to_toml());
                    Some(value)
                }
                None => {
                    let got = if T::ECHO {
                        format!(", got {raw:?}")
                    } else {
                        String::new()
                    };
                    self.errors
                        .push(format!("{name}: expected {}{got}", T::EXPECTED));
                    None
                }
            };
        }
        let value = self.lookup(path)?.clone();
        self.read.insert(path.to_owned());
        if value.as_str() == Some(MASKED) {
            let put = env_var.map_or_else(String::new, |var| format!(" (or set {var})"));
            self.errors.push(format!(
                "{}: {path}: holds the mask `config check` prints in place of a secret: put the secret back{put}",
                self.file_label
            ));
            return None;
        }
        match T::from_toml(&value) {
            Some(parsed) => {
                self.note_effective(path, parsed.to_toml());
                Some(parsed)
            }
            None => {
                let got = if T::ECHO {
                    format!(", got {value}")
                } else {
                    String::new()
                };
                self.errors.push(format!(
                    "{}: {path}: expected {}{got}",
                    self.file_label,
                    T::EXPECTED
                ));
                None
            }
        }
    }

    /// The raw TOML value at `path` (arrays of tables such as `limits.rules`), marked read.
    pub fn raw(&mut self, path: &str) -> Option<toml::Value> {
        let value = self.lookup(path)?.clone();
        self.read.insert(path.to_owned());
        self.note_effective(path, value.clone());
        Some(value)
    }

    /// Records a problem at `path` in the file.
    pub fn invalid_in_file(&mut self, path: &str, message: impl std::fmt::Display) {
        self.errors
            .push(format!("{}: {path}: {message}", self.file_label));
    }

    /// Reads an optional setting that only the environment may give.
    pub fn optional_env<T: Setting>(&mut self, env_var: &str) -> Option<T> {
        let raw = self.env.get(env_var)?;
        self.from_env_only.insert(env_var.to_owned());
        let parsed = T::from_env(raw);
        if parsed.is_none() {
            self.errors
                .push(format!("{env_var}: expected {}", T::EXPECTED));
        }
        parsed
    }

    /// Reads a setting that only the environment may give (secrets that must not sit in a
    /// file that could be committed). A missing one is recorded as `message`.
    pub fn required_env<T: Setting>(&mut self, env_var: &str, message: &str) -> Option<T> {
        let Some(raw) = self.env.get(env_var) else {
            self.errors.push(format!("{env_var}: {message}"));
            return None;
        };
        self.from_env_only.insert(env_var.to_owned());
        let parsed = T::from_env(raw);
        if parsed.is_none() {
            self.errors
                .push(format!("{env_var}: expected {}", T::EXPECTED));
        }
        parsed
    }

    /// Records a problem found while validating a value that did parse.
    pub fn invalid(&mut self, path: &str, env_var: Option<&str>, message: impl std::fmt::Display) {
        let name = match env_var {
            Some(var) if self.env.get(var).is_some() => var.to_owned(),
            _ => format!("{}: {path}", self.file_label),
        };
        self.errors.push(format!("{name}: {message}"));
    }

    /// Every unread TOML key is an unknown setting (a typo or a setting from another version).
    pub fn finish(mut self) -> Finished {
        let mut unknown = Vec::new();
        collect_unknown(&self.table, "", &self.read, &mut unknown);
        for key in unknown {
            self.errors
                .push(format!("{}: unknown setting {key:?}", self.file_label));
        }
        Finished {
            errors: self.errors,
            effective: self.effective,
            from_env_only: self.from_env_only,
        }
    }

    /// Shows `value` for `path` in the effective configuration in place of what was read: a
    /// secret-typed setting whose value holds no secret (a database URL without a password).
    pub fn show(&mut self, path: &str, value: &str) {
        self.note_effective(path, toml::Value::String(value.to_owned()));
    }

    /// Puts `value` at the dotted `path` of the effective configuration.
    fn note_effective(&mut self, path: &str, value: toml::Value) {
        let mut parts: Vec<&str> = path.split('.').collect();
        let Some(last) = parts.pop() else { return };
        let mut table = &mut self.effective;
        for part in parts {
            let entry = table
                .entry(part.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                return;
            };
            table = inner;
        }
        table.insert(last.to_owned(), value);
    }

    fn lookup(&self, path: &str) -> Option<&toml::Value> {
        let mut parts = path.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }
}

fn collect_unknown(
    table: &toml::Table,
    prefix: &str,
    read: &BTreeSet<String>,
    out: &mut Vec<String>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if read.contains(&path) {
            continue;
        }
        match value {
            toml::Value::Table(inner)
                if read.iter().any(|r| r.starts_with(&format!("{path}."))) =>
            {
                collect_unknown(inner, &path, read, out);
            }
            _ => out.push(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_wins_over_file_which_wins_over_default() {
        let table: toml::Table =
            toml::from_str("[upstream]\nmax_retries = 5\ntimeout_ms = 10").unwrap();
        let env: Env = [("OPENAI_TIMEOUT", "20")].into_iter().collect();
        let mut sources = Sources::new("tollgate.toml", table, &env);
        assert_eq!(
            sources.get("upstream.max_retries", Some("OPENAI_MAX_RETRIES"), 3u32),
            5
        );
        let timeout: Millis = sources.get(
            "upstream.timeout_ms",
            Some("OPENAI_TIMEOUT"),
            Millis(Duration::ZERO),
        );
        assert_eq!(timeout.0, Duration::from_millis(20));
        assert_eq!(sources.get("server.port", Some("PORT"), 3006u16), 3006);
        assert!(sources.finish().errors.is_empty());
    }

    #[test]
    fn every_problem_is_reported_once_naming_its_setting() {
        let table: toml::Table = toml::from_str("[server]\nport = \"x\"\nprot = 1").unwrap();
        let env: Env = [("OPENAI_TIMEOUT", "soon"), ("OPENAI_API_KEY", "")]
            .into_iter()
            .collect();
        let mut sources = Sources::new("tollgate.toml", table, &env);
        let _: Option<u16> = sources.optional("server.port", None);
        let _: Option<Millis> = sources.optional("upstream.timeout_ms", Some("OPENAI_TIMEOUT"));
        let errors = sources.finish().errors;
        assert_eq!(
            errors,
            vec![
                "tollgate.toml: server.port: expected a whole number, got \"x\"".to_owned(),
                "OPENAI_TIMEOUT: expected milliseconds (a whole number), got \"soon\"".to_owned(),
                "tollgate.toml: unknown setting \"server.prot\"".to_owned(),
            ]
        );
    }

    #[test]
    fn secrets_are_never_echoed() {
        let table: toml::Table = toml::from_str("[admin]\ntoken = 42").unwrap();
        let env = Env::default();
        let mut sources = Sources::new("f", table, &env);
        let _: Option<SecretString> = sources.optional("admin.token", None);
        let errors = sources.finish().errors;
        assert_eq!(errors, vec!["f: admin.token: expected a string".to_owned()]);
    }
}
