//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`.
//!
//! Labels stay low-cardinality: route templates, status classes, model names, error kinds;
//! never key ids or users (the usage API answers per-key questions).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
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

/// Counts a finished request head and its latency.
pub fn record_request(route: &str, status: u16, duration: Duration) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("tollgate_requests_total", "route" => route.to_owned(), "status" => class)
        .increment(1);
    metrics::histogram!("tollgate_request_duration_seconds", "route" => route.to_owned())
        .record(duration.as_secs_f64());
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
