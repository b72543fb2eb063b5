//! The cache stage, between the budget reservation and the upstream call.
//!
//! [`plan`] decides what the cache may do for a call: non-streaming chat under `cache.chat`
//! (`deterministic` keeps only `temperature: 0` requests), embeddings under
//! `cache.embeddings`; `Cache-Control: no-cache` skips the lookup and `no-store` the write.
//! The tenant in the key is the key id, else the JWT subject, else (anonymous mode) the end
//! user or the client address: answers never cross tenants.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

use bytes::Bytes;

use super::{Call, Spend, respond};
use crate::cache::{CacheKey, CachedAnswer, Flight, Lookup, ResponseCache};
use crate::config::{CacheConfig, ChatCachePolicy};
use crate::identity::{Caller, Principal};
use crate::openai::ModelRoute;
use crate::openai::requests::RequestFacts;
use crate::records::CallFacts;
use crate::state::AppState;

/// What the cache did for a response (`x-tollgate-cache` and the record's `cache_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache (or from an identical request in flight).
    Hit,
    /// Looked up, not found: the upstream answered.
    Miss,
    /// Not looked up: not cacheable, turned off, or the caller said `no-cache`.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }

    /// Sets `x-tollgate-cache`.
    pub fn write_header(self, response: &mut Response) {
        response.headers_mut().insert(
            HeaderName::from_static("x-tollgate-cache"),
            HeaderValue::from_static(self.as_str()),
        );
    }
}

/// What the cache may do for one call.
#[derive(Debug)]
pub struct CachePlan {
    pub key: CacheKey,
    /// Look the answer up (false under `no-cache`).
    pub lookup: bool,
    /// Store the upstream's answer (false under `no-store`).
    pub store: bool,
}

/// The cache's part in a call: its plan, the flight it leads, and what the response says.
#[derive(Default)]
pub struct CacheState {
    pub plan: Option<CachePlan>,
    /// A claimed miss: the answer goes to the waiters and the store.
    pub flight: Option<Flight>,
    /// `x-tollgate-cache` (chat and embeddings say what the cache did, even nothing).
    pub reported: Option<CacheStatus>,
}

/// The stage: answers from the cache, or from an identical call in flight (at zero cost), or
/// claims the miss.
pub async fn lookup(call: &mut Call, state: &AppState) -> Option<Response> {
    let tree = call.json.as_mut().map(|json| &*json.tree());
    let plan = plan(
        &state.config.cache,
        &call.principal,
        call.route,
        &call.request,
        &call.headers,
        tree,
    );
    let mut status = CacheStatus::Bypass;
    if let Some(plan) = plan.as_ref().filter(|plan| plan.lookup) {
        status = CacheStatus::Miss;
        let found = match state.cache.lookup(plan.key.clone()).await {
            Lookup::Hit(answer) => Some(answer),
            Lookup::Wait(leader) => ResponseCache::wait(leader, state.upstream.timeout).await,
            Lookup::Miss(claimed) => {
                call.cache.flight = Some(claimed);
                None
            }
        };
        if let Some(answer) = found {
            // Nothing went upstream: reservations settle to zero.
            call.spent = Some((Some(0), Spend::Cost(0)));
            return Some(hit(answer, &mut call.facts));
        }
    }
    call.cache.plan = plan;
    call.cache.reported =
        matches!(call.route, ModelRoute::Chat | ModelRoute::Embeddings).then_some(status);
    call.facts.cache_status = call.cache.reported.map(CacheStatus::as_str);
    None
}

/// Hands a 200 answer to the waiters and the store, as the plan allows.
pub fn store(call: &mut Call, state: &AppState, status: StatusCode, body: &Bytes) {
    let storable = status == StatusCode::OK && body.len() <= state.config.cache.max_entry_bytes;
    let Some(plan) = call.cache.plan.take().filter(|_| storable) else {
        return;
    };
    let answer = CachedAnswer {
        model: call.facts.model_used.clone(),
        body: body.clone(),
    };
    match call.cache.flight.take() {
        Some(flight) => state
            .cache
            .complete(flight, answer, plan.store, &state.tasks),
        None if plan.store => state.cache.store(plan.key, answer, &state.tasks),
        None => {}
    }
}

/// The plan for a call, or `None` when the cache has no part in it.
fn plan(
    config: &CacheConfig,
    principal: &Principal,
    route: ModelRoute,
    request: &RequestFacts,
    headers: &HeaderMap,
    body: Option<&serde_json::Value>,
) -> Option<CachePlan> {
    let cacheable = match route {
        ModelRoute::Chat => match config.chat {
            ChatCachePolicy::Always => !request.stream,
            ChatCachePolicy::Deterministic => !request.stream && request.deterministic,
            ChatCachePolicy::Off => false,
        },
        ModelRoute::Embeddings => config.embeddings,
        _ => false,
    };
    if !cacheable {
        return None;
    }
    let (no_cache, no_store) = cache_control(headers);
    if no_cache && no_store {
        return None;
    }
    let key = CacheKey::new(&tenant(principal), route.label(), body?);
    Some(CachePlan {
        key,
        lookup: !no_cache,
        store: !no_store,
    })
}

/// The answer to a hit: the stored body, at zero cost, with the facts its record needs.
fn hit(answer: CachedAnswer, facts: &mut CallFacts) -> Response {
    facts.cache_status = Some(CacheStatus::Hit.as_str());
    facts.model_used = answer.model;
    facts.cost_nanos = Some(0);
    let mut response = respond::json(StatusCode::OK, &HeaderMap::new(), answer.body);
    respond::set_cost(&mut response, 0);
    CacheStatus::Hit.write_header(&mut response);
    response
}

/// The caller's `Cache-Control` directives that concern us: `(no-cache, no-store)`.
fn cache_control(headers: &HeaderMap) -> (bool, bool) {
    let mut no_cache = false;
    let mut no_store = false;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or("").split(',') {
            let directive = directive.trim();
            no_cache |= directive.eq_ignore_ascii_case("no-cache");
            no_store |= directive.eq_ignore_ascii_case("no-store");
        }
    }
    (no_cache, no_store)
}

/// Whose answers these are.
fn tenant(principal: &Principal) -> String {
    match &principal.caller {
        Caller::Key(key) => format!("key:{}", key.id),
        Caller::Jwt { subject } => format!("jwt:{subject}"),
        Caller::Anonymous => match &principal.user {
            Some(user) => format!("anonymous-user:{user}"),
            None => format!("anonymous-ip:{}", principal.client_ip),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives_are_read_from_every_header_value() {
        let mut headers = HeaderMap::new();
        assert_eq!(cache_control(&headers), (false, false));
        headers.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert_eq!(cache_control(&headers), (true, false));
        headers.append(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(cache_control(&headers), (true, true));
    }
}
