//! Live reload: `SIGHUP` or `POST /admin/reload` re-reads `tollgate.toml` and, if it is valid
//! and changes nothing that needs a restart, builds a new state from it for the requests that
//! come after; requests in flight finish on the state they started with (each holds its own).
//!
//! What reloads: limit rules, models and upstreams (and `[upstream]`), prices, content rules,
//! the cache's lifetime, JWT and anonymous settings, the admin token. What needs a restart, and
//! so refuses the reload with the settings named: `[server]`, `[database]`, `[log]`,
//! `[records]`, the Redis connection (`limits.redis_url`, its TLS files, `redis_prefix`,
//! `backend_timeout_ms`), the key cache's lifetime, the in-memory cache's size, and the budget
//! backend settings and alert webhook. A refused reload keeps the running configuration, logs
//! why and counts `tollgate_config_reloads_total{outcome="error"}`.
//!
//! The environment is the one the process started with (a running process's environment does
//! not change); only the file is read again. Shared state — keys, limiter and budget counters,
//! the cache's store, the audit queue, background tasks — carries over untouched.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use secrecy::ExposeSecret;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError, Env};
use crate::state::{AppState, StateError};

/// Where the running configuration came from, so it can be read again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// `--config`, or `None` for `TOLLGATE_CONFIG` / `./tollgate.toml` as at start.
    pub path: Option<PathBuf>,
    /// The environment the process started with.
    pub env: Env,
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this gateway was not started from a configuration file")]
    NoSource,
    #[error("{0}")]
    Invalid(ConfigError),
    #[error(
        "these settings changed and need a restart: {}; nothing was reloaded",
        .0.join(", ")
    )]
    NeedsRestart(Vec<&'static str>),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("the reload did not finish")]
    Interrupted,
}

/// One reload asked for, with where to send the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// How a handler asks the server to reload, shared by every state a reload builds.
#[derive(Debug)]
pub struct Reloads {
    sender: mpsc::Sender<ReloadRequest>,
    inbox: Mutex<Option<mpsc::Receiver<ReloadRequest>>>,
    source: OnceLock<ConfigSource>,
}

impl Default for Reloads {
    fn default() -> Self {
        let (sender, inbox) = mpsc::channel(8);
        Self {
            sender,
            inbox: Mutex::new(Some(inbox)),
            source: OnceLock::new(),
        }
    }
}

impl Reloads {
    /// Records where the configuration came from (`tollgate serve` does, at start).
    pub fn set_source(&self, source: ConfigSource) {
        let _ = self.source.set(source);
    }

    /// The configuration's origin, if the gateway was started from one.
    pub fn source(&self) -> Option<&ConfigSource> {
        self.source.get()
    }

    /// The requests' receiving end, taken once by the server.
    pub fn take_inbox(&self) -> Option<mpsc::Receiver<ReloadRequest>> {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Asks the server to reload and waits for the outcome.
    pub async fn request(&self) -> Result<(), String> {
        let (answer, outcome) = oneshot::channel();
        self.sender
            .send(answer)
            .await
            .map_err(|_| ReloadError::Interrupted.to_string())?;
        outcome
            .await
            .unwrap_or_else(|_| Err(ReloadError::Interrupted.to_string()))
    }
}

/// Reads the configuration again and builds the state it describes beside `current`, or says
/// why not. Blocking (it reads a file and may build the tokenizer): run it off the runtime.
pub fn prepare(current: &AppState) -> Result<AppState, ReloadError> {
    let source = current.reload.source().ok_or(ReloadError::NoSource)?;
    let config = Config::load(source.path.as_deref(), &source.env).map_err(ReloadError::Invalid)?;
    let restart = restart_needed(&current.config, &config);
    if !restart.is_empty() {
        return Err(ReloadError::NeedsRestart(restart));
    }
    Ok(current.reloaded(config)?)
}

/// The settings that differ between `old` and `new` and cannot change without a restart.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let secret =
        |s: &Option<secrecy::SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    let (a, b) = (&old.limits, &new.limits);
    let differs = |section: &str| old.effective.get(section) != new.effective.get(section);
    [
        ("[server]", differs("server")),
        (
            "[database]",
            old.database.url.expose_secret() != new.database.url.expose_secret()
                || differs("database"),
        ),
        (
            "[log] and [traces]",
            differs("log")
                || differs("traces")
                || old.log.traces.header_pairs() != new.log.traces.header_pairs(),
        ),
        ("[records]", differs("records")),
        (
            "keys.cache_ttl_ms",
            old.keys.cache_ttl != new.keys.cache_ttl,
        ),
        (
            "limits.redis_url",
            secret(&a.redis_url) != secret(&b.redis_url),
        ),
        ("limits.redis_*_file", a.redis_tls != b.redis_tls),
        ("limits.redis_prefix", a.redis_prefix != b.redis_prefix),
        (
            "limits.backend_timeout_ms",
            a.backend_timeout != b.backend_timeout,
        ),
        (
            "budgets.alert_webhook and alert_format",
            a.alert_webhook != b.alert_webhook || a.alert_format != b.alert_format,
        ),
        (
            "budgets.on_backend_error",
            a.budget_on_backend_error != b.budget_on_backend_error,
        ),
        (
            "budgets.outage_share",
            a.budget_outage_share != b.budget_outage_share,
        ),
        (
            "cache.max_bytes",
            old.cache.max_bytes != new.cache.max_bytes,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}
