//! Relaying an SSE stream event by event as it arrives, and accounting for it.
//!
//! A relay task (on the state's task tracker, so shutdown waits for it) reads the upstream's
//! bytes, cuts them into events, forwards each complete event at once, and notes the usage
//! the stream reports. When Tollgate added `stream_options.include_usage` itself, the final
//! usage-only chunk is kept from the caller, who did not ask for it.
//!
//! How a stream ends, and what the caller sees:
//! - upstream sends `[DONE]`: relayed, the stream closes normally;
//! - upstream breaks, closes early or goes silent past the idle timeout: Tollgate sends one
//!   last event, `data: {"error": {...}}` in OpenAI's envelope, and closes without `[DONE]`.
//!   The official SDKs raise on it (Python `openai.APIError`, Node `APIError`), so a cut
//!   stream is never mistaken for a short answer;
//! - the caller disconnects: the relay stops at once and drops the upstream connection, which
//!   cancels the upstream call.

use std::convert::Infallible;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use axum::http::HeaderMap;
use axum::response::Response;

use super::forward::Forwarded;
use super::{Call, ModelRoute, Spend, account, respond};
use crate::openai::sse::Parser;
use crate::openai::usage::{self, Usage};
use crate::pricing::{Asked, Nanos, ServiceTier};
use crate::records::PendingFacts;
use crate::state::AppState;

/// How the relay should treat the events.
pub struct RelayOptions {
    /// Drop the usage-only chunk (Tollgate asked for it, the caller did not).
    pub strip_usage_chunk: bool,
    /// Prices the stream's usage (given the model the stream names, if it does), for the cost
    /// comment sent just before the end.
    pub price: PriceFn,
}

/// Prices a usage for a model name, if the stream names one, on the tier that served it.
pub type PriceFn = Box<dyn Fn(&Usage, Option<&str>, ServiceTier) -> Option<Nanos> + Send>;

/// Content relayed is kept for a broken stream's estimate up to this many bytes of events.
const KEPT_FOR_ESTIMATE: usize = 4 << 20;

/// How a relayed stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// `[DONE]` (or a clean end of a stream that has no such marker) was relayed.
    Completed,
    /// The upstream broke the stream or ended it early.
    UpstreamBroke,
    /// The upstream went silent past the idle timeout.
    IdleTimeout,
    /// The caller went away; the upstream call was cancelled.
    ClientLeft,
}

/// What the relay saw, handed to the accounting that follows the stream.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    pub end: StreamEnd,
    pub usage: Option<Usage>,
    /// The model the stream's chunks name (a Responses stream: its `response`'s, the snapshot
    /// that served it).
    pub model: Option<String>,
    /// The processing tier the stream's chunks name.
    pub service_tier: Option<String>,
    /// The cost sent in the stream's cost comment.
    pub cost: Option<Nanos>,
    /// Events relayed to the caller.
    pub events: u64,
    /// The data of the content events relayed (bounded), kept so that a stream that ends
    /// without usage can be counted; see [`completion_text`].
    pub relayed: Vec<u8>,
}

