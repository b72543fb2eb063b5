//! `GET /v1/models` and `GET /v1/models/{id}`: only the models the key may use, aliases
//! included (answered by Tollgate itself).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::openai::path::ApiPath;
use crate::pipeline::{self, CallBody, ModelCall, ModelRoute, Principal};
use crate::state::AppState;

/// The list, filtered to the key's models.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    pipeline::list_models(&state, &principal, headers)
        .await
        .into_response()
}

/// One model; 403 when the key may not use it.
pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = principal.authorize_model(&id) {
        return error.into_response();
    }
    if state.config.models.contains_key(&id) {
        return axum::Json(pipeline::alias_object(&id)).into_response();
    }
    // The id is one segment under `models/`, built and checked as every upstream path is.
    let Ok(upstream_path) = ApiPath::with_segment("models", &id) else {
        return GatewayError::NotFound {
            method: Method::GET.to_string(),
            path: format!("/v1/models/{id}"),
        }
        .into_response();
    };
    let operation = state
        .operations
        .find(&Method::GET, &upstream_path)
        .ok()
        .cloned();
    let call = ModelCall {
        route: ModelRoute::Passthrough,
        method: Method::GET,
        upstream_path,
        query: None,
        headers,
        body: CallBody::Empty,
        operation,
    };
    pipeline::handle(&state, &principal, call).await
}
