//! The respond stage: the caller's response, built from the upstream's.
//!
//! Only headers that describe the body go back (`content-type`, `content-disposition`,
//! OpenAI's processing time and version); the upstream's own rate-limit headers describe
//! Tollgate's account, not the caller's, and never leak. The upstream's request id is kept as
//! `x-upstream-request-id` for support cases.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use super::forward::Forwarded;
use super::{Call, ModelRoute, Spend, account, cache, stream};
use crate::error::GatewayError;
use crate::openai::usage;
use crate::pricing::Nanos;
use crate::state::AppState;

/// The stage: an event stream is relayed event by event (accounted when it ends); a file or
/// audio answer is streamed back (its cost is not in it: speech is priced from its request
/// where its model bills characters, and otherwise keeps what was held); a JSON answer is read
/// within the deadline, accounted, handed to the cache, and returned with its cost.
pub async fn respond(
    call: &mut Call,
    state: &AppState,
    forwarded: Forwarded,
) -> Result<Response, GatewayError> {
    let status = forwarded.upstream.status();
    let headers = forwarded.upstream.headers().clone();
    let mut response = if call.request.stream && is_event_stream(&headers) {
        let mut response = stream::respond(call, state, forwarded, &headers);
        mark_event_stream(&mut response);
        response
    } else if call.route == ModelRoute::Passthrough && !is_json(&headers) {
        let accounting = call
            .request
            .audio
            .is_some()
            .then(|| account::account(&state.prices, &call.request, Default::default()))
            .flatten();
        let cost = charge(call, accounting);
        let body = Body::new(forwarded.upstream.into_body());
        let mut response = from_upstream(status, &headers, body);
        if let Some(cost) = cost {
            set_cost(&mut response, cost);
        }
        response
    } else if let Some(plan) = call.batch.take() {
        let (draft, held) = batch_draft(call, plan);
        let upstream_started = forwarded.upstream_started;
        let body = create_batch(state, forwarded, draft).await?;
        call.facts.set_upstream_wait(upstream_started.elapsed());
        // Its creation costs what its budgets hold (released when its output is recorded).
        let cost = charge(
            call,
            Some(account::Accounting {
                cost: Some(held),
                estimated: held > 0,
                price_version: (held > 0).then(|| state.prices.version()),
                ..account::Accounting::default()
            }),
        );
        let mut response = json(status, &headers, body);
        if let Some(cost) = cost {
            set_cost(&mut response, cost);
        }
        response
    } else {
        let body = state
            .upstream
            .read_body(forwarded.upstream, forwarded.answer_started)
            .await?;
        call.facts
            .set_upstream_wait(forwarded.upstream_started.elapsed());
        // The account step: usage and cost, as the upstream reported them; an operation
        // OpenAI does not bill (moderations) is free, not unpriced.
        let summary = usage::summarize(&body);
        let accounting = if call.operation.as_deref().is_some_and(|op| !op.billed) {
            Some(account::free(summary))
        } else {
            account::account(&state.prices, &call.request, summary)
        };
        let cost = charge(call, accounting);
        cache::store(call, state, status, &body);
        let mut response = json(status, &headers, body);
        if let Some(cost) = cost {
            set_cost(&mut response, cost);
        }
        response
    };
    if let Some(status) = call.cache.reported {
        status.write_header(&mut response);
    }
    Ok(response)
}

/// A batch about to be created, as it will be remembered (its id comes with the answer), and
/// what its budgets hold for it (its worst case; 0 when no budget applies).
fn batch_draft(call: &Call, plan: crate::batches::BatchPlan) -> (crate::store::Batch, Nanos) {
    let hold = call.reservations.budget_hold();
    let held = hold.map_or(0, super::budget::Hold::reserved);
    let draft = crate::store::Batch {
        id: String::new(),
        // Dated when its budgets were taken: its settlement lands in the windows that held it.
        created_at_ms: hold.map_or_else(crate::records::now_ms, super::budget::Hold::at_ms),
        key_id: call.facts.key_id.clone(),
        user_id: call.principal.user.clone(),
        caller: call.facts.caller.to_owned(),
        endpoint: plan.endpoint,
        model: Some(plan.model),
        held_nanos: held,
        failures: 0,
    };
    (draft, held)
}

/// Reads a batch creation's answer and remembers the batch, on a task of its own: a caller who
/// leaves now cannot leave a created batch unremembered.
async fn create_batch(
    state: &AppState,
    forwarded: Forwarded,
    mut draft: crate::store::Batch,
) -> Result<Bytes, GatewayError> {
    let task_state = state.clone();
    let created = state.tasks.spawn(async move {
        let body = task_state
            .upstream
            .read_body(forwarded.upstream, forwarded.answer_started)
            .await?;
        match crate::batches::created_id(&body) {
            Some(id) => {
                draft.id = id;
                crate::batches::remember(&task_state, draft).await;
            }
            None => tracing::error!("a batch was created but its answer names no id"),
        }
        Ok(body)
    });
    created
        .await
        .map_err(|error| GatewayError::Internal(error.to_string()))?
}

/// Notes what a served answer used and cost for `finish` to settle, and puts it in the
/// record; returns the cost. An answer whose cost is unknown keeps what was held.
fn charge(call: &mut Call, accounting: Option<account::Accounting>) -> Option<Nanos> {
    let tokens = accounting.as_ref().map(|a| a.usage.total_tokens());
    let cost = accounting.as_ref().and_then(|a| a.cost);
    call.spent = Some((tokens, cost.map_or(Spend::Unknown, Spend::Cost)));
    if let Some(accounting) = accounting {
        call.facts.apply(accounting);
        call.facts.count_usage(call.route.label());
    }
    cost
}

/// Response headers copied from the upstream.
const KEPT_RESPONSE_HEADERS: [&str; 4] = [
    "content-type",
    "content-disposition",
    "openai-processing-ms",
    "openai-version",
];

/// A response with the upstream's status and safe headers around `body`.
pub fn from_upstream(status: StatusCode, upstream_headers: &HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for name in KEPT_RESPONSE_HEADERS {
        if let Some(value) = upstream_headers.get(name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    if let Some(id) = upstream_headers.get("x-request-id") {
        headers.insert(HeaderName::from_static("x-upstream-request-id"), id.clone());
    }
    response
}

/// A buffered JSON answer.
pub fn json(status: StatusCode, upstream_headers: &HeaderMap, body: Bytes) -> Response {
    let mut response = from_upstream(status, upstream_headers, Body::from(body));
    response
        .headers_mut()
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    response
}

/// Headers every SSE answer carries, so proxies neither buffer nor cache it.
pub fn mark_event_stream(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
}

/// Whether an upstream answer is an event stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Whether an upstream answer is JSON (and so small enough to buffer and read usage from).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// `x-tollgate-cost-usd`: what the call cost, in USD with six places.
pub fn set_cost(response: &mut Response, cost: crate::pricing::Nanos) {
    if let Ok(value) = HeaderValue::from_str(&crate::pricing::format_usd(cost)) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-tollgate-cost-usd"), value);
    }
}