/// The respond stage for an event stream: starts the relay and returns the caller's response.
/// The stream takes the call's reservations and a copy of its facts; when it ends, its usage
/// (reported, or estimated from what was relayed) settles them and fulfils the record.
/// `headers` are the upstream's (already copied out by the caller).
pub fn respond(
    call: &mut Call,
    state: &AppState,
    forwarded: Forwarded,
    headers: &HeaderMap,
) -> Response {
    let route = call.route;
    let prices = state.prices.clone();
    let asked = call.request.model.clone();
    let audio = call.request.audio;
    let options = RelayOptions {
        strip_usage_chunk: route == ModelRoute::Chat && !call.request.include_usage,
        price: Box::new(move |usage, model, tier| {
            let work = Asked {
                images: None,
                audio: audio.as_ref(),
            };
            prices.cost_at(model.or(asked.as_deref())?, usage, work, tier)
        }),
    };
    let (pending, deliver) = PendingFacts::new();
    let mut reservations = call.reservations.take();
    let mut limit_headers = HeaderMap::new();
    reservations.write_headers(&mut limit_headers);
    let mut facts = call.facts.clone();
    let request = std::mem::take(&mut call.request);
    let prompt = call.json.take();
    let task_state = state.clone();
    let upstream_started = forwarded.upstream_started;
    let on_done = move |outcome: StreamOutcome| {
        tracing::debug!(route = route.label(), end = ?outcome.end, events = outcome.events, "stream finished");
        // The account step: the stream's own usage, or an estimate of what it relayed.
        let mut accounting = account::stream(&task_state.prices, route, &request, prompt, &outcome);
        // No cost known (an unpriced answer, a stream cut before its usage with nothing to
        // count): it was served, so it keeps what was held, as a plain call does, and its
        // record says so (a budget seeded from the records after a restart then agrees).
        let spend = accounting.cost.map_or(Spend::Unknown, Spend::Cost);
        if accounting.cost.is_none()
            && let Some(held) = reservations.budget_held()
        {
            accounting.cost = Some(held);
            accounting.estimated = true;
        }
        reservations.settle(Some(accounting.usage.total_tokens()), spend);
        facts.outcome = match outcome.end {
            StreamEnd::Completed => None,
            StreamEnd::ClientLeft => Some("client_left"),
            StreamEnd::UpstreamBroke | StreamEnd::IdleTimeout => Some("stream_broken"),
        };
        facts.upstream_ms =
            Some(i64::try_from(upstream_started.elapsed().as_millis()).unwrap_or(i64::MAX));
        facts.apply(accounting);
        facts.count_usage(route.label());
        let _ = deliver.send(facts);
    };
    let status = forwarded.upstream.status();
    let body = relay(
        state,
        forwarded.upstream,
        forwarded.answer_started + state.upstream.first_byte_timeout,
        options,
        on_done,
    );
    let mut response = respond::from_upstream(status, headers, body);
    response.headers_mut().extend(limit_headers);
    response.extensions_mut().insert(pending);
    response
}

/// Starts relaying `upstream` and returns the caller's response body. `on_done` runs once the
/// stream is over, whether or not the caller stayed.
pub fn relay(
    state: &AppState,
    upstream: crate::upstream::UpstreamResponse,
    first_event_deadline: Instant,
    options: RelayOptions,
    on_done: impl FnOnce(StreamOutcome) + Send + 'static,
) -> Body {
    let (sender, mut receiver) = mpsc::channel::<Bytes>(32);
    let idle_timeout = state.upstream.idle_timeout;
    state.tasks.spawn(async move {
        let outcome = pump(
            upstream,
            sender,
            first_event_deadline,
            idle_timeout,
            options,
        )
        .await;
        on_done(outcome);
    });
    Body::from_stream(futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, Infallible>))
    }))
}

