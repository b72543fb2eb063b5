//! The request pipeline: every stage of a model call, in order, in one place.
//!
//! ```text
//! authenticate ─► validate ─► authorize model ─► forward ─► respond (JSON | SSE relay)
//!   (layer)        (3)            (4)              (5)          (6)
//! ```
//!
//! Authentication runs as a layer over every non-open route (`routes::router`), so a route
//! cannot forget it; the handler receives the [`Principal`]. Each later stage is a plain
//! function in its own file, called here top to bottom. Rate limits, budgets, the cache,
//! pricing and audit records slot in between these stages as they are built (issues #4–#6).

pub mod authenticate;
pub mod forward;
pub mod respond;
pub mod stream;
pub mod validate;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::middleware::access_log::LogFields;
use crate::openai::requests::RequestFacts;
use crate::state::AppState;
pub use authenticate::Principal;
use forward::{OutgoingBody, UpstreamRequest};
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
        key_id: Some(principal.key.id.clone()),
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
    let (facts, body) = match call.body {
        CallBody::Json(bytes) => {
            let facts = validate::facts(call.route, &bytes)?;
            let body = validate::upstream_body(call.route, &facts, bytes)?;
            (facts, OutgoingBody::Buffered(body))
        }
        CallBody::Empty => (RequestFacts::default(), OutgoingBody::Empty),
        CallBody::Streamed(body) => (
            RequestFacts::default(),
            OutgoingBody::Streamed(reqwest::Body::wrap_stream(body.into_data_stream())),
        ),
    };
    fields.model.clone_from(&facts.model);

    // 4. authorize: the key may use this model.
    if let Some(model) = &facts.model {
        principal.authorize_model(model)?;
    }

    // 5. forward: pooled, retried, timed.
    let upstream = state
        .upstream
        .send(UpstreamRequest {
            method: call.method,
            path: call.upstream_path,
            query: call.query,
            headers: call.headers,
            body,
            stream: facts.stream,
        })
        .await?;

    // 6. respond: relay a stream event by event, or read and return a JSON answer.
    let status = upstream.status();
    let headers = upstream.headers().clone();
    if facts.stream && respond::is_event_stream(&headers) {
        let options = stream::RelayOptions {
            strip_usage_chunk: call.route == ModelRoute::Chat && !facts.include_usage,
        };
        let route = call.route;
        let body = stream::relay(
            state,
            upstream,
            started + state.upstream.first_byte_timeout,
            options,
            move |outcome| {
                tracing::debug!(route = route.label(), end = ?outcome.end, events = outcome.events, "stream finished");
            },
        );
        let mut response = respond::from_upstream(status, &headers, body);
        respond::mark_event_stream(&mut response);
        return Ok(response);
    }
    if call.route == ModelRoute::Passthrough && !respond::is_json(&headers) {
        // Files and audio: streamed back as they come.
        return Ok(respond::from_upstream(
            status,
            &headers,
            Body::from_stream(upstream.bytes_stream()),
        ));
    }
    let body = state.upstream.read_body(upstream, started).await?;
    Ok(respond::json(status, &headers, body))
}

/// A non-streaming chat completion for routes that reshape the answer (`/api/ai/generate`):
/// the same stages, returning the upstream's JSON.
pub async fn complete_chat(
    state: &AppState,
    principal: &Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Bytes, GatewayError> {
    let started = Instant::now();
    let facts = validate::facts(ModelRoute::Chat, &body)?;
    if let Some(model) = &facts.model {
        principal.authorize_model(model)?;
    }
    let upstream = state
        .upstream
        .send(UpstreamRequest {
            method: Method::POST,
            path: "chat/completions".to_owned(),
            query: None,
            headers,
            body: OutgoingBody::Buffered(body),
            stream: false,
        })
        .await?;
    state.upstream.read_body(upstream, started).await
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
            .is_some_and(|id| principal.key.allows_model(id))
    });
    let body = serde_json::to_vec(&list).map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(respond::json(
        StatusCode::OK,
        &upstream_headers,
        Bytes::from(body),
    ))
}
