//! `GET /rate-limit/status`: the caller's buckets (rule, limit, remaining, reset), read
//! without consuming anything.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::pipeline::{Principal, rate_limit};
use crate::state::AppState;

/// The handler.
pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    match rate_limit::status(&state, &principal).await {
        Ok(buckets) => Json(json!({
            "client_ip": principal.client_ip.to_string(),
            "key_id": principal.key_id(),
            "user": principal.user,
            "limits_enabled": state.config.limits.enabled,
            "buckets": buckets,
        }))
        .into_response(),
        Err(error) => error.into_response(),
    }
}