async fn pump(
    upstream: crate::upstream::UpstreamResponse,
    sender: mpsc::Sender<Bytes>,
    first_event_deadline: Instant,
    idle_timeout: std::time::Duration,
    options: RelayOptions,
) -> StreamOutcome {
    let mut bytes = http_body_util::BodyDataStream::new(upstream.into_body());
    let mut parser = Parser::default();
    let mut outcome = StreamOutcome {
        end: StreamEnd::Completed,
        usage: None,
        model: None,
        service_tier: None,
        cost: None,
        events: 0,
        relayed: Vec::new(),
    };
    let mut saw_done = false;
    let mut deadline = first_event_deadline;
    loop {
        let next = tokio::select! {
            biased;
            () = sender.closed() => {
                outcome.end = StreamEnd::ClientLeft;
                return outcome;
            }
            next = tokio::time::timeout_at(deadline, bytes.next()) => next,
        };
        let chunk = match next {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) if saw_done => return outcome,
            Ok(None) | Ok(Some(Err(_))) => {
                outcome.end = StreamEnd::UpstreamBroke;
                let _ = sender
                    .send(error_event(
                        "The upstream provider ended the stream unexpectedly.",
                        "stream_interrupted",
                    ))
                    .await;
                return outcome;
            }
            Err(_elapsed) => {
                outcome.end = StreamEnd::IdleTimeout;
                let _ = sender
                    .send(error_event(
                        "The upstream provider stopped sending; the stream timed out.",
                        "stream_timeout",
                    ))
                    .await;
                return outcome;
            }
        };
        deadline = Instant::now() + idle_timeout;
        parser.push(&chunk);
        let mut out = BytesMut::new();
        while let Some(event) = parser.next_event() {
            let mut terminal = false;
            if event.is_done() {
                saw_done = true;
                // The cost, as a comment the SDKs skip, just before `[DONE]`.
                out.extend_from_slice(&cost_comment(&mut outcome, &options));
            } else if let Some(data) = event.data.as_deref() {
                if worth_parsing(data) {
                    if let Ok(peek) = serde_json::from_str::<EventPeek<'_>>(data) {
                        terminal = peek.is_terminal();
                        saw_done |= terminal;
                        let usage_only = peek.is_usage_only();
                        if let Some(model) = peek.model() {
                            outcome.model = Some(model.to_owned());
                        }
                        if let Some(tier) = peek.service_tier() {
                            outcome.service_tier = Some(tier.to_owned());
                        }
                        if let Some(found) = peek.usage() {
                            outcome.usage = Some(found);
                        }
                        if options.strip_usage_chunk && usage_only {
                            continue;
                        }
                    }
                } else if outcome.relayed.len() + data.len() < KEPT_FOR_ESTIMATE {
                    outcome.relayed.extend_from_slice(data.as_bytes());
                    outcome.relayed.push(b'\n');
                }
            }
            outcome.events += 1;
            out.extend_from_slice(&event.raw);
            if terminal {
                // A Responses stream has no `[DONE]`: the cost follows its last event.
                out.extend_from_slice(&cost_comment(&mut outcome, &options));
            }
        }
        // A client that stops reading for as long as an upstream may stay silent has left:
        // it must not hold this task and the upstream connection.
        if !out.is_empty() {
            let sent = tokio::time::timeout(idle_timeout, sender.send(out.freeze())).await;
            if !matches!(sent, Ok(Ok(()))) {
                outcome.end = StreamEnd::ClientLeft;
                return outcome;
            }
        }
    }
}

/// The SSE comment carrying the stream's cost (`: x-tollgate-cost-usd: 0.000123`), empty when
/// the stream reported no usage or the model is unpriced. Notes the cost in `outcome`.
fn cost_comment(outcome: &mut StreamOutcome, options: &RelayOptions) -> Vec<u8> {
    let Some(usage) = &outcome.usage else {
        return Vec::new();
    };
    let tier = ServiceTier::parse(outcome.service_tier.as_deref());
    outcome.cost = (options.price)(usage, outcome.model.as_deref(), tier);
    outcome.cost.map_or_else(Vec::new, |cost| {
        format!(
            ": x-tollgate-cost-usd: {}\n\n",
            crate::pricing::format_usd(cost)
        )
        .into_bytes()
    })
}

/// The completion text in the content events a stream relayed (chat `delta.content`, Responses
/// `delta`), for counting when the stream reported no usage.
pub fn completion_text(relayed: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Delta {
        #[serde(default)]
        content: Option<String>,
    }
    #[derive(Deserialize)]
    struct Choice {
        #[serde(default)]
        delta: Option<Delta>,
    }
    #[derive(Deserialize)]
    struct Event {
        #[serde(default)]
        choices: Vec<Choice>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        delta: Option<serde_json::Value>,
    }
    let mut text = String::new();
    for line in relayed.split(|b| *b == b'\n') {
        let Ok(event) = serde_json::from_slice::<Event>(line) else {
            continue;
        };
        for choice in event.choices {
            if let Some(content) = choice.delta.and_then(|d| d.content) {
                text.push_str(&content);
            }
        }
        if event.kind.as_deref() == Some("response.output_text.delta")
            && let Some(serde_json::Value::String(delta)) = event.delta
        {
            text.push_str(&delta);
        }
    }
    text
}

