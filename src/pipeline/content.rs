//! Stage 6: content rules, after the rate limits (a refused prompt still counts against
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

use super::ModelRoute;
use crate::error::GatewayError;
use crate::records::CallFacts;
use crate::state::AppState;
use crate::upstream::{DEFAULT_ENDPOINT, OutgoingBody, UpstreamRequest};

/// Prompt text waiting for the moderation check, which runs only when the request is about
/// to go upstream (a cached answer needs none).
#[derive(Debug, Default)]
pub struct PendingModeration(Vec<String>);

/// Checks the body about to go upstream with the in-process rules, and replaces it when
/// something was redacted. Returns the text moderation must still see, when it is on.
pub fn apply(
    state: &AppState,
    route: ModelRoute,
    body: &mut OutgoingBody,
    facts: &mut CallFacts,
) -> Result<Option<PendingModeration>, GatewayError> {
    let OutgoingBody::Buffered(bytes) = body else {
        return Ok(None);
    };
    let checked = match state.content.check(route, bytes) {
        Ok(checked) => checked,
        Err(refused) => {
            facts.rules_fired.extend(refused.fired);
            crate::metrics::record_content_refusal();
            return Err(refused.error);
        }
    };
    facts.rules_fired.extend(checked.fired);
    if let Some(rewritten) = checked.rewritten {
        *bytes = rewritten;
    }
    Ok((state.content.moderation && !checked.texts.is_empty())
        .then_some(PendingModeration(checked.texts)))
}

/// Asks the upstream's moderation about `pending`; flagged input is refused.
pub async fn moderate(
    state: &AppState,
    route: ModelRoute,
    pending: PendingModeration,
    facts: &mut CallFacts,
) -> Result<(), GatewayError> {
    if flagged(state, &pending.0).await? {
        facts.rules_fired.push("moderation".to_owned());
        crate::metrics::record_content_refusal();
        return Err(GatewayError::ContentPolicy {
            message: "The request was flagged by moderation and refused.".to_owned(),
            param: Some(crate::content::prompt::field(route).to_owned()),
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
        })
        .await?;
    let body = state.upstream.read_body(response, started).await?;
    let verdicts: Verdicts =
        serde_json::from_slice(&body).map_err(|e| GatewayError::UpstreamFailed {
            detail: format!("unreadable moderation answer: {e}"),
        })?;
    Ok(verdicts.results.iter().any(|v| v.flagged))
}
