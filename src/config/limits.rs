//! `[limits]`, `[jwt]`, `[anonymous]`: who may call, and how often.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::source::{Millis, Sources};
use crate::limiter::rules::{self, Rule, RuleSpec};
use crate::redis_link::{Endpoint, TlsFiles};

/// What to do when the shared rate-limit backend (Redis) cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorPolicy {
    /// Serve the request, log, count a metric (the default: an outage of Redis is not an
    /// outage of the gateway).
    FailOpen,
    /// Refuse with 503.
    FailClosed,
}

/// What budgets do when the shared counters (Redis) cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetBackendPolicy {
    /// Keep enforcing on this replica's own counters, seeded from the records and allowed
    /// `budgets.outage_share` of what each budget has left (the default).
    Local,
    /// Serve unreserved.
    FailOpen,
    /// Refuse with 503.
    FailClosed,
}

/// Rate limits.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `limits.enabled`: off skips the limit stage entirely (benchmarks compare with it).
    pub enabled: bool,
    /// `[[limits.rules]]`; the seeds' numbers when none are given.
    pub rules: Vec<Rule>,
    /// Every call to the shared backend is bounded by this.
    pub backend_timeout: Duration,
    pub on_backend_error: BackendErrorPolicy,
    /// `REDIS_URL`: buckets shared by every replica; unset keeps them in memory.
    pub redis_url: Option<SecretString>,
    /// `TOLLGATE_REDIS_CA_FILE`, `_CERT_FILE`, `_KEY_FILE`: PEM files for the `rediss` schemes.
    pub redis_tls: TlsFiles,
    /// Prefix of every Redis key, so several deployments (or tests) can share one Redis.
    pub redis_prefix: String,
    /// Completion tokens reserved for a token rule when the request sets no maximum.
    pub default_completion_tokens: u64,
    /// `TOLLGATE_ALERT_WEBHOOK` / `budgets.alert_webhook`: receives a JSON POST when a budget
    /// crosses its `alert_at`. Budgets share the limits' Redis, timeout and failure policy.
    pub alert_webhook: Option<Url>,
    /// `TOLLGATE_ALERT_FORMAT` / `budgets.alert_format`: what the webhook's body holds.
    pub alert_format: AlertFormat,
    /// `budgets.unpriced`: whether a caller under a budget may use a model that has no price
    /// (`refuse`, the default: its cost could not be held to the budget; or `allow`).
    pub unpriced: UnpricedPolicy,
    /// `budgets.on_backend_error`: what budgets do while Redis cannot answer.
    pub budget_on_backend_error: BudgetBackendPolicy,
    /// `budgets.outage_share`: the share (0 to 1) of what a budget has left that each replica
    /// may spend on its own counters while Redis cannot answer; at most 1 / replicas keeps
    /// every budget within its limit through an outage.
    pub budget_outage_share: f64,
}

/// The body of a budget alert's POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// Every field, and `text`, a sentence that Slack and Teams show (the default).
    Json,
    /// `{"text": …}` alone, for receivers that refuse fields they do not know.
    Slack,
}

/// What a budgeted caller asking for a model without a price gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpricedPolicy {
    /// 403, naming the model: a budget that cannot be enforced is not bypassed.
    Refuse,
    /// Served unreserved, recorded as unpriced.
    Allow,
}

/// A budget as configured (`{ max_usd, period, alert_at }`). Parsed and validated here;
/// enforced from issue #5 on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub max_usd: f64,
    pub period: BudgetPeriod,
    #[serde(default = "default_alert_at")]
    pub alert_at: f64,
}

/// How often a budget starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Month,
    Total,
}

impl BudgetSpec {
    /// `max_usd` positive (at most a billion), `alert_at` within 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_usd > 0.0 && self.max_usd <= 1e9) {
            return Err("max_usd must be positive".to_owned());
        }
        if !(0.0..=1.0).contains(&self.alert_at) {
            return Err("alert_at must be between 0 and 1".to_owned());
        }
        Ok(())
    }
}

fn default_alert_at() -> f64 {
    0.8
}

