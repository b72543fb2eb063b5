//! `GET /v1/models` and `GET /v1/models/{id}`: only the models the key may use, aliases
//! included (answered by Tollgate itself).

use axum::Extension;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::openai::path::ApiPath;
use crate::pipeline::{self, CallBody, ModelCall, ModelRoute, Principal, respond};
use crate::records::LeftBehind;
use crate::state::AppState;
use crate::upstream::{self, OutgoingBody, UpstreamRequest};

/// The list, filtered to the key's models.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    list_models(&state, &principal, headers)
        .await
        .into_response()
}

/// One model; 403 when the key may not use it.
pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    left_behind: Option<Extension<LeftBehind>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = principal.authorize_model(&id) {
        return error.into_response();
    }
    if state.config.models.contains_key(&id) {
        return axum::Json(alias_object(&id)).into_response();
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
        left_behind: left_behind.map(|Extension(slot)| slot),
    };
    pipeline::handle(&state, &principal, call).await
}

/// How an alias appears in `/v1/models`: OpenAI's model object, owned by Tollgate.
fn alias_object(alias: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut object = serde_json::Map::new();
    object.insert("id".to_owned(), alias.into());
    object.insert("object".to_owned(), "model".into());
    object.insert("created".to_owned(), 0.into());
    object.insert("owned_by".to_owned(), "tollgate".into());
    object
}

/// `GET /v1/models`: the upstream's list, narrowed to the models the key may use, with the
/// configured aliases.
async fn list_models(
    state: &AppState,
    principal: &Principal,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct ModelList {
        object: String,
        data: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let started = Instant::now();
    let upstream = state
        .upstream
        .send(UpstreamRequest {
            endpoint: upstream::DEFAULT_ENDPOINT,
            method: Method::GET,
            path: ApiPath::fixed("models"),
            query: None,
            headers,
            body: OutgoingBody::Empty,
            stream: false,
            model: None,
        })
        .await?;
    let upstream_headers = upstream.headers().clone();
    let body = state.upstream.read_body(upstream, started).await?;
    let mut list: ModelList =
        serde_json::from_slice(&body).map_err(|e| GatewayError::UpstreamFailed {
            detail: format!("unreadable model list: {e}"),
        })?;
    list.data.retain(|model| {
        model
            .get("id")
            .and_then(|id| id.as_str())
            .is_some_and(|id| principal.may_use(id) && !state.config.models.contains_key(id))
    });
    // Aliases are models too, as far as callers can tell.
    list.data.extend(
        state
            .config
            .models
            .keys()
            .filter(|alias| principal.may_use(alias))
            .map(|alias| alias_object(alias)),
    );
    let body = serde_json::to_vec(&list).map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(respond::json(
        StatusCode::OK,
        &upstream_headers,
        Bytes::from(body),
    ))
}
