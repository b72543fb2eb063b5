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
use crate::openai::usage::Usage;
use crate::pricing::{Asked, Demand, PriceTable, ServiceTier};
use crate::records::{CallFacts, LeftBehind, Unanswered};
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
    /// Where the call's facts go if its caller leaves (the audit layer's slot).
    pub left_behind: Option<LeftBehind>,
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
    /// A batch being created, as its input file was checked.
    pub batch: Option<crate::batches::BatchPlan>,
    /// Where the model is served: the primary, then fallbacks.
    pub targets: Arc<[Target]>,
    /// The pool serving the first targets, when one does.
    pub pool: Option<Arc<crate::upstream::Pool>>,
    pub reservations: Reservations,
    pub cache: CacheState,
    pub moderation: Option<PendingModeration>,
    /// What the answer used (tokens) and cost, set by the stage that read it; `finish` settles
    /// it. Unset, the reservations settle as they do when dropped.
    pub spent: Option<(Option<u64>, Spend)>,
    /// What the audit record will say.
    pub facts: CallFacts,
    /// Where the facts go if the caller leaves before the answer.
    pub left_behind: Option<LeftBehind>,
    /// Set once the call has gone upstream: the prices its record is counted at should the
    /// caller leave before the answer.
    pub gone_upstream: Option<Arc<PriceTable>>,
    /// The upstream answered with a success head: it ran, and bills, even if its body is lost.
    pub answered: bool,
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
            batch: None,
            targets: Arc::from([]),
            pool: None,
            reservations: Reservations::new(state),
            cache: CacheState::default(),
            moderation: None,
            spent: None,
            left_behind: call.left_behind,
            gone_upstream: None,
            answered: false,
            started: Instant::now(),
        }
    }

    /// Keeps the caller's JSON body for the stages that read it.
    pub fn keep_json(&mut self, raw: Bytes) {
        self.json = Some(JsonRequest::new(raw));
    }

    /// The service tier the request asks for (`service_tier`; standard when it names none).
    pub fn asked_tier(&mut self) -> ServiceTier {
        let tree = self.json.as_mut().map(JsonRequest::tree);
        ServiceTier::parse(
            tree.and_then(|tree| tree.get("service_tier"))
                .and_then(serde_json::Value::as_str),
        )
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
                    // Served at an unknown cost: it keeps what was held, and its record says
                    // so (a budget seeded from the records after a restart then agrees).
                    if spend == Spend::Unknown
                        && self.facts.cost_nanos.is_none()
                        && let Some(held) = self.reservations.budget_held()
                    {
                        self.facts.cost_nanos = Some(held);
                        self.facts.estimated = true;
                    }
                    self.reservations.settle(tokens, spend);
                }
                Ok(response)
            }
            // The upstream answered 2xx and then its body was lost: it ran and bills, so the
            // call keeps its worst case, in the budget and in the record alike.
            Err(error) if self.answered => {
                if let Some(prices) = self.gone_upstream.take() {
                    self.facts = self.at_worst_case(&prices, None);
                }
                self.reservations.settle(None, Spend::Unknown);
                Err(error)
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
        self.left_behind = None;
        (result, std::mem::take(&mut self.facts))
    }

    /// The facts of a call that ran upstream but whose answer was lost (its caller left, or
    /// its body broke after a success head): it is counted at its worst case — the prompt as
    /// estimated and the most output it allows, at what the budget holds for it (the same
    /// figure the budget is settled at) — marked estimated, and ended as `outcome` says.
    fn at_worst_case(&mut self, prices: &PriceTable, outcome: Option<&'static str>) -> CallFacts {
        // The prompt as counted for a budget, or else roughly: this may run in `Drop`, where a
        // caller who sent a large prompt and left must not buy a tokenizer run.
        let route = self.route;
        let estimate = self.json.as_mut().map(|json| match json.estimate {
            Some(counted) => counted,
            None => {
                let bytes = json.raw.len();
                crate::tokens::estimate_roughly(route, json.tree(), bytes)
            }
        });
        let prompt_tokens = estimate.map_or(0, |e| e.prompt_tokens);
        let choices = estimate.map_or(1, |e| e.choices);
        let max_output = estimate.and_then(|e| e.max_completion_tokens);
        let model = self
            .facts
            .model_used
            .clone()
            .or_else(|| self.request.model.clone())
            .unwrap_or_default();
        let limit = prices
            .get(&model)
            .and_then(|price| price.tokens)
            .map_or(0, |tokens| tokens.max_output_tokens.saturating_mul(choices));
        let tier = self.asked_tier();
        let cost = self
            .reservations
            .budget_held()
            .or_else(|| prices.worst_case(&model, &demand(&self.request, estimate, tier)));
        let images = self.request.images.clone();
        let mut facts = std::mem::take(&mut self.facts);
        facts.usage = Usage {
            prompt_tokens,
            completion_tokens: max_output.map_or(limit, |max| max.min(limit)),
            ..Usage::default()
        };
        facts.images = images;
        facts.cost_nanos = cost;
        facts.price_version = cost.map(|_| prices.version());
        facts.estimated = true;
        facts.outcome = outcome;
        facts
    }
}

/// What a request may use, for its worst case: the counts of its estimate (none without a
/// JSON body), the images or audio it asked for, and its tier.
pub fn demand(request: &RequestFacts, estimate: Option<Estimate>, tier: ServiceTier) -> Demand<'_> {
    Demand {
        prompt_tokens: estimate.map_or(0, |e| e.prompt_tokens),
        max_output: estimate.and_then(|e| e.max_completion_tokens),
        choices: estimate.map_or(1, |e| e.choices),
        prompt_audio_bytes: estimate.map_or(0, |e| e.prompt_audio_bytes),
        audio_output: estimate.is_some_and(|e| e.audio_output),
        asked: Asked {
            images: request.images.as_ref(),
            audio: request.audio.as_ref(),
        },
        tier,
    }
}

impl Drop for Call {
    /// A call dropped before `finish` after it went upstream lost its caller (the handler's
    /// future was dropped): its record, waiting in the audit layer, gets the worst case.
    fn drop(&mut self) {
        let (Some(slot), Some(prices)) = (self.left_behind.take(), self.gone_upstream.take())
        else {
            return;
        };
        let facts = self.at_worst_case(&prices, Some("client_left"));
        slot.deliver(Unanswered {
            status: 499,
            error_kind: None,
            facts,
        });
    }
}