/// User JWTs: how to verify them and what their users may do.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `TOLLGATE_JWT_SECRET` (environment only): HS256.
    pub secret: Option<SecretString>,
    /// `TOLLGATE_JWT_PUBLIC_KEY` / `jwt.public_key`: a PEM file (RS256 or ES256).
    pub public_key: Option<PathBuf>,
    /// `TOLLGATE_JWT_JWKS_URL` / `jwt.jwks_url`: keys by `kid` (RS256 or ES256).
    pub jwks_url: Option<Url>,
    /// `TOLLGATE_JWT_ISSUER`: checked when set.
    pub issuer: Option<String>,
    /// `TOLLGATE_JWT_AUDIENCE`: checked when set.
    pub audience: Option<String>,
    /// A JWKS is refetched on an unknown `kid` at most once per this interval.
    pub jwks_min_refresh: Duration,
    /// Longer tokens are refused before any parsing.
    pub max_token_bytes: usize,
    /// Models JWT users may use; empty means every model.
    pub models: Vec<String>,
    /// Route families allowed although unchecked (`pipeline::authorize`).
    pub routes: Vec<String>,
    /// Their rules; the `[limits]` rules when not given.
    pub rules: Option<Vec<Rule>>,
    /// Their budget, per user (enforced from issue #5).
    pub budget: Option<BudgetSpec>,
}

/// Checks `REDIS_URL` and reads the TLS files that go with it: a file named for a plain-TCP
/// URL is an error (the operator believes TLS is on), and so is half a client certificate.
fn read_redis_tls(s: &mut Sources, url: Option<&SecretString>) -> TlsFiles {
    let mut file = |path: &str, env: &str| {
        let value: Option<String> = s.optional(path, Some(env));
        value.map(std::path::PathBuf::from)
    };
    let files = TlsFiles {
        ca: file("limits.redis_ca_file", "TOLLGATE_REDIS_CA_FILE"),
        client_cert: file("limits.redis_cert_file", "TOLLGATE_REDIS_CERT_FILE"),
        client_key: file("limits.redis_key_file", "TOLLGATE_REDIS_KEY_FILE"),
    };
    let named = [
        ("limits.redis_ca_file", "TOLLGATE_REDIS_CA_FILE", &files.ca),
        (
            "limits.redis_cert_file",
            "TOLLGATE_REDIS_CERT_FILE",
            &files.client_cert,
        ),
        (
            "limits.redis_key_file",
            "TOLLGATE_REDIS_KEY_FILE",
            &files.client_key,
        ),
    ];
    let tls = match url.map(|u| Endpoint::parse(secrecy::ExposeSecret::expose_secret(u))) {
        Some(Ok(endpoint)) => endpoint.tls,
        Some(Err(problem)) => {
            s.invalid("limits.redis_url", Some("REDIS_URL"), problem);
            return files;
        }
        None => false,
    };
    for (path, env, value) in named {
        match value {
            Some(_) if !tls => s.invalid(
                path,
                Some(env),
                "only used with TLS: REDIS_URL must be rediss://, rediss+cluster:// or rediss+sentinel://",
            ),
            Some(file) if !file.is_file() => {
                s.invalid(path, Some(env), format!("no file at {}", file.display()))
            }
            _ => {}
        }
    }
    if files.client_cert.is_some() != files.client_key.is_some() {
        s.invalid(
            "limits.redis_cert_file",
            Some("TOLLGATE_REDIS_CERT_FILE"),
            "a client certificate needs both TOLLGATE_REDIS_CERT_FILE and TOLLGATE_REDIS_KEY_FILE",
        );
    }
    files
}

impl JwtConfig {
    /// Whether any verification method is configured (JWTs are refused otherwise).
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.public_key.is_some() || self.jwks_url.is_some()
    }
}

/// Callers without credentials, for internal services on a private network (seed 003).
#[derive(Debug, Clone)]
pub struct AnonymousConfig {
    pub enabled: bool,
    pub models: Vec<String>,
    pub routes: Vec<String>,
    pub rules: Option<Vec<Rule>>,
    pub budget: Option<BudgetSpec>,
}

