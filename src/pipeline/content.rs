//! The content stage: content rules, after the rate limits (a refused prompt still counts against
//! them) and before the budget reservation.
//!
//! The length cap, the deny list and the redactions run in-process ([`crate::content`]); with
//! `moderation = true` the (redacted) prompt text goes to the default upstream's
//! `/v1/moderations` once the cache has missed, just before forwarding (a cached answer was
//! moderated when it was first asked), and flagged input is refused. Moderation fails closed: when it cannot
//! answer, the request is not forwarded unchecked (the caller gets the upstream error). The
//! rules that fired go in the record, never the text.

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use tokio::time::Instant;

use super::Call;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::upstream::{DEFAULT_ENDPOINT, OutgoingBody, UpstreamRequest};

/// Prompt text waiting for the moderation check, which runs only when the request is about
/// to go upstream (a cached answer needs none).
#[derive(Debug, Default)]
pub struct PendingModeration(Vec<String>);

/// The stage's in-process part: checks the prompt with the rules and, when something was
/// redacted, sends the redacted body instead. Leaves the text moderation must still see, when
/// it is on.
pub fn apply(call: &mut Call, state: &AppState) -> Result<(), GatewayError> {
    if !state.content.enabled() || !matches!(call.body, OutgoingBody::Buffered(_)) {
        return Ok(());
    }
    let Some(json) = call.json.as_mut() else {
        return Ok(());
    };
    let checked = match state.content.check(call.route, json.tree()) {
        Ok(checked) => checked,
        Err(refused) => {
            call.facts.rules_fired.extend(refused.fired);
            crate::metrics::record_content_refusal();
            return Err(refused.error);
        }
    };
    call.facts.rules_fired.extend(checked.fired);
    if checked.redacted {
        let redacted =
            serde_json::to_vec(json.tree()).map_err(|e| GatewayError::Internal(e.to_string()))?;
        let body = super::validate::upstream_body(call.route, &call.request, redacted.into())?;
        call.body = OutgoingBody::Buffered(body);
    }
    if state.content.moderation && !checked.texts.is_empty() {
        call.moderation = Some(PendingModeration(checked.texts));
    }
    Ok(())
}

/// The stage's upstream part, once the cache has missed: asks the upstream's moderation about
/// the prompt; flagged input is refused.
pub async fn moderate(call: &mut Call, state: &AppState) -> Result<(), GatewayError> {
    let Some(pending) = call.moderation.take() else {
        return Ok(());
    };
    if flagged(state, &pending.0).await? {
        call.facts.rules_fired.push("moderation".to_owned());
        crate::metrics::record_content_refusal();
        return Err(GatewayError::ContentPolicy {
            message: "The request was flagged by moderation and refused.".to_owned(),
            param: Some(crate::content::prompt::field(call.route).to_owned()),
        });
    }
    Ok(())
}

/// Whether the upstream's moderation flags any of `texts`.
async fn flagged(state: &AppState, texts: &[String]) -> Result<bool, GatewayError> {
    #[derive(serde::Deserialize)]
    struct Verdicts {
        results: Vec<Verdict>,
    }
    #[derive(serde::Deserialize)]
    struct Verdict {
        flagged: bool,
    }
    let started = Instant::now();
    let request = serde_json::json!({ "model": "omni-moderation-latest", "input": texts });
    let response = state
        .upstream
        .send(UpstreamRequest {
            endpoint: DEFAULT_ENDPOINT,
            method: Method::POST,
            path: crate::openai::path::ApiPath::fixed("moderations"),
            query: None,
            headers: HeaderMap::new(),
            body: OutgoingBody::Buffered(Bytes::from(request.to_string())),
            stream: false,
            model: None,
        })
        .await?;
    let body = state.upstream.read_body(response, started).await?;
    let verdicts: Verdicts =
        serde_json::from_slice(&body).map_err(|e| GatewayError::UpstreamFailed {
            detail: format!("unreadable moderation answer: {e}"),
        })?;
    Ok(verdicts.results.iter().any(|v| v.flagged))
}
