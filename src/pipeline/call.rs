//! One call's state, owned in one place as it goes through the stages (pingora's per-request
//! context): who asks, what was asked (read once), where it goes, what it holds, and what its
//! record will say.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use bytes::Bytes;
use tokio::time::Instant;

use super::cache::CacheState;
use super::content::PendingModeration;
use super::reservations::{Reservations, Spend};
use super::upload::InFlight;
use crate::error::GatewayError;
use crate::identity::Principal;
use crate::openai::ModelRoute;
use crate::openai::operations::Operation;
use crate::openai::path::ApiPath;
use crate::openai::requests::RequestFacts;
use crate::records::CallFacts;
use crate::state::AppState;
use crate::tokens::Estimate;
use crate::upstream::{OutgoingBody, Target};

/// A request body as the route received it.
pub enum CallBody {
    /// No body (GET, DELETE, bodyless POST).
    Empty,
    /// A JSON body, read whole (and so retryable and inspectable).
    Json(Bytes),
    /// Anything else (multipart uploads): streamed through, never buffered.
    Streamed(Body),
}

/// What a route hands the pipeline: one call to a model route or an OpenAI operation.
pub struct ModelCall {
    pub route: ModelRoute,
    pub method: Method,
    /// Path under the upstream's base URL (`chat/completions`), checked segment by segment.
    pub upstream_path: ApiPath,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: CallBody,
    /// The passthrough operation (its governance and family); `None` for Tollgate's own model
    /// routes, which always name their model.
    pub operation: Option<Arc<Operation>>,
}

/// The caller's JSON body, parsed into a tree at most once (by the first stage that reads
/// prompt text: token estimates, content rules, the cache key), with its token estimate
/// computed at most once.
pub struct JsonRequest {
    /// The caller's bytes, as received.
    pub raw: Bytes,
    tree: Option<serde_json::Value>,
    estimate: Option<Estimate>,
}

impl JsonRequest {
    fn new(raw: Bytes) -> Self {
        Self {
            raw,
            tree: None,
            estimate: None,
        }
    }

    /// The body as a JSON tree (`Null` if it is not JSON, which validation already refused).
    pub fn tree(&mut self) -> &mut serde_json::Value {
        self.tree
            .get_or_insert_with(|| serde_json::from_slice(&self.raw).unwrap_or_default())
    }

    /// The prompt counted with the model's tokenizer and the completion it allows.
    pub fn estimate(&mut self, route: ModelRoute) -> Estimate {
        if let Some(estimate) = self.estimate {
            return estimate;
        }
        let estimate = crate::tokens::estimate_value(route, self.tree());
        self.estimate = Some(estimate);
        estimate
    }
}

/// One call in flight. Stages take `&mut Call`; `finish` turns it into the response.
pub struct Call {
    /// The caller, with the body's `user` as its end user once validation has read it.
    pub principal: Principal,
    pub route: ModelRoute,
    pub operation: Option<Arc<Operation>>,
    pub method: Method,
    pub upstream_path: ApiPath,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body as received, until validation takes it.
    pub received: Option<CallBody>,
    /// The fields later stages read.
    pub request: RequestFacts,
    /// The caller's JSON body, when it sent one.
    pub json: Option<JsonRequest>,
    /// What goes upstream: the caller's bytes, or a rewrite of one field.
    pub body: OutgoingBody,
    /// A form already on its way upstream with its end held back.
    pub upload: Option<InFlight>,
    /// A form to a model route whose fields could not be read.
    pub form_unread: bool,
    /// Where the model is served: the primary, then fallbacks.
    pub targets: Arc<[Target]>,
    pub reservations: Reservations,
    pub cache: CacheState,
    pub moderation: Option<PendingModeration>,
    /// What the answer used (tokens) and cost, set by the stage that read it; `finish` settles
    /// it. Unset, the reservations settle as they do when dropped.
    pub spent: Option<(Option<u64>, Spend)>,
    /// What the audit record will say.
    pub facts: CallFacts,
    pub started: Instant,
}

impl Call {
    /// A call from `principal` as the route described it.
    pub fn new(state: &AppState, principal: &Principal, call: ModelCall) -> Self {
        Self {
            facts: CallFacts::of(principal),
            principal: principal.clone(),
            route: call.route,
            operation: call.operation,
            method: call.method,
            upstream_path: call.upstream_path,
            query: call.query,
            headers: call.headers,
            received: Some(call.body),
            request: RequestFacts::default(),
            json: None,
            body: OutgoingBody::Empty,
            upload: None,
            form_unread: false,
            targets: Arc::from([]),
            reservations: Reservations::new(state),
            cache: CacheState::default(),
            moderation: None,
            spent: None,
            started: Instant::now(),
        }
    }

    /// Keeps the caller's JSON body for the stages that read it.
    pub fn keep_json(&mut self, raw: Bytes) {
        self.json = Some(JsonRequest::new(raw));
    }

    /// The request's token estimate (0 prompt tokens for a call without a JSON body).
    pub fn estimate(&mut self) -> Option<Estimate> {
        let route = self.route;
        self.json.as_mut().map(|json| json.estimate(route))
    }

    /// The one exit of every call: settles what the answer used (or, for an error, releases
    /// what was held; a timed-out call may have run upstream and keeps its worst case) and
    /// writes the rate-limit headers. Returns the result with the facts for the record (the
    /// log line and metrics read them; a stream's record waits for its end, which settles what
    /// the stream took with it).
    pub fn finish(
        mut self,
        result: Result<Response, GatewayError>,
    ) -> (Result<Response, GatewayError>, CallFacts) {
        let result = match result {
            Ok(mut response) => {
                self.reservations.write_headers(response.headers_mut());
                if let Some((tokens, spend)) = self.spent.take() {
                    self.reservations.settle(tokens, spend);
                }
                Ok(response)
            }
            Err(error) => {
                let spend = match error {
                    GatewayError::UpstreamTimeout => Spend::Unknown,
                    _ => Spend::Cost(0),
                };
                self.reservations.settle(None, spend);
                Err(error)
            }
        };
        (result, std::mem::take(&mut self.facts))
    }
}