impl LimitsConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let backend_timeout = s
            .get(
                "limits.backend_timeout_ms",
                None,
                Millis(Duration::from_millis(50)),
            )
            .0;
        if backend_timeout.is_zero() {
            s.invalid("limits.backend_timeout_ms", None, "must be greater than 0");
        }
        let on_backend_error = match s
            .get("limits.on_backend_error", None, "fail_open".to_owned())
            .as_str()
        {
            "fail_open" => BackendErrorPolicy::FailOpen,
            "fail_closed" => BackendErrorPolicy::FailClosed,
            other => {
                s.invalid(
                    "limits.on_backend_error",
                    None,
                    format!("expected fail_open or fail_closed, got {other:?}"),
                );
                BackendErrorPolicy::FailOpen
            }
        };
        let redis_url: Option<SecretString> = s.optional("limits.redis_url", Some("REDIS_URL"));
        if let Some(plain) = redis_url
            .as_ref()
            .and_then(|url| super::store::without_credentials(url.expose_secret()))
        {
            s.show("limits.redis_url", plain);
        }
        let redis_tls = read_redis_tls(s, redis_url.as_ref());
        // Before `budgets.on_backend_error` existed, budgets followed the limits' policy: an
        // operator who chose `fail_closed` there keeps it for budgets unless they say otherwise.
        let inherited = match on_backend_error {
            BackendErrorPolicy::FailClosed => "fail_closed",
            BackendErrorPolicy::FailOpen => "local",
        };
        let budget_on_backend_error = match s
            .get("budgets.on_backend_error", None, inherited.to_owned())
            .as_str()
        {
            "local" => BudgetBackendPolicy::Local,
            "fail_open" => BudgetBackendPolicy::FailOpen,
            "fail_closed" => BudgetBackendPolicy::FailClosed,
            other => {
                s.invalid(
                    "budgets.on_backend_error",
                    None,
                    format!("expected local, fail_open or fail_closed, got {other:?}"),
                );
                BudgetBackendPolicy::Local
            }
        };
        // A webhook URL is a credential (whoever holds it can post to the channel): read as a
        // secret, so a mistyped one is never echoed and `config check` masks it.
        let webhook: Option<SecretString> =
            s.optional("budgets.alert_webhook", Some("TOLLGATE_ALERT_WEBHOOK"));
        let alert_webhook = webhook.and_then(|url| {
            let parsed = <Url as super::source::Setting>::from_env(url.expose_secret());
            if parsed.is_none() {
                s.invalid(
                    "budgets.alert_webhook",
                    Some("TOLLGATE_ALERT_WEBHOOK"),
                    "expected an http(s) URL",
                );
            }
            parsed
        });
        let alert_format = match s
            .get(
                "budgets.alert_format",
                Some("TOLLGATE_ALERT_FORMAT"),
                "json".to_owned(),
            )
            .as_str()
        {
            "json" => AlertFormat::Json,
            "slack" => AlertFormat::Slack,
            other => {
                s.invalid(
                    "budgets.alert_format",
                    Some("TOLLGATE_ALERT_FORMAT"),
                    format!("expected json or slack, got {other:?}"),
                );
                AlertFormat::Json
            }
        };
        let budget_outage_share = s.get("budgets.outage_share", None, 0.5f64);
        if !(0.0..=1.0).contains(&budget_outage_share) {
            s.invalid("budgets.outage_share", None, "must be from 0 to 1");
        }
        Self {
            budget_on_backend_error,
            budget_outage_share,
            enabled: s.get("limits.enabled", None, true),
            rules: read_rules(s, "limits.rules").unwrap_or_else(rules::default_rules),
            backend_timeout,
            on_backend_error,
            redis_url,
            redis_tls,
            redis_prefix: s.get("limits.redis_prefix", None, "tollgate".to_owned()),
            default_completion_tokens: s.get("limits.default_completion_tokens", None, 1024u64),
            alert_webhook,
            alert_format,
            unpriced: match s
                .get("budgets.unpriced", None, "refuse".to_owned())
                .as_str()
            {
                "refuse" => UnpricedPolicy::Refuse,
                "allow" => UnpricedPolicy::Allow,
                other => {
                    s.invalid(
                        "budgets.unpriced",
                        None,
                        format!("expected refuse or allow, got {other:?}"),
                    );
                    UnpricedPolicy::Refuse
                }
            },
        }
    }
}

