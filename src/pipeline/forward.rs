//! The forward stage: the call goes to the model's targets (`upstream::Upstream::send_routed`:
//! pooled, retried, timed, an alias falling back along its targets, a pool's deployments in
//! the order its strategy chose), or an upload already under way is let finish.

use tokio::time::Instant;

use super::Call;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::upstream::{self, OutgoingBody, Routed, UpstreamRequest};

/// An upstream answer whose head has arrived.
pub struct Forwarded {
    pub upstream: crate::upstream::UpstreamResponse,
    /// When the upstream call started (the record's `upstream_ms` of a stream runs from here).
    pub upstream_started: Instant,
    /// Where the answer's deadline runs from: the call's start, or for an upload the moment it
    /// was sent in full (an upload's time is the caller's).
    pub answer_started: Instant,
}

/// Sends the call and notes who served it; an alias is priced (and recorded) as the model
/// that served it.
pub async fn forward(call: &mut Call, state: &AppState) -> Result<Forwarded, GatewayError> {
    let streamed_body = call.upload.is_some() || matches!(call.body, OutgoingBody::Streamed(_));
    call.reservations.mark_sent();
    call.gone_upstream = Some(state.prices.clone());
    let upstream_started = Instant::now();
    let sent = match call.upload.take() {
        Some(in_flight) => in_flight.finish().await,
        None => {
            let request = UpstreamRequest {
                endpoint: upstream::DEFAULT_ENDPOINT,
                method: call.method.clone(),
                path: call.upstream_path.clone(),
                query: call.query.take(),
                headers: std::mem::take(&mut call.headers),
                body: std::mem::replace(&mut call.body, OutgoingBody::Empty),
                stream: call.request.stream,
                model: call.request.model.clone(),
            };
            // A pool member's own tokens-per-minute limit counts the prompt and the most the
            // answer may hold, as OpenAI's limits do.
            let tokens = match &call.pool {
                Some(pool) if pool.counts_tokens() => {
                    // Without a maximum, the most any of the targets may answer.
                    let most_output = call
                        .targets
                        .iter()
                        .filter_map(|t| t.model.as_deref().or(call.request.model.as_deref()))
                        .filter_map(|model| state.prices.get(model)?.tokens)
                        .map(|price| price.max_output_tokens)
                        .max()
                        .unwrap_or(0);
                    call.estimate().map_or(0, |e| {
                        e.prompt_tokens
                            .saturating_add(e.max_completion_tokens.unwrap_or(most_output))
                    })
                }
                _ => 0,
            };
            state
                .upstream
                .send_routed(&call.targets, call.pool.as_deref(), tokens, request)
                .await
        }
    };
    call.facts.set_upstream_wait(upstream_started.elapsed());
    let Routed {
        response: upstream,
        target,
        busy,
    } = sent?;
    call.reservations.hold_deployment(busy);
    call.answered = upstream.status().is_success();
    call.facts.upstream = Some(state.upstream.name_of(target.endpoint));
    if let Some(model) = target.model {
        call.facts.model_used = Some(model.to_string());
        call.request.model = Some(model.to_string());
    }
    Ok(Forwarded {
        upstream,
        upstream_started,
        answer_started: if streamed_body {
            Instant::now()
        } else {
            call.started
        },
    })
}
