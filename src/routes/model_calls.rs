//! `POST /v1/chat/completions`, `/v1/embeddings`, `/v1/images/generations`, `/v1/responses`:
//! a JSON body through the pipeline.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use crate::extract::JsonBody;
use crate::pipeline::{self, CallBody, ModelCall, ModelRoute, Principal};
use crate::state::AppState;

async fn call(
    state: AppState,
    principal: Principal,
    route: ModelRoute,
    path: &str,
    headers: HeaderMap,
    body: JsonBody,
) -> Response {
    let call = ModelCall {
        route,
        method: Method::POST,
        upstream_path: path.to_owned(),
        query: None,
        headers,
        body: CallBody::Json(body.0),
    };
    pipeline::handle(&state, &principal, call).await
}

/// Chat, plain and streamed.
pub async fn chat(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: JsonBody,
) -> Response {
    call(
        state,
        p,
        ModelRoute::Chat,
        "chat/completions",
        headers,
        body,
    )
    .await
}

/// Embeddings.
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: JsonBody,
) -> Response {
    call(
        state,
        p,
        ModelRoute::Embeddings,
        "embeddings",
        headers,
        body,
    )
    .await
}

/// Image generation.
pub async fn images(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: JsonBody,
) -> Response {
    call(
        state,
        p,
        ModelRoute::Images,
        "images/generations",
        headers,
        body,
    )
    .await
}

/// The Responses API, plain and streamed.
pub async fn responses(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: JsonBody,
) -> Response {
    call(state, p, ModelRoute::Responses, "responses", headers, body).await
}
