//! The request pipeline: every stage of a model call, in order, in one place.
//!
//! ```text
//! authenticate ─► route ─► validate ─► authorize ─► rate limits ─► content ─► budgets ─► cache ─► forward ─► respond ─► account
//!   (layer)      (handler)    (3)         (4)           (5)           (6)        (7)       (8)       (9)        (10)       (11)
//!                                                                                   │
//!                                   audit layer: the record, from the response's CallFacts
//! ```
//!
//! Authentication runs as a layer over every non-open route (`routes::router`), so a route
//! cannot forget it; the handler receives the [`Principal`], and for the passthrough route it
//! has already checked the path and matched an allowlisted operation (`routes::passthrough`).
//! Authorization holds restricted callers to their model list and budget on every route, or
//! refuses (`authorize`). A multipart form to a model route starts upstream during
//! validation with its end held back (`upload`), so stages 4–8 run before it can complete.
//! Each later stage is a plain
//! function in its own file, called here top to bottom. Validation comes before the limits
//! because token rules need the parsed prompt and the body's `user`. Accounting (usage, cost,
//! settling token reservations and budget holds) happens when the answer is read, or for a
//! stream when it ends. The audit record is written by the access-log layer from the
//! [`CallFacts`] this pipeline leaves on the response. A cache hit skips forward and respond
//! and is accounted at zero cost.

pub mod account;
pub mod authenticate;
pub mod authorize;
pub mod budget;
pub mod cache;
pub mod content;
pub mod rate_limit;
pub mod respond;
pub mod stream;
pub mod upload;
pub mod validate;

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;

use crate::cache::{CachedAnswer, Lookup, ResponseCache};
use crate::error::GatewayError;
use crate::limiter::rules::RouteClass;
use crate::openai::multipart;
use crate::openai::operations::{Governance, Operation};
use crate::openai::path::ApiPath;
use crate::openai::requests::RequestFacts;
use crate::openai::usage;
use crate::records::{CallFacts, PendingFacts};
use crate::state::AppState;
use crate::upstream::{self, OutgoingBody, UpstreamRequest};
pub use authenticate::{Caller, Principal};
use cache::CacheStatus;
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
    /// Path under the upstream's base URL (`chat/completions`), checked segment by segment.
    pub upstream_path: ApiPath,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: CallBody,
    /// The passthrough operation (its governance and family); `None` for Tollgate's own model
    /// routes, which always name their model.
    pub operation: Option<Arc<Operation>>,
}

/// Runs `call` through every stage and always produces a response (errors rendered). The
/// response carries what the audit layer records: [`CallFacts`], or for a stream
/// [`PendingFacts`] fulfilled when it ends.
pub async fn handle(state: &AppState, principal: &Principal, call: ModelCall) -> Response {
    let mut facts = CallFacts::of(principal);
    let mut response = match run(state, principal, call, &mut facts).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response.extensions_mut().insert(facts);
    response
}

