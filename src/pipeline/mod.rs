//! The request pipeline: every stage of a model call, in order, in one place.
//!
//! ```text
//! authenticate ─► validate ─► authorize ─► rate limits ─► forward ─► respond ─► settle
//!   (layer)          (3)         (4)           (5)           (6)        (7)        (8)
//! ```
//!
//! Authentication runs as a layer over every non-open route (`routes::router`), so a route
//! cannot forget it; the handler receives the [`Principal`]. Each later stage is a plain
//! function in its own file, called here top to bottom. Validation comes before the limits
//! because token rules need the parsed prompt and the body's `user`. Budgets, the cache and
//! audit records slot in as they are built (issues #5, #6).

pub mod authenticate;
pub mod forward;
pub mod rate_limit;
pub mod respond;
pub mod stream;
pub mod validate;

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::limiter::rules::RouteClass;
use crate::middleware::access_log::LogFields;
use crate::openai::requests::RequestFacts;
use crate::openai::usage;
use crate::state::AppState;
pub use authenticate::{Caller, Principal};
use forward::{OutgoingBody, UpstreamRequest};
use rate_limit::Admission;
pub use validate::ModelRoute;

/// A request body as the route received it.
pub enum CallBody {
    /// No body (GET, DELETE, bodyless POST).
    Empty,
    /// A JSON body, read whole (and so retryable and inspectable).
    Json(Bytes),
    /// Anything else (multipart uploads): streamed through, never buffered.
    Streamed(Body),
}

/// One call to a model route.
pub struct ModelCall {
    pub route: ModelRoute,
    pub method: Method,
    /// Path under the upstream's base URL (`chat/completions`).
    pub upstream_path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: CallBody,
}

/// Runs `call` through every stage and always produces a response (errors rendered).
pub async fn handle(state: &AppState, principal: &Principal, call: ModelCall) -> Response {
    let mut fields = LogFields {
        key_id: principal.key_id().map(str::to_owned),
        model: None,
    };
    let mut response = match run(state, principal, call, &mut fields).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response.extensions_mut().insert(fields);
    response
}

async fn run(
    state: &AppState,
    principal: &Principal,
    call: ModelCall,
    fields: &mut LogFields,
) -> Result<Response, GatewayError> {
    let started = Instant::now();

    // 3. validate: read the fields we need, check them, prepare the upstream body.
    let (facts, body, raw) = match call.body {
        CallBody::Json(bytes) => {
            let facts = validate::facts(call.route, &bytes)?;
            let body = validate::upstream_body(call.route, &facts, bytes.clone())?;
            (facts, OutgoingBody::Buffered(body), Some(bytes))
        }
        CallBody::Empty => (RequestFacts::default(), OutgoingBody::Empty, None),
        CallBody::Streamed(body) => (
            RequestFacts::default(),
            OutgoingBody::Streamed(reqwest::Body::wrap_stream(body.into_data_stream())),
            None,
        ),
    };
    fields.model.clone_from(&facts.model);

    // 4. authorize: the caller may use this model.
    if let Some(model) = &facts.model {
        principal.authorize_model(model)?;
    }

    // 5. rate limits: every bucket that applies, charged at once; tokens estimated if needed.
    let principal = with_body_user(principal, &facts);
    let principal = principal.as_ref();
    let default_completion = state.config.limits.default_completion_tokens;
    let route = call.route;
    let admission = rate_limit::admit(state, principal, route.class(), || {
        raw.as_deref().map_or(0, |body| {
            crate::tokens::estimate(route, body, default_completion)
        })
    })
    .await?;

    // 6. forward: pooled, retried, timed.
    let sent = state
        .upstream
        .send(UpstreamRequest {
            method: call.method,
            path: call.upstream_path,
            query: call.query,
            headers: call.headers,
            body,
            stream: facts.stream,
        })
        .await;
    let upstream = match sent {
        Ok(upstream) => upstream,
        Err(error) => {
            settle_later(state, admission, None);
            return Err(error);
        }
    };

    // 7. respond: relay a stream event by event, or read and return a JSON answer.
    let status = upstream.status();
    let headers = upstream.headers().clone();
    let mut response = if facts.stream && respond::is_event_stream(&headers) {
        let options = stream::RelayOptions {
            strip_usage_chunk: route == ModelRoute::Chat && !facts.include_usage,
        };
        let on_done = {
            let state = state.clone();
            let admission = admission.clone();
            move |outcome: stream::StreamOutcome| {
                tracing::debug!(route = route.label(), end = ?outcome.end, events = outcome.events, "stream finished");
                // 8. settle: the stream's own usage (a broken stream's estimate arrives with #5).
                settle_later(&state, admission, outcome.usage.map(|u| u.total_tokens()));
            }
        };
        let body = stream::relay(
            state,
            upstream,
            started + state.upstream.first_byte_timeout,
            options,
            on_done,
        );
        let mut response = respond::from_upstream(status, &headers, body);
        respond::mark_event_stream(&mut response);
        response
    } else if route == ModelRoute::Passthrough && !respond::is_json(&headers) {
        // Files and audio: streamed back as they come.
        settle_later(state, admission.clone(), None);
        respond::from_upstream(status, &headers, Body::from_stream(upstream.bytes_stream()))
    } else {
        let body = match state.upstream.read_body(upstream, started).await {
            Ok(body) => body,
            Err(error) => {
                settle_later(state, admission, None);
                return Err(error);
            }
        };
        // 8. settle: the usage the upstream reported.
        settle_later(
            state,
            admission.clone(),
            usage::from_json(&body).map(|u| u.total_tokens()),
        );
        respond::json(status, &headers, body)
    };
    if let Some(admission) = &admission {
        admission.write_headers(response.headers_mut());
    }
    Ok(response)
}

