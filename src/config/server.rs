//! `[server]`: where and how the gateway listens.

use std::net::IpAddr;
use std::time::Duration;

use super::source::{Millis, Sources};
use crate::client_ip::TrustedProxies;

/// Listening address, HTTP limits and shutdown behaviour.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Interface to bind (`TOLLGATE_HOST`).
    pub host: IpAddr,
    /// Port to bind (`PORT`); 0 picks a free one.
    pub port: u16,
    /// Largest JSON body accepted (413 beyond).
    pub body_limit_bytes: usize,
    /// Largest streamed upload (multipart) forwarded on passthrough routes.
    pub upload_limit_bytes: usize,
    /// A client must finish sending request headers within this time.
    pub header_read_timeout: Duration,
    /// A whole JSON body must arrive within this; an upload gets it as grace before its pace
    /// is held to `upload_min_bytes_per_sec` (408 either way).
    pub body_read_timeout: Duration,
    /// The slowest average pace an upload may keep after its grace.
    pub upload_min_bytes_per_sec: u64,
    /// A connection (HTTP/1.1 keep-alive or HTTP/2) with no request in flight for this long is
    /// closed; before its first request, `header_read_timeout` applies instead.
    pub idle_timeout: Duration,
    /// Most connections open at once from one client address (trusted proxies are exempt:
    /// they carry many clients). Further connections are closed at once.
    pub max_connections_per_ip: usize,
    /// On SIGTERM/SIGINT, in-flight requests and streams get this long to finish.
    pub shutdown_grace: Duration,
    /// Browser origins allowed by CORS (`TOLLGATE_CORS_ORIGINS`); empty means no CORS at all.
    pub cors_origins: Vec<String>,
    /// Whether `/metrics` is served without a key (it carries no secrets, only counts).
    pub metrics_public: bool,
    /// `TOLLGATE_TRUSTED_PROXIES`: load balancers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl ServerConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let host = s.get::<String>("server.host", Some("TOLLGATE_HOST"), "127.0.0.1".to_owned());
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if host == "localhost" => IpAddr::from([127, 0, 0, 1]),
            Err(_) => {
                s.invalid(
                    "server.host",
                    Some("TOLLGATE_HOST"),
                    format!("expected an IP address, got {host:?}"),
                );
                IpAddr::from([127, 0, 0, 1])
            }
        };
        let body_limit_bytes = s.get("server.body_limit_bytes", None, 16 * 1024 * 1024usize);
        if body_limit_bytes == 0 {
            s.invalid("server.body_limit_bytes", None, "must be greater than 0");
        }
        let cors_origins: Vec<String> = s.get(
            "server.cors_origins",
            Some("TOLLGATE_CORS_ORIGINS"),
            Vec::new(),
        );
        for origin in &cors_origins {
            if let Err(why) = validate_origin(origin) {
                s.invalid(
                    "server.cors_origins",
                    Some("TOLLGATE_CORS_ORIGINS"),
                    format!("{origin:?}: {why}"),
                );
            }
        }
        let header_read_timeout = s
            .get(
                "server.header_read_timeout_ms",
                None,
                Millis(Duration::from_secs(10)),
            )
            .0;
        if header_read_timeout.is_zero() {
            s.invalid(
                "server.header_read_timeout_ms",
                None,
                "must be greater than 0",
            );
        }
        let proxies: Vec<String> = s.get(
            "server.trusted_proxies",
            Some("TOLLGATE_TRUSTED_PROXIES"),
            Vec::new(),
        );
        let trusted_proxies = TrustedProxies::parse(&proxies).unwrap_or_else(|why| {
            s.invalid(
                "server.trusted_proxies",
                Some("TOLLGATE_TRUSTED_PROXIES"),
                why,
            );
            TrustedProxies::default()
        });
        let positive_ms = |s: &mut Sources<'_>, path: &str, default: Duration| {
            let value = s.get(path, None, Millis(default)).0;
            if value.is_zero() {
                s.invalid(path, None, "must be greater than 0");
            }
            value
        };
        let body_read_timeout =
            positive_ms(s, "server.body_read_timeout_ms", Duration::from_secs(30));
        let idle_timeout = positive_ms(s, "server.idle_timeout_ms", Duration::from_secs(75));
        let count = |s: &mut Sources<'_>, path: &str, default: u64| {
            let value: u64 = s.get(path, None, default);
            if value == 0 {
                s.invalid(path, None, "must be greater than 0");
            }
            value
        };
        let upload_min_bytes_per_sec = count(s, "server.upload_min_bytes_per_sec", 8_192);
        let max_connections_per_ip =
            usize::try_from(count(s, "server.max_connections_per_ip", 512)).unwrap_or(usize::MAX);
        Self {
            host,
            trusted_proxies,
            body_read_timeout,
            upload_min_bytes_per_sec,
            idle_timeout,
            max_connections_per_ip,
            port: s.get("server.port", Some("PORT"), 3006),
            body_limit_bytes,
            upload_limit_bytes: s.get("server.upload_limit_bytes", None, 512 * 1024 * 1024usize),
            header_read_timeout,
            shutdown_grace: s
                .get(
                    "server.shutdown_grace_ms",
                    None,
                    Millis(Duration::from_secs(30)),
                )
                .0,
            cors_origins,
            metrics_public: s.get("server.metrics_public", None, true),
        }
    }
}

/// An allowed origin is exactly `scheme://host[:port]`: never `*` (we allow credentials), never
/// a path.
fn validate_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Err("a wildcard origin is not allowed; list the origins");
    }
    let url =
        url::Url::parse(origin).map_err(|_| "expected an origin like https://app.example.com")?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http(s) origin");
    }
    if url.origin().ascii_serialization() != origin.trim_end_matches('/') || url.path() != "/" {
        return Err("expected only scheme, host and port, without a path");
    }
    Ok(())
}
