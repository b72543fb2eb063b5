//! The Realtime API: `GET /v1/realtime?model=…` upgraded to a WebSocket and proxied, event by
//! event, to the upstream's own Realtime socket opened with the server's key.
//!
//! ```text
//! authenticate (layer: Authorization, or a browser's `openai-insecure-api-key.` subprotocol)
//!   ─► handshake ─► model ─► authorize ─► rate limits ─► budget ─► dial upstream ─► 101
//!                                                                                  │
//!   session (its own task): caller ⇄ upstream, each response priced, recorded, charged ◄┘
//! ```
//!
//! [`open`] runs the checks a call gets, once, at the session's start, with the pipeline's own
//! stages: the model (from the query) against the caller's list, a request charged to the
//! `realtime` rules, and a budget hold of the most one response can cost (its context window
//! and most output at the dearest class, `PriceTable::realtime_worst_case`). Only then is the
//! upstream dialled (a pool's members in its order, then the fallbacks; Azure's are skipped)
//! and the caller's `101` sent: a refusal is an ordinary HTTP error in OpenAI's envelope.
//!
//! The [`session`] then relays. Each `response.done` is priced from its usage, recorded as a
//! record of its own, charged to the token limits, and charged to the budgets beside the hold,
//! which stays in place for the next response; when the budgets have no room for another, or
//! the token limits are spent, the caller gets a Realtime `error` event and the session closes.
//! The session's opening leaves a record too (status 101, no cost).

pub mod events;
pub mod handshake;
mod session;

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::identity::Principal;
use crate::limiter::rules::RouteClass;
use crate::openai::ModelRoute;
use crate::openai::path::ApiPath;
use crate::openai::websocket::{BETA_PROTOCOL, offered_protocols};
use crate::pipeline::{Call, CallBody, ModelCall, Spend, authorize, budget, rate_limit};
use crate::state::AppState;
use crate::upstream::{RealtimeSocket, Target};
use handshake::Handshake;
use session::Session;

/// The route: checks, dials the upstream, and answers `101` with the session started behind.
pub async fn open(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let handshake = match Handshake::accept(&mut parts) {
        Ok(handshake) => handshake,
        Err(error) => return error.into_response(),
    };
    let mut call = Call::new(
        &state,
        &principal,
        ModelCall {
            route: ModelRoute::Realtime,
            method: Method::GET,
            upstream_path: ApiPath::fixed("realtime"),
            query: None,
            headers: HeaderMap::new(),
            body: CallBody::Empty,
            operation: None,
            left_behind: None,
        },
    );
    let opened = start(&mut call, &state, &parts).await;
    let result = match opened {
        Ok((upstream, target)) => {
            let session = Session::new(&mut call, &state, &parts, &target);
            let switching = handshake.switching();
            state.tasks.spawn(session.run(handshake.upgrade, upstream));
            Ok(switching)
        }
        Err(error) => Err(error),
    };
    let (result, facts) = call.finish(result);
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(facts);
    response
}

/// The checks at the session's start, then the upstream dialled: the socket and the target
/// that accepted it.
async fn start(
    call: &mut Call,
    state: &AppState,
    parts: &Parts,
) -> Result<(RealtimeSocket, Target), GatewayError> {
    let model = requested_model(parts.uri.query())?;
    let targets = state.upstream.targets(Some(&model));
    if !targets
        .iter()
        .any(|target| state.upstream.serves_realtime(target))
    {
        return Err(GatewayError::invalid(
            format!(
                "`{model}` is served only by Azure OpenAI here, whose Realtime API this gateway \
                 does not speak."
            ),
            Some("model".to_owned()),
        ));
    }
    call.targets = targets;
    call.pool = state.upstream.pool(Some(&model));
    call.facts.model_requested = Some(model.clone());
    call.facts.model_label = Some(state.model_labels.label(&model));
    call.facts.stream = true;
    call.request.model = Some(model);
    authorize::authorize(call, state)?;
    rate_limit::limit(call, state).await?;
    rate_limit::require_token_room(state, &call.principal, RouteClass::Realtime).await?;
    budget::reserve_session(call, state).await?;
    let targets = Arc::clone(&call.targets);
    let requested = call.request.model.clone().unwrap_or_default();
    let mut headers = parts.headers.clone();
    // A beta browser client asks for the beta protocol in its subprotocols, where a server
    // client sends `OpenAI-Beta`.
    if offered_protocols(&parts.headers).any(|p| p == BETA_PROTOCOL) {
        headers.insert("openai-beta", HeaderValue::from_static("realtime=v1"));
    }
    let pool = call.pool.clone();
    let dialled = state
        .upstream
        .dial_routed(&targets, pool.as_deref(), &requested, &headers)
        .await;
    let (upstream, target, busy) = dialled.inspect_err(|_| {
        // Nothing ran upstream: whatever the error (a timeout too), nothing is spent.
        call.reservations.settle(None, Spend::Cost(0));
    })?;
    call.reservations.mark_sent();
    call.reservations.hold_deployment(busy);
    call.facts.upstream = Some(state.upstream.name_of(target.endpoint));
    Ok((upstream, target))
}

/// The `model` of the query: exactly one, a name of at most 256 printable characters.
fn requested_model(query: Option<&str>) -> Result<String, GatewayError> {
    let refuse = |message: &str| GatewayError::invalid(message, Some("model".to_owned()));
    let mut models = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "model")
        .map(|(_, value)| value.into_owned());
    let model = models.next().ok_or_else(|| {
        refuse("A Realtime session names its model in the URL: /v1/realtime?model=gpt-realtime.")
    })?;
    if models.next().is_some() {
        return Err(refuse("Name the model once."));
    }
    let printable =
        !model.is_empty() && model.len() <= 256 && model.chars().all(|c| c.is_ascii_graphic());
    if !printable {
        return Err(refuse(
            "The model must be 1 to 256 printable characters without spaces.",
        ));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::requested_model;

    #[test]
    fn the_model_is_named_once_and_plainly() {
        assert_eq!(
            requested_model(Some("model=gpt-realtime&x=1")).unwrap(),
            "gpt-realtime"
        );
        assert!(requested_model(None).is_err());
        assert!(requested_model(Some("model=a&model=b")).is_err());
        assert!(requested_model(Some("model=a%20b")).is_err());
        assert!(requested_model(Some("model=")).is_err());
        assert!(requested_model(Some(&format!("model={}", "m".repeat(257)))).is_err());
    }
}
