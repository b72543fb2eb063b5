//! `POST /v1/chat/completions`, `/v1/embeddings`, `/v1/images/generations`, `/v1/responses`:
//! a JSON body through the pipeline. One handler serves them all; the route says which.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::routing::{MethodRouter, post};

use crate::extract::JsonBody;
use crate::openai::path::ApiPath;
use crate::pipeline::{self, CallBody, ModelCall, ModelRoute, Principal};
use crate::records::LeftBehind;
use crate::state::AppState;

/// The POST route for `route`, forwarding to the upstream's `upstream_path`.
pub fn route(route: ModelRoute, upstream_path: &'static str) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              Extension(principal): Extension<Principal>,
              left_behind: Option<Extension<LeftBehind>>,
              headers: HeaderMap,
              body: JsonBody| async move {
            let call = ModelCall {
                route,
                method: Method::POST,
                upstream_path: ApiPath::fixed(upstream_path),
                query: None,
                headers,
                body: CallBody::Json(body.0),
                operation: None,
                left_behind: left_behind.map(|Extension(slot)| slot),
            };
            pipeline::handle(&state, &principal, call).await
        },
    )
}
