//! Configuration: defaults < `tollgate.toml` < environment, validated in one step.
//!
//! `Config::load` reads the TOML file (when present) and an [`Env`] value, reads every setting
//! through [`source::Sources`], and returns either a complete, typed, immutable `Config` or the
//! full list of problems, one line each naming the setting. `tollgate serve` and
//! `tollgate config check` run the same loader. Tests build an `Env` from a map and never touch
//! the process environment.

mod cache;
mod content;
mod generate;
mod limits;
mod log;
mod records;
mod routing;
mod server;
pub mod source;
mod store;
mod upstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;

pub use cache::{CacheConfig, ChatCachePolicy};
pub use content::{ContentConfig, Detector};
pub use generate::GenerateConfig;
pub use limits::{
    AnonymousConfig, BackendErrorPolicy, BudgetBackendPolicy, BudgetPeriod, BudgetSpec, JwtConfig,
    LimitsConfig, UnpricedPolicy,
};
pub use log::{LogConfig, LogFormat, OtlpProtocol, TracesConfig};
pub use records::RecordsConfig;
pub use routing::{AliasTarget, DEFAULT_UPSTREAM, ModelAlias, UpstreamEntry};
pub use server::ServerConfig;
pub use source::Env;
pub use store::{DatabaseConfig, DatabaseEngine, KeysConfig, mask_database_url};
pub use upstream::UpstreamConfig;

use source::Sources;

/// The whole effective configuration. Built once at start, never changed after.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub database: DatabaseConfig,
    pub keys: KeysConfig,
    pub log: LogConfig,
    pub generate: GenerateConfig,
    pub limits: LimitsConfig,
    pub jwt: JwtConfig,
    pub anonymous: AnonymousConfig,
    /// `[pricing."MODEL"]`: overrides of and additions to the built-in price table.
    pub pricing: std::collections::HashMap<String, crate::pricing::ModelPrice>,
    pub records: RecordsConfig,
    pub cache: CacheConfig,
    pub content: ContentConfig,
    /// `[[upstreams]]`: providers besides the default one.
    pub upstreams: Vec<UpstreamEntry>,
    /// `[models.ALIAS]`: public model names, their targets and fallbacks.
    pub models: std::collections::BTreeMap<String, ModelAlias>,
}

/// Every problem found, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Loads `path` (or `TOLLGATE_CONFIG`, or `tollgate.toml` when it exists) and overlays `env`.
    /// An explicitly named file must exist; the default one is optional.
    pub fn load(path: Option<&Path>, env: &Env) -> Result<Self, ConfigError> {
        let (file, required) = match (path, env.get("TOLLGATE_CONFIG")) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (PathBuf::from(p), true),
            (None, None) => (PathBuf::from("tollgate.toml"), false),
        };
        let label = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(e) => return Err(ConfigError(vec![format!("{label}: cannot read: {e}")])),
        };
        Self::from_toml_str(&label, &text, env)
    }

    /// Builds the configuration from TOML text and an environment (what tests use).
    pub fn from_toml_str(label: &str, text: &str, env: &Env) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError(vec![format!("{label}: {}", e.message().trim())])
        })?;
        let mut sources = Sources::new(label, table, env);
        let (upstreams, models) = routing::read(&mut sources);
        let config = Self {
            server: ServerConfig::read(&mut sources),
            upstream: UpstreamConfig::read(&mut sources),
            database: DatabaseConfig::read(&mut sources),
            keys: KeysConfig::read(&mut sources),
            log: LogConfig::read(&mut sources),
            generate: GenerateConfig::read(&mut sources),
            limits: LimitsConfig::read(&mut sources),
            jwt: JwtConfig::read(&mut sources),
            anonymous: AnonymousConfig::read(&mut sources),
            pricing: crate::pricing::config::read(&mut sources),
            records: RecordsConfig::read(&mut sources),
            cache: CacheConfig::read(&mut sources),
            content: ContentConfig::read(&mut sources),
            upstreams,
            models,
        };
        let errors = sources.finish();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(errors))
        }
    }

    /// The effective configuration as TOML, secrets masked (`tollgate config check`).
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

