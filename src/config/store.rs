//! `[database]`, `REDIS_URL`, `[keys]` and the admin token: where state lives.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::source::{Millis, Sources};

/// Which database engine `DATABASE_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseEngine {
    Sqlite,
    Postgres,
}

/// The key store / usage log database.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: `sqlite://path` (created if missing) or `postgres://...`. May carry a
    /// password, so it is a secret; `config check` shows it with the password masked.
    pub url: SecretString,
    /// Chosen from the URL's scheme.
    pub engine: DatabaseEngine,
    /// Pool size.
    pub max_connections: u32,
    /// `database.acquire_timeout_ms`: how long a call waits for a pooled connection (or a new
    /// one) before it fails; a database that refuses or drops connections costs no longer.
    pub acquire_timeout: Duration,
    /// `database.statement_timeout_ms`: PostgreSQL's `statement_timeout` for every session, so
    /// no query holds a connection for ever.
    pub statement_timeout: Duration,
}

/// Gateway keys and the admin API.
#[derive(Debug, Clone)]
pub struct KeysConfig {
    /// How long a key lookup is cached in memory. Bounded by 1 s so that a revoked key stops
    /// working everywhere within a second.
    pub cache_ttl: Duration,
    /// `TOLLGATE_ADMIN_TOKEN`; the admin API is off without it.
    pub admin_token: Option<SecretString>,
}

impl DatabaseConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let url: SecretString = s.get(
            "database.url",
            Some("DATABASE_URL"),
            SecretString::from("sqlite://tollgate.db".to_owned()),
        );
        if let Some(plain) = without_credentials(url.expose_secret()) {
            s.show("database.url", plain);
        }
        let engine = match url
            .expose_secret()
            .split_once(':')
            .map(|(scheme, _)| scheme)
        {
            Some("sqlite") => DatabaseEngine::Sqlite,
            Some("postgres" | "postgresql") => DatabaseEngine::Postgres,
            _ => {
                s.invalid(
                    "database.url",
                    Some("DATABASE_URL"),
                    "expected sqlite://PATH or postgres://...",
                );
                DatabaseEngine::Sqlite
            }
        };
        let max_connections = s.get("database.max_connections", None, 10u32);
        if max_connections == 0 {
            s.invalid("database.max_connections", None, "must be greater than 0");
        }
        let acquire_timeout = s
            .get(
                "database.acquire_timeout_ms",
                None,
                Millis(Duration::from_millis(2000)),
            )
            .0;
        let statement_timeout = s
            .get(
                "database.statement_timeout_ms",
                None,
                Millis(Duration::from_millis(15_000)),
            )
            .0;
        for (name, value) in [
            ("database.acquire_timeout_ms", acquire_timeout),
            ("database.statement_timeout_ms", statement_timeout),
        ] {
            if value.is_zero() {
                s.invalid(name, None, "must be greater than 0");
            }
        }
        Self {
            url,
            engine,
            max_connections,
            acquire_timeout,
            statement_timeout,
        }
    }
}

impl KeysConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let cache_ttl = s
            .get(
                "keys.cache_ttl_ms",
                None,
                Millis(Duration::from_millis(1000)),
            )
            .0;
        if cache_ttl > Duration::from_secs(1) {
            s.invalid(
                "keys.cache_ttl_ms",
                None,
                "at most 1000: revocations must take effect within a second",
            );
        }
        let admin_token: Option<SecretString> =
            s.optional("keys.admin_token", Some("TOLLGATE_ADMIN_TOKEN"));
        if admin_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < 16)
        {
            s.invalid(
                "keys.admin_token",
                Some("TOLLGATE_ADMIN_TOKEN"),
                "must be at least 16 characters",
            );
        }
        Self {
            cache_ttl,
            admin_token,
        }
    }
}

/// `url` itself when it carries no credential (no password, no `password=` parameter), so that
/// `config check` can print it instead of a mask.
pub fn without_credentials(url: &str) -> Option<&str> {
    // Not through `Url`: `redis+cluster://h1:6379,h2:6379` is not one it parses.
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before.split('/').next().unwrap_or_default(), query),
        None => (rest.split('/').next().unwrap_or_default(), ""),
    };
    let secret_parameter = query
        .split('&')
        .any(|pair| pair.to_ascii_lowercase().contains("password"));
    let password = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    (!password && !secret_parameter).then_some(url)
}

/// Shows a database URL with its password replaced.
pub fn mask_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("********"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