/// A key caller's end user is `x-user-id`, else the body's `user`; other callers keep theirs.
/// Borrows the principal unless the body's user must be filled in.
fn with_body_user<'a>(principal: &'a Principal, facts: &RequestFacts) -> Cow<'a, Principal> {
    match (&principal.caller, &principal.user, &facts.user) {
        (Caller::Key(_), None, Some(user)) => {
            let mut owned = principal.clone();
            owned.user = Some(user.clone());
            Cow::Owned(owned)
        }
        _ => Cow::Borrowed(principal),
    }
}

/// Settles token reservations after the response, off the request path.
fn settle_later(state: &AppState, admission: Option<Admission>, used_tokens: Option<u64>) {
    if let Some(admission) = admission.filter(Admission::has_tokens) {
        let state = state.clone();
        state
            .clone()
            .tasks
            .spawn(async move { admission.settle(&state, used_tokens).await });
    }
}

/// A non-streaming chat completion for routes that reshape the answer (`/api/ai/generate`):
/// the same stages, returning the response headers (rate limits) and the upstream's JSON.
pub async fn complete_chat(
    state: &AppState,
    principal: &Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(HeaderMap, Bytes), GatewayError> {
    let call = ModelCall {
        route: ModelRoute::Chat,
        method: Method::POST,
        upstream_path: "chat/completions".to_owned(),
        query: None,
        headers,
        body: CallBody::Json(body),
    };
    let mut fields = LogFields::default();
    let response = run(state, principal, call, &mut fields).await?;
    let (parts, body) = response.into_parts();
    let bytes =
        axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|e| GatewayError::UpstreamFailed {
                detail: format!("reading the completion: {e}"),
            })?;
    Ok((parts.headers, bytes))
}

impl ModelRoute {
    /// The route class limit rules are written against; other routes match only `*` rules.
    pub fn class(self) -> RouteClass {
        match self {
            Self::Chat => RouteClass::Chat,
            Self::Embeddings => RouteClass::Embeddings,
            Self::Images => RouteClass::Images,
            Self::Responses => RouteClass::Responses,
            Self::Passthrough => RouteClass::Any,
        }
    }
}

/// `GET /v1/models`: the upstream's list, narrowed to the models the key may use.
pub async fn list_models(
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
            method: Method::GET,
            path: "models".to_owned(),
            query: None,
            headers,
            body: OutgoingBody::Empty,
            stream: false,
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
            .is_some_and(|id| principal.may_use(id))
    });
    let body = serde_json::to_vec(&list).map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(respond::json(
        StatusCode::OK,
        &upstream_headers,
        Bytes::from(body),
    ))
}