pub(crate) fn serialize_ms<S: serde::Serializer>(
    value: &Duration,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn serialize_secret<S: serde::Serializer>(
    _: &SecretString,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str("********")
}

pub(crate) fn serialize_optional_secret<S: serde::Serializer>(
    value: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("********"),
        None => s.serialize_str("(unset)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().copied().collect()
    }

    #[test]
    fn budgets_hold_locally_through_an_outage_unless_the_limits_fail_closed() {
        let load = |toml: &str| {
            Config::from_toml_str("t", toml, &env(&[("OPENAI_API_KEY", "sk-test")])).unwrap()
        };
        let defaults = load("");
        assert_eq!(
            defaults.limits.budget_on_backend_error,
            BudgetBackendPolicy::Local
        );
        assert!((defaults.limits.budget_outage_share - 0.5).abs() < f64::EPSILON);
        // An operator who had chosen `fail_closed` for the limits (which budgets followed)
        // keeps it for budgets.
        let closed = load("[limits]\non_backend_error = \"fail_closed\"\n");
        assert_eq!(
            closed.limits.budget_on_backend_error,
            BudgetBackendPolicy::FailClosed
        );
        let chosen = load(
            "[limits]\non_backend_error = \"fail_closed\"\n\n[budgets]\non_backend_error = \"local\"\n",
        );
        assert_eq!(
            chosen.limits.budget_on_backend_error,
            BudgetBackendPolicy::Local
        );
        let bad = Config::from_toml_str(
            "t",
            "[budgets]\noutage_share = 2.0\n",
            &env(&[("OPENAI_API_KEY", "sk-test")]),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn defaults_need_only_the_upstream_key() {
        let config =
            Config::from_toml_str("t", "", &env(&[("OPENAI_API_KEY", "sk-test")])).unwrap();
        assert_eq!(config.server.port, 3006);
        assert_eq!(
            config.upstream.base_url.as_str(),
            "https://api.openai.com/v1/"
        );
        assert_eq!(config.upstream.max_retries, 3);
        assert_eq!(config.upstream.timeout, Duration::from_secs(60));
        assert_eq!(config.database.engine, DatabaseEngine::Sqlite);
    }

    #[test]
    fn all_problems_come_back_together() {
        let text = "[server]\nport = 70000\n[upstream]\nmax_retries = 99\n";
        let errors =
            Config::from_toml_str("tollgate.toml", text, &env(&[("OPENAI_TIMEOUT", "soon")]))
                .unwrap_err()
                .0;
        let joined = errors.join("\n");
        assert!(
            joined.contains("tollgate.toml: server.port: expected a whole number, got 70000"),
            "{joined}"
        );
        assert!(
            joined.contains("OPENAI_MAX_RETRIES")
                || joined.contains("upstream.max_retries: at most 10"),
            "{joined}"
        );
        assert!(
            joined.contains("OPENAI_TIMEOUT: expected milliseconds"),
            "{joined}"
        );
        assert!(joined.contains("OPENAI_API_KEY: required"), "{joined}");
        assert_eq!(errors.len(), 4, "{joined}");
    }

    #[test]
    fn masked_output_hides_every_secret() {
        let config = Config::from_toml_str(
            "t",
            "",
            &env(&[
                ("OPENAI_API_KEY", "sk-very-secret"),
                ("TOLLGATE_ADMIN_TOKEN", "admin-token-very-secret"),
                ("DATABASE_URL", "postgres://u:pw-very-secret@localhost/db"),
            ]),
        )
        .unwrap();
        let shown = config.to_masked_toml();
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(
            shown.contains("postgres://u:********@localhost/db"),
            "{shown}"
        );
    }

    #[test]
    fn limit_rules_are_read_and_every_bad_one_named() {
        let text = r#"
[limits]
on_backend_error = "fail_closed"

[[limits.rules]]
scope = "ip"
route = "*"
requests = 10
per = "1m"

[[limits.rules]]
scope = "planet"
route = "chat"
requests = 1
per = "1m"

[[limits.rules]]
scope = "user"
route = "chat"
tokens = 5
per = "1w"

[jwt]
models = ["gpt-4o-mini"]
budget = { max_usd = 5.0, period = "month" }
"#;
        let errors = Config::from_toml_str("t.toml", text, &env(&[("OPENAI_API_KEY", "k")]))
            .unwrap_err()
            .0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("t.toml: limits.rules[1]: unknown variant `planet`"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("t.toml: limits.rules[2]: bad period \"1w\""),
            "{errors:?}"
        );

        let good = text
            .replace("scope = \"planet\"", "scope = \"key\"")
            .replace("per = \"1w\"", "per = \"1h\"");
        let config =
            Config::from_toml_str("t.toml", &good, &env(&[("OPENAI_API_KEY", "k")])).unwrap();
        assert_eq!(
            config.limits.rules.len(),
            3,
            "the file's rules replace the defaults"
        );
        assert_eq!(
            config.limits.on_backend_error,
            BackendErrorPolicy::FailClosed
        );
        assert_eq!(config.jwt.budget.as_ref().map(|b| b.alert_at), Some(0.8));
        assert!(config.to_masked_toml().contains("scope = \"ip\""));
    }

    #[test]
    fn the_seeds_limits_are_the_defaults() {
        let config = Config::from_toml_str("t", "", &env(&[("OPENAI_API_KEY", "k")])).unwrap();
        let ids: Vec<String> = config.limits.rules.iter().map(|r| r.id()).collect();
        assert_eq!(
            ids,
            [
                "ip:*:requests:1000/3600s",
                "user:chat:requests:100/60s",
                "user:images:requests:50/3600s",
                "user:embeddings:requests:500/3600s"
            ]
        );
        assert!(!config.anonymous.enabled);
        assert!(!config.jwt.enabled());
    }

    #[test]
    fn wildcard_cors_is_refused() {
        let errors = Config::from_toml_str(
            "t",
            "",
            &env(&[("OPENAI_API_KEY", "k"), ("TOLLGATE_CORS_ORIGINS", "*")]),
        )
        .unwrap_err()
        .0;
        assert!(
            errors[0].starts_with("TOLLGATE_CORS_ORIGINS: \"*\""),
            "{errors:?}"
        );
    }
}
