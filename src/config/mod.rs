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

pub use cache::{CacheConfig, ChatCachePolicy};
pub use content::{ContentConfig, Detector};
pub use generate::GenerateConfig;
pub use limits::{
    AlertFormat, AnonymousConfig, BackendErrorPolicy, BudgetBackendPolicy, BudgetPeriod,
    BudgetSpec, JwtConfig, LimitsConfig, UnpricedPolicy,
};
pub use log::{LogConfig, LogFormat, OtlpProtocol, TracesConfig};
pub use records::RecordsConfig;
pub use routing::{
    AZURE_API_VERSION, AliasTarget, AzureSettings, DEFAULT_UPSTREAM, MAX_COOLDOWN, ModelAlias,
    ModelPool, PoolMember, PoolStrategy, UpstreamEntry, UpstreamKind,
};
pub use server::ServerConfig;
pub use source::Env;
pub use store::{DatabaseConfig, DatabaseEngine, KeysConfig, mask_database_url};
pub use upstream::UpstreamConfig;

use source::Sources;

/// The whole effective configuration. Built once at start, never changed after.
#[derive(Debug, Clone)]
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
    /// What was read, as the file would say it (`config check`, reload).
    pub effective: Effective,
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
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(vec![syntax_error(label, text, &e)]))?;
        let mut sources = Sources::new(label, table, env);
        let (upstreams, models) = routing::read(&mut sources);
        let mut config = Self {
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
            effective: Effective::default(),
        };
        let finished = sources.finish();
        if !finished.errors.is_empty() {
            return Err(ConfigError(finished.errors));
        }
        config.effective = Effective {
            table: finished.effective,
            from_env_only: finished.from_env_only,
        };
        Ok(config)
    }
}

/// The configuration as an operator writes it: every setting read, at its TOML path, with the
/// value in force (defaults included, secrets masked). `config check` prints it; a reload
/// compares sections of it to find changes that need a restart.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    /// The settings, nested as in the file.
    pub table: toml::Table,
    /// Settings only the environment gives that are set (names only).
    pub from_env_only: std::collections::BTreeSet<String>,
}

impl Effective {
    /// One section (`server`) or setting (`keys.cache_ttl_ms`) as read.
    pub fn get(&self, path: &str) -> Option<&toml::Value> {
        let mut parts = path.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    /// The effective configuration as a TOML file that loads back to the same configuration
    /// (with the same environment); secrets are shown as [`source::MASKED`], which the loader
    /// refuses by name.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# tollgate config check: the configuration is valid.\n");
        out.push_str("# Every setting in force, defaults included; secrets are masked.\n");
        for name in &self.from_env_only {
            out.push_str(&format!("# {name} is set in the environment.\n"));
        }
        out.push('\n');
        out.push_str(
            &toml::to_string_pretty(&self.table)
                .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n")),
        );
        out
    }
}

