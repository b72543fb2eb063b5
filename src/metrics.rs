//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`.
//!
//! Labels stay low-cardinality: route templates, status classes, model names, error kinds;
//! never key ids or users (the usage API answers per-key questions).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process (tests build many gateways in one process) and
/// returns the handle that renders it.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0,
                ])
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("tollgate_gateway_overhead_seconds".to_owned()),
                    &[
                        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
                    ],
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            // Histograms buffer every sample until upkeep folds them into buckets; without it a
            // gateway that nobody scrapes grows by every request (measured: ~20 bytes each).
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .clone()
}

/// The labels of one finished request head. Each is bounded: route templates, status
/// classes, configured or priced model names (else `other`), cache states, error kinds.
#[derive(Debug)]
pub struct RequestLabels<'a> {
    pub route: &'a str,
    pub status: u16,
    pub model: Option<Arc<str>>,
    pub cache: Option<&'static str>,
    pub error: Option<&'static str>,
}

/// What each metric means (`# HELP` lines) and what kind it is.
const CATALOGUE: [(&str, Kind, &str); 23] = [
    (
        "tollgate_log_lines_dropped_total",
        Kind::Counter,
        "Log lines dropped because the log writer could not keep up.",
    ),
    (
        "tollgate_requests_total",
        Kind::Counter,
        "Requests by route, status class, model, cache status and error kind.",
    ),
    (
        "tollgate_request_duration_seconds",
        Kind::Histogram,
        "Time to the response head, by route.",
    ),
    (
        "tollgate_upstream_duration_seconds",
        Kind::Histogram,
        "Time waiting for the upstream (a stream: for its head), by route.",
    ),
    (
        "tollgate_gateway_overhead_seconds",
        Kind::Histogram,
        "Time the gateway added: total minus upstream wait, by route.",
    ),
    (
        "tollgate_upstream_attempts_total",
        Kind::Counter,
        "Upstream attempts by outcome (ok, retry, error).",
    ),
    (
        "tollgate_upstream_fallbacks_total",
        Kind::Counter,
        "Calls given up on an upstream to try the next target.",
    ),
    (
        "tollgate_pool_served_total",
        Kind::Counter,
        "Calls a pool's deployment answered, by pool (alias) and deployment (upstream/model).",
    ),
    (
        "tollgate_pool_cooldowns_total",
        Kind::Counter,
        "Deployments put to cool down after a 429, 5xx, 401/403 or an unreachable upstream.",
    ),
    (
        "tollgate_tokens_total",
        Kind::Counter,
        "Tokens by model and class (prompt, completion, cached, reasoning).",
    ),
    (
        "tollgate_cost_nanodollars_total",
        Kind::Counter,
        "Priced cost in nano-dollars (10⁻⁹ USD), by model.",
    ),
    (
        "tollgate_unpriced_requests_total",
        Kind::Counter,
        "Answered requests whose model has no price.",
    ),
    (
        "tollgate_rate_limited_total",
        Kind::Counter,
        "Requests refused by a limit rule, by scope and unit.",
    ),
    (
        "tollgate_budget_refusals_total",
        Kind::Counter,
        "Requests refused because a budget would go over.",
    ),
    (
        "tollgate_budget_alerts_total",
        Kind::Counter,
        "Budget alert crossings, by scope.",
    ),
    (
        "tollgate_content_refusals_total",
        Kind::Counter,
        "Requests refused by a content rule.",
    ),
    (
        "tollgate_backend_errors_total",
        Kind::Counter,
        "Failures of a shared backend (limiter, budgets, cache, database).",
    ),
    (
        "tollgate_connections_closed_total",
        Kind::Counter,
        "Client connections closed by the gateway, by reason (per_ip_cap, idle).",
    ),
    (
        "tollgate_audit_queue_depth",
        Kind::Gauge,
        "Audit records waiting for the writer.",
    ),
    (
        "tollgate_audit_records_written_total",
        Kind::Counter,
        "Audit records written to the database.",
    ),
    (
        "tollgate_audit_records_spilled_total",
        Kind::Counter,
        "Audit records written to the spill file while the database was down.",
    ),
    (
        "tollgate_audit_spill_file_bytes",
        Kind::Gauge,
        "Size of the spill file.",
    ),
    (
        "tollgate_audit_write_failures_total",
        Kind::Counter,
        "Audit batches the database refused (write) or nothing took (lost).",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Registers every metric's help text, and starts the label-less ones at zero so that
/// dashboards and alerts see them before the first event.
fn describe() {
    for (name, kind, help) in CATALOGUE {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for name in [
        "tollgate_budget_refusals_total",
        "tollgate_content_refusals_total",
        "tollgate_audit_records_written_total",
        "tollgate_audit_records_spilled_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!("tollgate_audit_queue_depth").set(0.0);
    metrics::gauge!("tollgate_audit_spill_file_bytes").set(0.0);
}

/// Counts a finished request head, its latency, and — when it waited for an upstream — the
/// upstream's share and the gateway's own overhead (total minus upstream wait).
pub fn record_request(labels: &RequestLabels<'_>, duration: Duration, upstream: Option<Duration>) {
    let class = match labels.status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let route = labels.route.to_owned();
    metrics::counter!(
        "tollgate_requests_total",
        "route" => route.clone(),
        "status" => class,
        "model" => labels.model.clone().map_or(SharedString::const_str("none"), SharedString::from),
        "cache" => labels.cache.unwrap_or("none"),
        "error" => labels.error.unwrap_or("none"),
    )
    .increment(1);
    metrics::histogram!("tollgate_request_duration_seconds", "route" => route.clone())
        .record(duration.as_secs_f64());
    if let Some(upstream) = upstream {
        metrics::histogram!("tollgate_upstream_duration_seconds", "route" => route.clone())
            .record(upstream.as_secs_f64());
        metrics::histogram!("tollgate_gateway_overhead_seconds", "route" => route)
            .record(duration.saturating_sub(upstream).as_secs_f64());
    }
}

/// Counts an upstream attempt's outcome (`ok`, `retry`, `error`).
pub fn record_upstream_attempt(outcome: &'static str) {
    metrics::counter!("tollgate_upstream_attempts_total", "outcome" => outcome).increment(1);
}

/// The audit queue's depth after the writer took a batch.
pub fn set_audit_queue_depth(depth: usize) {
    metrics::gauge!("tollgate_audit_queue_depth").set(depth as f64);
}

/// Counts records written to the database.
pub fn record_audit_written(records: usize) {
    metrics::counter!("tollgate_audit_records_written_total").increment(records as u64);
}

/// Counts records spilled to the file, and sets the file's size.
pub fn record_audit_spilled(records: usize, file_bytes: u64) {
    metrics::counter!("tollgate_audit_records_spilled_total").increment(records as u64);
    metrics::gauge!("tollgate_audit_spill_file_bytes").set(file_bytes as f64);
}

/// Counts audit write failures (`write`: the database refused, the batch was spilled;
/// `lost`: neither database nor spill file took it).
pub fn record_audit_failure(kind: &'static str) {
    metrics::counter!("tollgate_audit_write_failures_total", "kind" => kind).increment(1);
}

/// Counts budget alerts by scope (`key`, `key_user`, `jwt_user`, `anonymous_user`).
pub fn record_budget_alert(scope: &'static str) {
    metrics::counter!("tollgate_budget_alerts_total", "scope" => scope).increment(1);
}

/// Counts requests refused because a budget would go over.
pub fn record_budget_refusal() {
    metrics::counter!("tollgate_budget_refusals_total").increment(1);
}

/// Counts answered requests whose model has no price (their cost is unknown, not zero).
pub fn record_unpriced(route: &'static str) {
    metrics::counter!("tollgate_unpriced_requests_total", "route" => route).increment(1);
}

/// Counts failures of a shared backend (`cache`, `limiter`, `budgets`); the request went on
/// without it or applied its failure policy.
pub fn record_backend_error(backend: &'static str) {
    metrics::counter!("tollgate_backend_errors_total", "backend" => backend).increment(1);
}

/// The counter of calls a pool's `deployment` answered, registered once per pool member (the
/// recorder must be installed first). Both labels come from the configuration.
pub fn pool_served(pool: &str, deployment: &str) -> metrics::Counter {
    metrics::counter!("tollgate_pool_served_total", "pool" => pool.to_owned(), "deployment" => deployment.to_owned())
}

/// The counter of a deployment's cooldowns, registered once per pool member.
pub fn pool_cooldowns(deployment: &str) -> metrics::Counter {
    metrics::counter!("tollgate_pool_cooldowns_total", "deployment" => deployment.to_owned())
}

/// Counts configuration reloads by outcome (`ok`, or `error`: the running one stayed).
pub fn record_reload(ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("tollgate_config_reloads_total", "outcome" => outcome).increment(1);
}

/// Counts client connections the gateway closed: `per_ip_cap` (refused at accept) or `idle`.
pub fn record_connection_closed(reason: &'static str) {
    metrics::counter!("tollgate_connections_closed_total", "reason" => reason).increment(1);
}

/// Counts answers given up on one upstream to try the next target (`upstream` is a configured
/// name, so the label stays bounded).
pub fn record_fallback(upstream: &str) {
    metrics::counter!("tollgate_upstream_fallbacks_total", "upstream" => upstream.to_owned())
        .increment(1);
}

/// Counts requests refused by a content rule (deny, length, moderation).
pub fn record_content_refusal() {
    metrics::counter!("tollgate_content_refusals_total").increment(1);
}

/// The model names a metric label may carry, built once: priced models (by their table name,
/// so a dated snapshot counts as its base model), aliases and models an `[[upstreams]]` serves.
/// Anything else is `other`, so callers cannot mint label values.
pub struct ModelLabels {
    known: HashMap<String, Arc<str>>,
    prices: Arc<crate::pricing::PriceTable>,
    other: Arc<str>,
}

impl ModelLabels {
    pub fn new(prices: Arc<crate::pricing::PriceTable>, config: &crate::config::Config) -> Self {
        let known = prices
            .models()
            .map(|(name, _)| name.to_owned())
            .chain(config.models.keys().cloned())
            .chain(
                config
                    .upstreams
                    .iter()
                    .flat_map(|u| u.models.iter().cloned()),
            )
            .map(|name| {
                let label = Arc::from(name.as_str());
                (name, label)
            })
            .collect();
        Self {
            known,
            prices,
            other: Arc::from("other"),
        }
    }

    /// The label for `model`: a shared string, so no allocation per request.
    pub fn label(&self, model: &str) -> Arc<str> {
        self.known
            .get(model)
            .or_else(|| self.known.get(self.prices.canonical_name(model)?))
            .unwrap_or(&self.other)
            .clone()
    }
}

/// Counts tokens by class and cost by model once a call's usage is known, or the call as
/// unpriced when its model has no price.
pub fn record_usage(
    route: &'static str,
    model: Option<Arc<str>>,
    usage: &crate::openai::usage::Usage,
    cost: Option<crate::pricing::Nanos>,
) {
    let model = model.map_or(SharedString::const_str("none"), SharedString::from);
    for (class, tokens) in [
        ("prompt", usage.prompt_tokens),
        ("completion", usage.completion_tokens),
        ("cached", usage.cached_tokens),
        ("reasoning", usage.reasoning_tokens),
    ] {
        if tokens > 0 {
            metrics::counter!("tollgate_tokens_total", "model" => model.clone(), "class" => class)
                .increment(tokens);
        }
    }
    match cost {
        Some(cost) => metrics::counter!("tollgate_cost_nanodollars_total", "model" => model)
            .increment(u64::try_from(cost).unwrap_or(0)),
        None => record_unpriced(route),
    }
}

/// Log lines the writer dropped so far (the writer keeps the count; this publishes it).
pub fn record_log_lines_dropped(total: u64) {
    metrics::counter!("tollgate_log_lines_dropped_total").absolute(total);
}
