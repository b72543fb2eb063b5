//! Tollgate: a fast, secure gateway for the OpenAI API.
//!
//! # Layout
//!
//! - [`cli`]: one file per subcommand (`serve`, `demo`, `keys`, `config check`, `mock-upstream`).
//! - [`config`]: defaults < `tollgate.toml` < environment, validated in one step.
//! - [`state`]: `AppState`, built once and shared.
//! - [`server`]: the HTTP layer stack and the accept loop with graceful shutdown.
//! - [`middleware`]: our own layers (request id, access log, content type, security headers).
//! - [`routes`]: thin handlers, and the one place that lists the open (unauthenticated) routes.
//! - [`pipeline`]: a model call's stages, in order: authenticate, validate, forward, respond.
//! - [`upstream`]: the upstream client: endpoints, model routing, retries, fallbacks, the
//!   header allowlist and key scrubbing.
//! - [`store`]: the `KeyStore` trait with SQLite and PostgreSQL engines.
//! - [`limiter`]: the `RateLimiter` trait (GCRA), memory and Redis engines, limit rules.
//! - [`cache`]: the response cache (`CacheStore`: memory and Redis engines; single-flight misses).
//! - [`content`]: content rules (deny regexes, redaction detectors, prompt length).
//! - [`dashboard`]: the admin dashboard's page, script and style, served from the binary.
//! - [`client_ip`]: the client address behind trusted proxies.
//! - [`jwt`]: user JWT verification (HS256, RS256/ES256 by PEM or JWKS).
//! - [`identity`]: the authenticated caller (`Principal`), read by every later layer.
//! - [`keys`]: key generation and hashing. [`extract`]: body reading. [`error`]: the error table.
//! - [`openai`]: the few wire fields we read; SSE parsing; usage.
//! - [`mock_upstream`]: the fake OpenAI used by tests, benchmarks and the demo.
//! - [`batches`]: batches checked against their input file when created, and their output
//!   priced and recorded when they end. [`reconcile`]: spend beside OpenAI's own bill.

pub mod admin;
pub mod batches;
pub mod budget;
pub mod cache;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod content;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod identity;
pub mod jwt;
pub mod key_cache;
pub mod keys;
pub mod limiter;
pub mod log_throttle;
pub mod metrics;
pub mod middleware;
pub mod mock_upstream;
pub mod openai;
pub mod otel;
pub mod pipeline;
pub mod pricing;
pub mod realtime;
pub mod reconcile;
pub mod records;
pub mod redis_link;
pub mod reload;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;
pub mod strict_json;
pub mod telemetry;
pub mod tokens;
pub mod upstream;