/// A TOML syntax error as `FILE:LINE:COLUMN: message`.
fn syntax_error(label: &str, text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim();
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .map_or(0, |last| last.chars().count())
                + 1;
            format!("{label}:{line}:{column}: {message}")
        }
        None => format!("{label}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let shown = config.effective.to_toml();
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(
            shown.contains(&format!("url = \"{}\"", source::MASKED)),
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
        assert!(config.effective.to_toml().contains("scope = \"ip\""));
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

    /// A file using every kind of setting: scalars, durations, lists, URLs, secrets, arrays of
    /// tables and free-form tables.
    const RICH: &str = r#"
[server]
port = 4000
host = "localhost"
cors_origins = ["https://app.example.com"]
header_read_timeout_ms = 2500

[upstream]
max_retries = 5

[database]
url = "postgres://tollgate@db.internal:5432/tollgate?sslmode=verify-full"

[limits]
redis_url = "redis://cache.internal:6379"

[[limits.rules]]
scope = "key"
route = "chat"
requests = 100
per = "1m"

[budgets]
outage_share = 0.25

[cache]
embeddings = "off"

[content]
deny = ["(?i)forbidden"]
max_prompt_chars = 300

[[upstreams]]
name = "backup"
base_url = "https://backup.example.com/v1"
api_key_env = "BACKUP_API_KEY"
models = ["gpt-4.1-nano"]

[[upstreams]]
name = "azure-east"
kind = "azure"
base_url = "https://east.example.openai.azure.com/openai"
api_key_env = "AZURE_EAST_KEY"
api_version = "2024-10-21"
deployments = { "gpt-4o-mini" = "prod-mini" }

[models.fast]
target = "gpt-4o-mini"
fallbacks = [{ target = "gpt-4.1-nano", upstream = "backup" }]

[models.gpt-4o-mini]
strategy = "headroom"
cooldown_ms = 2000
allowed_fails = 1
pool = [
  { upstream = "default", weight = 2 },
  { upstream = "azure-east", weight = 1, requests_per_minute = 600, tokens_per_minute = 90000 },
]

[pricing."my-model"]
input = 1
output = 2
max_output_tokens = 100
"#;

    fn rich_env() -> Env {
        env(&[
            ("OPENAI_API_KEY", "sk-upstream-secret"),
            ("BACKUP_API_KEY", "sk-backup-secret"),
            ("AZURE_EAST_KEY", "azure-east-secret"),
            ("OPENAI_TIMEOUT", "45000"),
            (
                "DATABASE_URL",
                "postgres://tollgate:db-password@db.internal/tollgate",
            ),
            ("TOLLGATE_ADMIN_TOKEN", "admin-token-0123456789abcdef"),
        ])
    }

    #[test]
    fn the_checked_configuration_loads_back_to_itself() {
        let rich = rich_env();
        let first = Config::from_toml_str("tollgate.toml", RICH, &rich).unwrap();
        let printed = first.effective.to_toml();
        for secret in [
            "sk-upstream-secret",
            "sk-backup-secret",
            "db-password",
            "from-the-file",
            "azure-east-secret",
        ] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        // The environment's value is the one in force, shown in the file's key.
        assert_eq!(
            first.effective.table["upstream"]["timeout_ms"].as_integer(),
            Some(45_000)
        );
        assert!(
            printed.contains("# OPENAI_API_KEY is set in the environment."),
            "{printed}"
        );
        // Defaults are shown too, in the keys the loader reads.
        assert_eq!(
            first.effective.table["records"]["flush_ms"].as_integer(),
            Some(50)
        );
        // Loaded back with the same environment, every setting reads the same value: the
        // configuration is the same one (it is a function of the values read).
        let second = Config::from_toml_str("printed.toml", &printed, &rich).unwrap();
        assert_eq!(second.effective.table, first.effective.table, "{printed}");
        assert_eq!(second.effective.to_toml(), printed);
        assert_eq!(second.server.port, 4000);
        assert_eq!(second.upstream.timeout.as_millis(), 45_000);
        assert_eq!(second.limits.rules.len(), 1);
        assert_eq!(second.upstreams.len(), 2);
        assert!(second.models.contains_key("fast"));
        // A pool and an Azure upstream read back as they were.
        assert_eq!(
            second.models["gpt-4o-mini"].pool,
            first.models["gpt-4o-mini"].pool
        );
        assert_eq!(second.upstreams[1].kind, first.upstreams[1].kind);
        let pool = second.models["gpt-4o-mini"].pool.as_ref().unwrap();
        assert_eq!((pool.members.len(), pool.allowed_fails), (2, 1));
        assert!(second.pricing.contains_key("my-model"));
        // A secret-free URL is shown as it is, so that the printed file stays useful.
        let plain = Config::from_toml_str("t", "", &env(&[("OPENAI_API_KEY", "k")])).unwrap();
        assert_eq!(
            plain.effective.table["database"]["url"].as_str(),
            Some("sqlite://tollgate.db")
        );
        for (url, shown) in [
            ("redis+cluster://h1:6379,h2:6379", true),
            ("postgres://tollgate@db/tollgate?sslmode=verify-full", true),
            ("rediss://:pw@cache:6380", false),
            ("postgres://u:pw@db/t", false),
            ("postgres://u@db/t?password=pw", false),
        ] {
            assert_eq!(store::without_credentials(url).is_some(), shown, "{url}");
        }
        // A mistyped webhook URL (a credential) is refused without being echoed.
        let error = Config::from_toml_str(
            "t",
            "",
            &env(&[
                ("OPENAI_API_KEY", "k"),
                (
                    "TOLLGATE_ALERT_WEBHOOK",
                    "hooks.slack.com/services/T0/B0/sekrit",
                ),
            ]),
        )
        .err()
        .unwrap();
        assert!(!format!("{error:?}").contains("sekrit"), "{error:?}");
    }

    #[test]
    fn a_masked_secret_fed_back_without_the_secret_is_refused_by_name() {
        let printed = Config::from_toml_str("tollgate.toml", RICH, &rich_env())
            .unwrap()
            .effective
            .to_toml();
        let without_secrets = env(&[
            ("OPENAI_API_KEY", "sk-upstream-secret"),
            ("BACKUP_API_KEY", "sk-backup-secret"),
            ("AZURE_EAST_KEY", "azure-east-secret"),
        ]);
        let errors = Config::from_toml_str("printed.toml", &printed, &without_secrets)
            .err()
            .unwrap()
            .0;
        for path in ["database.url", "keys.admin_token"] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(&format!("printed.toml: {path}: holds the mask"))),
                "{path} not refused: {errors:?}"
            );
        }
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let error = Config::from_toml_str(
            "tollgate.toml",
            "[server]\nport = 4000\nhost = \"x\n",
            &env(&[("OPENAI_API_KEY", "k")]),
        )
        .err()
        .unwrap();
        assert_eq!(error.0.len(), 1);
        assert!(error.0[0].starts_with("tollgate.toml:3:"), "{:?}", error.0);
    }
}
