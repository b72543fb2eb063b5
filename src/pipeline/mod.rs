//! The request pipeline: every stage of a model call, in order, in one place.
//!
//! ```text
//! authenticate ─► route ─► validate ─► authorize ─► rate limits ─► batch ─► content ─► budgets ─► cache ─► forward ─► respond ─► account
//!   (layer)      (handler)                                                                                                        │
//!                                                  audit layer: the record, from the response's CallFacts ◄─────────────────────┘
//! ```
//!
//! Authentication runs as a layer over every non-open route (`routes::router`), so a route
//! cannot forget it; the handler receives the [`Principal`], and for the passthrough route it
//! has already checked the path and matched an allowlisted operation (`routes::passthrough`).
//! The rest is [`handle`]: one [`Call`] owns the request's state, each stage is a function in
//! its own file taking `&mut Call`, and [`Call::finish`] is the one exit, which settles or
//! releases what the call holds ([`Reservations`]; its `Drop` releases whatever an early
//! return or a departed caller left behind). Validation comes before the limits because token
//! rules need the parsed prompt and the body's `user`. A multipart form to a model route starts
//! upstream during validation with its end held back (`upload`), so the checks that follow run
//! before it can complete. A batch's creation is checked against its input file once the caller
//! is within its rate limits (`batch`): its model there, its cost by the budgets stage.
//! A cache hit skips forward and respond and costs nothing; a stream is
//! accounted and settled when it ends.

pub mod account;
pub mod authenticate;
pub mod authorize;
pub mod batch;
pub mod budget;
pub mod cache;
mod call;
pub mod content;
pub mod forward;
pub mod rate_limit;
pub mod reservations;
pub mod respond;
pub mod stream;
pub mod upload;
pub mod validate;

use crate::otel::stage;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::error::GatewayError;
pub use crate::identity::{Caller, Principal};
pub use crate::openai::ModelRoute;
use crate::openai::path::ApiPath;
use crate::records::{CallFacts, LeftBehind};
use crate::state::AppState;
pub use call::{Call, CallBody, JsonRequest, ModelCall};
pub use reservations::{Reservations, Spend};

/// Runs `request` through every stage and always produces a response (errors rendered). The
/// response carries what the audit layer records: [`CallFacts`], and for a stream the
/// `PendingFacts` its end fulfils.
pub async fn handle(state: &AppState, principal: &Principal, request: ModelCall) -> Response {
    let mut call = Call::new(state, principal, request);
    let result = run(&mut call, state).await;
    let (result, facts) = call.finish(result);
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(facts);
    response
}

/// The stages, top to bottom. Any `?` is safe: `finish` (or `Drop`) settles what is held.
/// The stages that wait on a backend are spans of the request's trace when traces are on
/// (each upstream attempt is one too, inside `forward`).
async fn run(call: &mut Call, state: &AppState) -> Result<Response, GatewayError> {
    validate::validate(call, state).await?;
    authorize::authorize(call, state)?;
    stage("tollgate.rate_limit", rate_limit::limit(call, state)).await?;
    batch::check(call, state).await?;
    content::apply(call, state)?;
    stage("tollgate.budget", budget::reserve(call, state)).await?;
    if let Some(hit) = stage("tollgate.cache", cache::lookup(call, state)).await {
        return Ok(hit);
    }
    stage("tollgate.moderation", content::moderate(call, state)).await?;
    let forwarded = forward::forward(call, state).await?;
    respond::respond(call, state, forwarded).await
}

/// A non-streaming chat completion for routes that reshape the answer (`/api/ai/generate`):
/// the same stages, returning the response headers (rate limits, cost), the upstream's JSON,
/// and the facts for the audit record.
pub async fn complete_chat(
    state: &AppState,
    principal: &Principal,
    (headers, left_behind): (HeaderMap, Option<LeftBehind>),
    body: Bytes,
) -> Result<(HeaderMap, Bytes, CallFacts), GatewayError> {
    let request = ModelCall {
        route: ModelRoute::Chat,
        method: Method::POST,
        upstream_path: ApiPath::fixed("chat/completions"),
        query: None,
        headers,
        body: CallBody::Json(body),
        operation: None,
        left_behind,
    };
    let mut call = Call::new(state, principal, request);
    let result = run(&mut call, state).await;
    let (result, facts) = call.finish(result);
    let (parts, body) = result?.into_parts();
    let bytes =
        axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|e| GatewayError::UpstreamFailed {
                detail: format!("reading the completion: {e}"),
            })?;
    Ok((parts.headers, bytes, facts))
}

#[cfg(test)]
mod tests;
