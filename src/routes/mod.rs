//! The route table. Handlers are thin: extract, call the pipeline, shape the answer.
//!
//! Every route needs a gateway key except the open list below, which is visible here in one
//! place: `/health`, `/health/ready`, and `/metrics` (unless `server.metrics_public = false`).
//! Each model route answers with and without the `/v1` prefix, as the seeds name them;
//! `/v1/realtime` is a WebSocket session (`realtime`); any other `/v1/*` path goes to
//! `passthrough`, which forwards only OpenAI's operations (`openai::operations`) along a
//! checked path (`openai::path`).

mod fallback;
mod generate;
mod health;
mod metrics;
mod model_calls;
mod models;
mod passthrough;
mod rate_limit_status;

use axum::Router;
use axum::routing::{any, get, post};

use crate::pipeline::ModelRoute;
use crate::pipeline::authenticate::require_key;
use crate::state::AppState;

/// All routes, with authentication applied to all but the open list.
pub fn router(state: AppState) -> Router {
    let auth = axum::middleware::from_fn_with_state(state.clone(), require_key);

    let mut open = Router::new()
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready));
    let mut keyed = Router::new();
    for prefix in ["/v1", ""] {
        let model_routes = [
            ("chat/completions", ModelRoute::Chat),
            ("embeddings", ModelRoute::Embeddings),
            ("images/generations", ModelRoute::Images),
            ("responses", ModelRoute::Responses),
        ];
        for (path, route) in model_routes {
            let method_router = model_calls::route(route, path);
            // Other methods on these paths (GET /v1/chat/completions lists stored
            // completions) are OpenAI operations too: the allowlist decides.
            let method_router = if prefix.is_empty() {
                method_router
            } else {
                method_router.fallback(passthrough::forward)
            };
            keyed = keyed.route(&format!("{prefix}/{path}"), method_router);
        }
        let show = get(models::show);
        // Other methods on a model (DELETE of a fine-tuned one) likewise.
        let show = if prefix.is_empty() {
            show
        } else {
            show.fallback(passthrough::forward)
        };
        keyed = keyed
            .route(&format!("{prefix}/models"), get(models::list))
            .route(&format!("{prefix}/models/{{id}}"), show)
            .route(&format!("{prefix}/realtime"), get(crate::realtime::open));
    }
    keyed = keyed
        .route("/v1/{*path}", any(passthrough::forward))
        .route("/rate-limit/status", get(rate_limit_status::show));
    if state.config.server.metrics_public {
        open = open.route("/metrics", get(metrics::render));
    } else {
        keyed = keyed.route("/metrics", get(metrics::render));
    }
    // The seeds' prompt API renders its errors in the seeds' shape, auth failures included,
    // so its own layer sits outside authentication.
    let generate = Router::new()
        .route("/api/ai/generate", post(generate::generate))
        .route_layer(auth.clone())
        .layer(axum::middleware::from_fn(generate::seed_error_shape));

    open.merge(keyed.route_layer(auth))
        .merge(generate)
        .merge(crate::admin::router(&state))
        .merge(crate::dashboard::router(&state))
        .fallback(fallback::not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        .with_state(state)
}
