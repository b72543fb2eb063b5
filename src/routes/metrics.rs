//! `GET /metrics` in Prometheus' text format.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::state::AppState;

/// Renders the process's metrics.
pub async fn render(State(state): State<AppState>) -> Response {
    crate::metrics::record_log_lines_dropped(crate::telemetry::dropped_lines());
    match &state.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            handle.render(),
        )
            .into_response(),
        None => GatewayError::Internal("metrics recorder not installed".to_owned()).into_response(),
    }
}