async fn run(
    state: &AppState,
    principal: &Principal,
    call: ModelCall,
    facts: &mut CallFacts,
) -> Result<Response, GatewayError> {
    let started = Instant::now();

    // 3. validate: read the fields we need, check them, prepare the upstream body. A form to
    // a model operation starts upstream now, its end held back, so that its fields can be
    // read as it streams (`upload`); everything below runs before that end is released.
    let mut uploading = None;
    let mut form_unread = false;
    let (mut request, mut body, raw) = match call.body {
        CallBody::Json(bytes) => {
            let request = validate::facts(call.route, &bytes)?;
            let body = validate::upstream_body(call.route, &request, bytes.clone())?;
            (request, OutgoingBody::Buffered(body), Some(bytes))
        }
        CallBody::Empty => (RequestFacts::default(), OutgoingBody::Empty, None),
        CallBody::Streamed(body) => {
            let model_route = call
                .operation
                .as_deref()
                .is_some_and(|op| op.governance == Governance::Model);
            let content_type = call
                .headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            match multipart::boundary(content_type) {
                Ok(boundary) if model_route => {
                    let (held, upload) = upload::Upload::hold(body, &boundary);
                    let sending = UpstreamRequest {
                        endpoint: upstream::DEFAULT_ENDPOINT,
                        method: call.method.clone(),
                        path: call.upstream_path.clone(),
                        query: call.query.clone(),
                        headers: call.headers.clone(),
                        body: OutgoingBody::streamed(held),
                        stream: false,
                    };
                    let (fields, in_flight) = upload::start(state, upload, sending).await?;
                    uploading = Some(in_flight);
                    let request = match fields {
                        Ok(fields) => upload::facts(&fields)?,
                        Err(form_error) => {
                            // Unreadable for us: a restricted caller is refused below.
                            tracing::debug!(%form_error, "upload fields not read");
                            form_unread = true;
                            RequestFacts::default()
                        }
                    };
                    (request, OutgoingBody::Empty, None)
                }
                boundary => {
                    form_unread = model_route && boundary.is_err();
                    (RequestFacts::default(), OutgoingBody::streamed(body), None)
                }
            }
        }
    };
    if uploading.is_some()
        && let Some(model) = &request.model
        && *state.upstream.targets(Some(model)) != *state.upstream.targets(None)
    {
        // An upload went to the default upstream as it arrived: a model routed elsewhere
        // (an alias, another upstream) cannot be honoured, so it is refused, never misrouted.
        return Err(GatewayError::invalid(
            format!(
                "The model `{model}` is served through an alias or another upstream, which \
                 multipart uploads cannot use."
            ),
            Some("model".to_owned()),
        ));
    }
    facts.model_requested.clone_from(&request.model);
    facts.model_label = request
        .model
        .as_deref()
        .map(|model| state.model_labels.label(model));
    facts.stream = request.stream;

    // 4. authorize: the caller may use this model, and this operation at all.
    authorize::authorize(
        state,
        principal,
        call.operation.as_deref(),
        &request,
        form_unread,
    )?;

    // 5. rate limits: every bucket that applies, charged at once; tokens estimated if needed.
    let principal = with_body_user(principal, &request);
    let principal = principal.as_ref();
    if facts.user_id.is_none() {
        facts.user_id.clone_from(&principal.user);
    }
    let default_completion = state.config.limits.default_completion_tokens;
    let route = call.route;
    let class = match &call.operation {
        Some(operation) => RouteClass::of_family(&operation.family),
        None => route.class(),
    };
    let admission = rate_limit::admit(state, principal, class, || {
        raw.as_deref().map_or(0, |body| {
            crate::tokens::estimate(route, body, default_completion)
        })
    })
    .await?;

    // 6. content rules: length, deny list, redaction (moderation waits for a cache miss).
    let moderation = if state.content.enabled() {
        match content::apply(state, route, &mut body, facts) {
            Ok(pending) => pending,
            Err(error) => {
                settle_later(state, admission, None);
                return Err(error);
            }
        }
    } else {
        None
    };

    // 7. budgets: the worst case (over the model's targets) reserved on every budget that
    // applies, or a 429.
    let targets = state.upstream.targets(request.model.as_deref());
    let hold = match budget::reserve(
        state,
        principal,
        route,
        &request,
        &targets,
        raw.as_deref(),
        call.operation.as_deref().is_none_or(|op| op.billed),
    )
    .await
    {
        Ok(hold) => hold,
        Err(error) => {
            settle_later(state, admission, None);
            return Err(error);
        }
    };

    // 8. cache: answer from it, or from an identical call in flight, or claim the miss.
    let cache_plan = cache::plan(
        &state.config.cache,
        principal,
        route,
        &request,
        &call.headers,
        raw.as_deref(),
    );
    let mut cache_status = CacheStatus::Bypass;
    let mut flight = None;
    if let Some(plan) = cache_plan.as_ref().filter(|plan| plan.lookup) {
        cache_status = CacheStatus::Miss;
        let found = match state.cache.lookup(plan.key.clone()).await {
            Lookup::Hit(answer) => Some(answer),
            Lookup::Wait(leader) => ResponseCache::wait(leader, state.upstream.timeout).await,
            Lookup::Miss(claimed) => {
                flight = Some(claimed);
                None
            }
        };
        if let Some(answer) = found {
            // Nothing went upstream: reservations settle to zero.
            settle_later(state, admission.clone(), Some(0));
            budget::settle_later(state, hold, Some(0));
            let mut response = cache::hit(answer, facts);
            if let Some(admission) = &admission {
                admission.write_headers(response.headers_mut());
            }
            return Ok(response);
        }
    }
    // Chat and embeddings say what the cache did, even when it did nothing.
    let cache_reported =
        matches!(route, ModelRoute::Chat | ModelRoute::Embeddings).then_some(cache_status);
    facts.cache_status = cache_reported.map(CacheStatus::as_str);

    if let Some(pending) = moderation
        && let Err(error) = content::moderate(state, route, pending, facts).await
    {
        settle_later(state, admission, None);
        budget::settle_later(state, hold, None);
        return Err(error);
    }

    // An upload's time is the caller's: what follows it is timed from when it was sent.
    let streamed_body = uploading.is_some() || matches!(body, OutgoingBody::Streamed(_));

    // 9. forward: pooled, retried, timed; an alias falls back along its targets. An upload
    // already under way is let finish.
    let upstream_started = Instant::now();
    let sent = match uploading {
        Some(in_flight) => in_flight.finish().await,
        None => {
            state
                .upstream
                .send_routed(
                    &targets,
                    UpstreamRequest {
                        endpoint: upstream::DEFAULT_ENDPOINT,
                        method: call.method,
                        path: call.upstream_path,
                        query: call.query,
                        headers: call.headers,
                        body,
                        stream: request.stream,
                    },
                )
                .await
        }
    };
    facts.set_upstream_wait(upstream_started.elapsed());
    let upstream = match sent {
        Ok((upstream, target)) => {
            facts.upstream = Some(state.upstream.name_of(target.endpoint));
            // An alias is priced (and its answer recorded) as the model that served it.
            if let Some(model) = target.model {
                facts.model_used = Some(model.to_string());
                request.model = Some(model.to_string());
            }
            upstream
        }
        Err(error) => {
            settle_later(state, admission, None);
            // A call that timed out may still have run (and been billed) upstream: it keeps
            // its reservation. Other failures were not served.
            if matches!(error, GatewayError::UpstreamTimeout) {
                budget::settle_unknown_later(state, hold);
            } else {
                budget::settle_later(state, hold, None);
            }
            return Err(error);
        }
    };

    // 10. respond: relay a stream event by event, or read and return a JSON answer.
    let answer_started = if streamed_body {
        Instant::now()
    } else {
        started
    };
    let status = upstream.status();
    let headers = upstream.headers().clone();
    let mut response = if request.stream && respond::is_event_stream(&headers) {
        let (pending, deliver) = PendingFacts::new();
        let prices = state.prices.clone();
        let asked = request.model.clone();
        let options = stream::RelayOptions {
            strip_usage_chunk: route == ModelRoute::Chat && !request.include_usage,
            price: Box::new(move |usage, model| {
                prices.cost(model.or(asked.as_deref())?, usage, None)
            }),
        };
        let on_done = {
            let state = state.clone();
            let admission = admission.clone();
            let hold = hold.clone();
            let mut facts = facts.clone();
            let raw = raw.clone();
            move |outcome: stream::StreamOutcome| {
                tracing::debug!(route = route.label(), end = ?outcome.end, events = outcome.events, "stream finished");
                // 11. usage and cost: the stream's own, or an estimate of what it relayed.
                let accounting =
                    stream_accounting(&state, route, &request, raw.as_deref(), &outcome);
                settle_later(&state, admission, Some(accounting.usage.total_tokens()));
                budget::settle_later(&state, hold, accounting.cost);
                facts.outcome = match outcome.end {
                    stream::StreamEnd::Completed => None,
                    stream::StreamEnd::ClientLeft => Some("client_left"),
                    stream::StreamEnd::UpstreamBroke | stream::StreamEnd::IdleTimeout => {
                        Some("stream_broken")
                    }
                };
                facts.upstream_ms = Some(elapsed_ms(upstream_started));
                facts.apply(accounting);
                crate::metrics::record_usage(route.label(), &facts);
                let _ = deliver.send(facts);
            }
        };
        let body = stream::relay(
            state,
            upstream,
            answer_started + state.upstream.first_byte_timeout,
            options,
            on_done,
        );
        let mut response = respond::from_upstream(status, &headers, body);
        respond::mark_event_stream(&mut response);
        response.extensions_mut().insert(pending);
        response
    } else if route == ModelRoute::Passthrough && !respond::is_json(&headers) {
        // Files and audio: streamed back as they come; their cost is not in them.
        settle_later(state, admission.clone(), None);
        budget::settle_unknown_later(state, hold);
        respond::from_upstream(status, &headers, Body::from_stream(upstream.bytes_stream()))
    } else {
        let body = match state.upstream.read_body(upstream, answer_started).await {
            Ok(body) => body,
            Err(error) => {
                settle_later(state, admission, None);
                budget::settle_later(state, hold, None);
                return Err(error);
            }
        };
        facts.set_upstream_wait(upstream_started.elapsed());
        // 11. usage and cost: what the upstream reported.
        let accounting = account::account(&state.prices, route, &request, usage::summarize(&body));
        settle_later(
            state,
            admission.clone(),
            accounting.as_ref().map(|a| a.usage.total_tokens()),
        );
        let cost = accounting.as_ref().and_then(|a| a.cost);
        match cost {
            Some(cost) => budget::settle_later(state, hold, Some(cost)),
            None if status.is_success() => budget::settle_unknown_later(state, hold),
            None => budget::settle_later(state, hold, None),
        }
        if let Some(accounting) = accounting {
            facts.apply(accounting);
            crate::metrics::record_usage(route.label(), facts);
        }
        let storable = status == StatusCode::OK && body.len() <= state.config.cache.max_entry_bytes;
        if let Some(plan) = cache_plan.filter(|_| storable) {
            let answer = CachedAnswer {
                model: facts.model_used.clone(),
                body: body.clone(),
            };
            match flight.take() {
                Some(flight) => state
                    .cache
                    .complete(flight, answer, plan.store, &state.tasks),
                None if plan.store => state.cache.store(plan.key, answer, &state.tasks),
                None => {}
            }
        }
        let mut response = respond::json(status, &headers, body);
        if let Some(cost) = cost {
            respond::set_cost(&mut response, cost);
        }
        response
    };
    if let Some(status) = cache_reported {
        status.write_header(&mut response);
    }
    if let Some(admission) = &admission {
        admission.write_headers(response.headers_mut());
    }
    Ok(response)
}