impl JwtConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let secret: Option<SecretString> = s.optional_env("TOLLGATE_JWT_SECRET");
        if secret
            .as_ref()
            .is_some_and(|v| secrecy::ExposeSecret::expose_secret(v).len() < 32)
        {
            s.invalid(
                "jwt.secret",
                Some("TOLLGATE_JWT_SECRET"),
                "must be at least 32 bytes (HS256 needs a 256-bit secret)",
            );
        }
        let public_key: Option<String> =
            s.optional("jwt.public_key", Some("TOLLGATE_JWT_PUBLIC_KEY"));
        let public_key = public_key.map(PathBuf::from);
        if let Some(path) = &public_key
            && !path.is_file()
        {
            s.invalid(
                "jwt.public_key",
                Some("TOLLGATE_JWT_PUBLIC_KEY"),
                format!("no PEM file at {}", path.display()),
            );
        }
        Self {
            secret,
            public_key,
            jwks_url: s.optional("jwt.jwks_url", Some("TOLLGATE_JWT_JWKS_URL")),
            issuer: s.optional("jwt.issuer", Some("TOLLGATE_JWT_ISSUER")),
            audience: s.optional("jwt.audience", Some("TOLLGATE_JWT_AUDIENCE")),
            jwks_min_refresh: s
                .get(
                    "jwt.jwks_min_refresh_ms",
                    None,
                    Millis(Duration::from_secs(60)),
                )
                .0,
            max_token_bytes: s.get("jwt.max_token_bytes", None, 8192usize),
            models: s.get("jwt.models", None, Vec::new()),
            routes: read_route_families(s, "jwt.routes"),
            rules: read_rules(s, "jwt.rules"),
            budget: read_budget(s, "jwt.budget"),
        }
    }
}

impl AnonymousConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        Self {
            enabled: s.get("anonymous.enabled", None, false),
            models: s.get("anonymous.models", None, Vec::new()),
            routes: read_route_families(s, "anonymous.routes"),
            rules: read_rules(s, "anonymous.rules"),
            budget: read_budget(s, "anonymous.budget"),
        }
    }
}

/// Route families at `path`, each one OpenAI's (`batches`, `fine_tuning`, ...).
fn read_route_families(s: &mut Sources<'_>, path: &str) -> Vec<String> {
    let routes: Vec<String> = s.get(path, None, Vec::new());
    if let Err(why) = crate::openai::operations::check_families(&routes) {
        s.invalid(path, None, why);
    }
    routes
}

/// An array of rule tables at `path`, each validated; `None` when absent.
fn read_rules(s: &mut Sources<'_>, path: &str) -> Option<Vec<Rule>> {
    let value = s.raw(path)?;
    let Some(items) = value.as_array() else {
        s.invalid_in_file(path, "expected an array of rule tables ([[limits.rules]])");
        return Some(Vec::new());
    };
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item
            .clone()
            .try_into::<RuleSpec>()
            .map_err(|e| e.message().to_owned())
            .and_then(|spec| spec.validate())
        {
            Ok(rule) => rules.push(rule),
            Err(message) => s.invalid_in_file(&format!("{path}[{i}]"), message.trim()),
        }
    }
    Some(rules)
}

fn read_budget(s: &mut Sources<'_>, path: &str) -> Option<BudgetSpec> {
    let value = s.raw(path)?;
    match value.try_into::<BudgetSpec>() {
        Ok(budget) => match budget.validate() {
            Ok(()) => Some(budget),
            Err(message) => {
                s.invalid_in_file(path, message);
                None
            }
        },
        Err(error) => {
            s.invalid_in_file(path, error.message().trim());
            None
        }
    }
}
