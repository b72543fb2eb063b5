//! `/health` (liveness) and `/health/ready` (readiness), both open.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::config::BackendErrorPolicy;
use crate::state::AppState;

/// The process is up and serving.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to serve traffic: the key store answers, an upstream is configured, and Redis (when
/// configured) answers. A Redis that does not answer makes the replica unready only when the
/// limits refuse without it (`limits.on_backend_error = "fail_closed"`): otherwise the
/// replica still serves, and taking every replica out of the load balancer at once would
/// turn a Redis outage into a gateway outage.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let store = match tokio::time::timeout(Duration::from_secs(2), state.keys.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: key store unavailable");
            "unavailable"
        }
        Err(_) => "timeout",
    };
    let mut checks = json!({ "store": store, "upstream": "configured" });
    let mut ready = store == "ok";
    if let Some(redis) = &state.redis_health {
        let answered = redis.query::<String>(&redis::cmd("PING")).await.is_ok();
        checks["redis"] = json!(if answered { "ok" } else { "unavailable" });
        ready &= answered || state.config.limits.on_backend_error != BackendErrorPolicy::FailClosed;
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": checks,
        })),
    )
}
