//! `/health` (liveness) and `/health/ready` (readiness), both open.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::config::{BackendErrorPolicy, BudgetBackendPolicy};
use crate::state::AppState;

/// The process is up and serving.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to serve traffic, with the state of what it depends on: the key store, the upstream,
/// and Redis when configured. An outage the replica serves through leaves it ready, reported
/// as `degraded`: a database that does not answer (keys seen before are served from their last
/// known state, records wait in the spill file), or a Redis whose failure policy serves. Every
/// replica shares those backends, so taking them all out of the load balancer at once would
/// turn a backend outage into a gateway outage. A Redis the limits or budgets cannot do
/// without (`on_backend_error = "fail_closed"`) makes the replica unready.
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
    let mut degraded = store != "ok";
    let mut ready = true;
    if let Some(redis) = &state.redis_health {
        let answered = redis.query::<String>(&redis::cmd("PING")).await.is_ok();
        checks["redis"] = json!(if answered { "ok" } else { "unavailable" });
        degraded |= !answered;
        let needed = state.config.limits.on_backend_error == BackendErrorPolicy::FailClosed
            || state.config.limits.budget_on_backend_error == BudgetBackendPolicy::FailClosed;
        ready &= answered || !needed;
    }
    let (status, word) = match (ready, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    (status, Json(json!({ "status": word, "checks": checks })))
}
