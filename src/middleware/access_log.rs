//! One log line per request, and the request counters.
//!
//! The line is written when the response head is ready (for a stream: when it starts), with
//! the stable fields `request.id`, `http.method`, `http.path` (the matched route, never the raw
//! query), `http.status`, `duration_ms`, and — when the pipeline knows them — `key.id`,
//! `model` and `error.kind`. Never a header value, a prompt or a completion.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use super::request_id::RequestId;
use crate::error::ErrorKind;

/// What the pipeline learned about a request, for the log line (a response extension).
#[derive(Debug, Clone, Default)]
pub struct LogFields {
    pub key_id: Option<String>,
    pub model: Option<String>,
}

/// The layer.
pub async fn log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let response = next.run(request).await;
    let duration = started.elapsed();
    let status = response.status().as_u16();
    let fields = response.extensions().get::<LogFields>();
    let error_kind = response.extensions().get::<ErrorKind>().map(|k| k.0);
    tracing::info!(
        request.id = %request_id,
        http.method = %method,
        http.path = %route,
        http.status = status,
        duration_ms = duration.as_secs_f64() * 1000.0,
        key.id = fields.and_then(|f| f.key_id.as_deref()),
        model = fields.and_then(|f| f.model.as_deref()),
        error.kind = error_kind,
        "request"
    );
    crate::metrics::record_request(&route, status, duration);
    response
}