/// Whether an event can carry usage or end a Responses stream. Most events are content deltas
/// with `"usage":null` or no usage at all; they need no JSON parse.
fn worth_parsing(data: &str) -> bool {
    let carries_usage = data.match_indices("\"usage\"").any(|(at, key)| {
        let rest = data[at + key.len()..]
            .trim_start()
            .trim_start_matches(':')
            .trim_start();
        !rest.starts_with("null")
    });
    carries_usage
        || data.contains("\"response.completed\"")
        || data.contains("\"response.failed\"")
        || data.contains("\"response.incomplete\"")
        || data.contains("\"speech.audio.done\"")
        || data.contains("\"transcript.text.done\"")
}

/// The fields of one event's JSON that the relay looks at.
#[derive(Deserialize)]
struct EventPeek<'a> {
    /// Responses API events name themselves (`response.output_text.delta`, ...).
    #[serde(default, borrow, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    service_tier: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    usage: Option<usage::WireUsage>,
    #[serde(default, borrow)]
    response: Option<ResponsePeek<'a>>,
}

/// The `response` a Responses API event carries.
#[derive(Deserialize)]
struct ResponsePeek<'a> {
    #[serde(default)]
    usage: Option<usage::WireUsage>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    service_tier: Option<std::borrow::Cow<'a, str>>,
}

impl EventPeek<'_> {
    /// The model the event names: a chat chunk's own, or a Responses event's response's.
    fn model(&self) -> Option<&str> {
        self.model
            .as_deref()
            .or_else(|| self.response.as_ref()?.model.as_deref())
    }

    /// The tier the event names, as [`Self::model`].
    fn service_tier(&self) -> Option<&str> {
        self.service_tier
            .as_deref()
            .or_else(|| self.response.as_ref()?.service_tier.as_deref())
    }

    /// Chat streams end with `[DONE]`; Responses API, image, speech and transcription streams
    /// with one of these events.
    fn is_terminal(&self) -> bool {
        matches!(
            self.kind.as_deref(),
            Some(
                "response.completed"
                    | "response.failed"
                    | "response.incomplete"
                    | "image_generation.completed"
                    | "image_edit.completed"
                    | "speech.audio.done"
                    | "transcript.text.done"
            )
        )
    }

    /// The chunk OpenAI sends last when `include_usage` is set: no choices, only usage.
    fn is_usage_only(&self) -> bool {
        self.usage.is_some() && self.choices.as_ref().is_some_and(Vec::is_empty)
    }

    fn usage(self) -> Option<Usage> {
        self.usage
            .or_else(|| self.response.and_then(|r| r.usage))
            .map(Usage::from)
    }
}

/// The last event of a broken stream, in OpenAI's error envelope.
fn error_event(message: &str, code: &str) -> Bytes {
    let body = serde_json::json!({
        "error": { "message": message, "type": "upstream_error", "param": null, "code": code }
    });
    Bytes::from(format!("data: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(data: &str) -> EventPeek<'_> {
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn usage_only_chunk_is_recognised() {
        assert!(peek(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#).is_usage_only());
        assert!(!peek(r#"{"choices":[{"delta":{}}],"usage":null}"#).is_usage_only());
    }

    #[test]
    fn only_events_that_matter_are_parsed() {
        assert!(!worth_parsing(
            r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#
        ));
        assert!(worth_parsing(
            r#"{"choices":[],"usage": {"prompt_tokens":1}}"#
        ));
        assert!(worth_parsing(
            r#"{"type":"response.completed","response":{}}"#
        ));
        assert!(!worth_parsing(
            r#"{"type":"response.output_text.delta","delta":"x"}"#
        ));
    }

    #[test]
    fn responses_streams_end_with_their_completed_event() {
        let done = peek(
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":2,"output_tokens":3}}}"#,
        );
        assert!(done.is_terminal());
        assert_eq!(done.usage().map(|u| u.total_tokens()), Some(5));
        assert!(!peek(r#"{"type":"response.output_text.delta","delta":"x"}"#).is_terminal());
    }
}