/// A finished stream's accounting: the usage it reported, or else an estimate from the
/// request's prompt and the text it relayed.
fn stream_accounting(
    state: &AppState,
    route: ModelRoute,
    request: &RequestFacts,
    raw_request: Option<&[u8]>,
    outcome: &stream::StreamOutcome,
) -> account::Accounting {
    let summary = usage::ResponseSummary {
        model: outcome.model.clone(),
        usage: outcome.usage,
        data_items: None,
    };
    if let Some(mut accounting) = account::account(&state.prices, route, request, summary) {
        accounting.cost = outcome.cost.or(accounting.cost);
        return accounting;
    }
    let model = request.model.as_deref().unwrap_or("gpt-4o");
    let prompt_tokens = raw_request.map_or(0, |body| {
        crate::tokens::estimate_parts(route, body).prompt_tokens
    });
    account::estimate_unreported(
        &state.prices,
        model,
        prompt_tokens,
        &stream::completion_text(&outcome.relayed),
    )
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
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
/// the same stages, returning the response headers (rate limits, cost), the upstream's JSON,
/// and the facts for the audit record.
pub async fn complete_chat(
    state: &AppState,
    principal: &Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(HeaderMap, Bytes, CallFacts), GatewayError> {
    let call = ModelCall {
        route: ModelRoute::Chat,
        method: Method::POST,
        upstream_path: ApiPath::fixed("chat/completions"),
        query: None,
        headers,
        body: CallBody::Json(body),
        operation: None,
    };
    let mut facts = CallFacts::of(principal);
    let response = run(state, principal, call, &mut facts).await?;
    let (parts, body) = response.into_parts();
    let bytes =
        axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|e| GatewayError::UpstreamFailed {
                detail: format!("reading the completion: {e}"),
            })?;
    Ok((parts.headers, bytes, facts))
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

/// How an alias appears in `/v1/models`: OpenAI's model object, owned by Tollgate.
pub fn alias_object(alias: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut object = serde_json::Map::new();
    object.insert("id".to_owned(), alias.into());
    object.insert("object".to_owned(), "model".into());
    object.insert("created".to_owned(), 0.into());
    object.insert("owned_by".to_owned(), "tollgate".into());
    object
}

/// `GET /v1/models`: the upstream's list, narrowed to the models the key may use, with the
/// configured aliases.
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
            endpoint: upstream::DEFAULT_ENDPOINT,
            method: Method::GET,
            path: ApiPath::fixed("models"),
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
