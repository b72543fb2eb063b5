//! A Realtime session once open: the caller's socket and the upstream's, relayed both ways
//! until either closes, each response accounted as it ends.
//!
//! What the gateway does to the traffic:
//! - the caller's `session.update` may not switch the model (the model was checked and priced
//!   at the start) nor turn on input transcription with a model the caller may not use, or at
//!   all under a budget (transcription is billed apart from any response's usage, so a budget
//!   could not hold it); a budgeted caller's out-of-band `response.create`
//!   (`conversation: "none"`, which may run beside another response) is refused too, so one
//!   response at a time runs under the hold. A refused event is answered with an `error`
//!   event and not sent on; binary frames likewise (Realtime events are JSON text);
//! - each `response.done` is priced, recorded, and charged ([`Session::account`]);
//! - the session ends when either side closes, when either side does not take a message
//!   within the stream idle timeout (a reader that stopped reading), when nothing passes
//!   either way for [`SESSION_IDLE`], after [`SESSION_MAX`] (OpenAI's own limit), or when the
//!   gateway drains.
//!
//! A response under way when the session ends (the caller left mid-answer) ran upstream at a
//! cost nobody reported: its record is estimated at what the budget held, which it keeps.
//! The session keeps its connection's place under `server.max_connections_per_ip`.

use std::time::Duration;

use axum::http::request::Parts;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

mod accounting;

use super::events::{ClientEvent, ServerEvent, Unreadable, error_event};
use crate::budget::BudgetLine;
use crate::error::GatewayError;
use crate::identity::Principal;
use crate::pipeline::{Call, Reservations, budget};
use crate::pricing::Nanos;
use crate::records::CallFacts;
use crate::server::{ConnectionSlot, Slot};
use crate::state::AppState;
use crate::upstream::{RealtimeSocket, Target, realtime_socket_config};

/// Nothing either way for this long ends a session (a caller that vanished without closing).
pub const SESSION_IDLE: Duration = Duration::from_secs(600);

/// The longest a session lasts (OpenAI ends its own at 60 minutes).
pub const SESSION_MAX: Duration = Duration::from_secs(3600);

/// Sends `message`, unless the other side does not take it within `limit`: `false` when it
/// could not be sent.
async fn send_within<S>(sink: &mut S, message: Message, limit: Duration) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    matches!(
        tokio::time::timeout(limit, sink.send(message)).await,
        Ok(Ok(()))
    )
}

/// How the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The caller closed, or went away.
    ClientLeft,
    /// The upstream closed, or its socket broke.
    UpstreamEnded,
    /// The gateway ended it: budget or token limit spent, idle, too long, or draining.
    Stopped,
}

/// One open session: who, what it holds, and what each response's record starts from.
pub struct Session {
    state: AppState,
    principal: Principal,
    reservations: Reservations,
    /// The record every response starts from: caller, key, user, model, upstream.
    facts: CallFacts,
    request_id: String,
    route: String,
    /// The model the caller named, and the one sent upstream (an alias's target).
    requested: String,
    sent: String,
    /// The snapshot serving it, as `session.created` says.
    serving: Option<String>,
    /// The budgets that apply when nothing could be held at the start (`fail_open`): each
    /// response is still charged to them once its cost is known.
    unheld_lines: Vec<BudgetLine>,
    /// A response's cost the budgets had no room for beside the hold: paid out of the hold
    /// when the session ends.
    owed: Option<Nanos>,
    /// Responses begun and not yet done, and when the oldest began (Unix ms, and for latency).
    open_responses: u32,
    response_began: Option<(i64, Instant)>,
    /// The caller's place under `server.max_connections_per_ip`, kept while the session lasts.
    _connection: Option<Slot>,
}

impl Session {
    /// Takes over what `call` holds (its rate-limit charge and budget hold) for the session.
    pub fn new(call: &mut Call, state: &AppState, parts: &Parts, target: &Target) -> Self {
        let requested = call.request.model.clone().unwrap_or_default();
        let sent = target
            .model
            .as_deref()
            .map_or_else(|| requested.clone(), str::to_owned);
        let reservations = call.reservations.take();
        let unheld_lines = match reservations.budget_held() {
            Some(_) => Vec::new(),
            None => budget::lines_for(state, &call.principal),
        };
        Self {
            state: state.clone(),
            principal: call.principal.clone(),
            unheld_lines,
            owed: None,
            _connection: parts
                .extensions
                .get::<ConnectionSlot>()
                .and_then(ConnectionSlot::take),
            reservations,
            facts: call.facts.clone(),
            request_id: parts
                .extensions
                .get::<crate::middleware::request_id::RequestId>()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            route: parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map_or_else(|| "/v1/realtime".to_owned(), |p| p.as_str().to_owned()),
            requested,
            sent,
            serving: None,
            open_responses: 0,
            response_began: None,
        }
    }

    /// Waits for the caller's `101` to complete, then relays until the session ends, and
    /// settles what it still holds.
    pub async fn run(mut self, upgrade: hyper::upgrade::OnUpgrade, upstream: RealtimeSocket) {
        let end = match upgrade.await {
            Ok(upgraded) => {
                let caller = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(realtime_socket_config()),
                )
                .await;
                self.relay(caller, upstream).await
            }
            Err(_) => End::ClientLeft,
        };
        metrics::counter!("tollgate_realtime_sessions_total", "end" => match end {
            End::ClientLeft => "client_left",
            End::UpstreamEnded => "upstream_ended",
            End::Stopped => "stopped",
        })
        .increment(1);
        self.finish(end).await;
    }

    async fn relay(&mut self, caller: RealtimeSocket, upstream: RealtimeSocket) -> End {
        let (mut to_caller, mut from_caller) = caller.split();
        let (mut to_upstream, mut from_upstream) = upstream.split();
        // A side that stops reading must not hold the session: a send it does not take within
        // the stream idle timeout ends it.
        let limit = self.state.upstream.idle_timeout;
        let started = Instant::now();
        let mut last_seen = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stop = loop {
            tokio::select! {
                message = from_caller.next() => {
                    last_seen = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => match self.check(&text) {
                            Ok(()) => {
                                if !send_within(&mut to_upstream, Message::Text(text), limit).await {
                                    break Err(End::UpstreamEnded);
                                }
                            }
                            Err(refusal) => {
                                if !send_within(&mut to_caller, Message::text(refusal), limit).await {
                                    break Err(End::ClientLeft);
                                }
                            }
                        },
                        Some(Ok(Message::Binary(_))) => {
                            let refusal = GatewayError::invalid(
                                "Realtime events are JSON text frames; a binary frame was not sent on.",
                                None,
                            );
                            let refusal = Message::text(error_event(&refusal.body(), None));
                            if !send_within(&mut to_caller, refusal, limit).await {
                                break Err(End::ClientLeft);
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            send_within(&mut to_upstream, Message::Close(frame), limit).await;
                            break Err(End::ClientLeft);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break Err(End::ClientLeft),
                    }
                }
                message = from_upstream.next() => {
                    last_seen = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            let verdict = self.observe(&text).await;
                            let text = match verdict {
                                // An upstream's error may quote what it was sent: no key of
                                // the gateway's leaves in it.
                                Ok(Observed::Error) => self.state.upstream.scrub_text(text),
                                _ => text,
                            };
                            if !send_within(&mut to_caller, Message::Text(text), limit).await {
                                break Err(End::ClientLeft);
                            }
                            if let Err(error) = verdict {
                                break Ok(error);
                            }
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            if !send_within(&mut to_caller, Message::Binary(bytes), limit).await {
                                break Err(End::ClientLeft);
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let frame = frame.map(|frame| CloseFrame {
                                code: frame.code,
                                reason: self.state.upstream.scrub_text(frame.reason),
                            });
                            send_within(&mut to_caller, Message::Close(frame), limit).await;
                            break Err(End::UpstreamEnded);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break Ok(GatewayError::UpstreamFailed {
                            detail: "the Realtime socket broke".to_owned(),
                        }),
                    }
                }
                _ = tick.tick() => {
                    if self.state.tasks.is_closed() {
                        break Ok(GatewayError::Unavailable { what: "session (the gateway is restarting)" });
                    }
                    if last_seen.elapsed() >= SESSION_IDLE || started.elapsed() >= SESSION_MAX {
                        break Ok(GatewayError::invalid(
                            "The session ended: it was idle too long, or reached its longest duration.",
                            None,
                        ));
                    }
                }
            }
        };
        match stop {
            Err(end) => end,
            // The gateway ends it: the upstream first (nothing more may start there), then
            // the caller is told why.
            Ok(error) => {
                let broke = matches!(error, GatewayError::UpstreamFailed { .. });
                if !broke {
                    let cancel = Message::text(r#"{"type":"response.cancel"}"#);
                    send_within(&mut to_upstream, cancel, limit).await;
                    send_within(&mut to_upstream, Message::Close(None), limit).await;
                }
                let code = if broke {
                    CloseCode::Error
                } else {
                    CloseCode::Policy
                };
                let body = error.body();
                send_within(
                    &mut to_caller,
                    Message::text(error_event(&body, None)),
                    limit,
                )
                .await;
                let reason: String = body.code.unwrap_or("session_ended").to_owned();
                let close = Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }));
                send_within(&mut to_caller, close, limit).await;
                if broke {
                    End::UpstreamEnded
                } else {
                    End::Stopped
                }
            }
        }
    }

    /// Whether a budget applies: held, or unheld when its backend failed open at the start
    /// (the hold stays in place until the session ends).
    fn budgeted(&self) -> bool {
        self.reservations.budget_held().is_some() || !self.unheld_lines.is_empty()
    }

    /// A caller's event: `Ok` to send it on, or the `error` event refusing it.
    fn check(&self, text: &str) -> Result<(), String> {
        let event = match ClientEvent::checked(text) {
            Ok(None) => return Ok(()),
            Ok(Some(event)) => event,
            Err(Unreadable) => {
                let error = GatewayError::invalid(
                    "This event could not be read plainly (a field given twice, of the wrong \
                     type, or broken JSON), so it was not sent on.",
                    None,
                );
                return Err(error_event(&error.body(), None));
            }
        };
        let refusal = if event.is_session_update() {
            self.refuse_update(&event)
        } else if self.budgeted() && event.is_out_of_band() {
            Some(GatewayError::PermissionDenied {
                message: "This session is held to a budget, which covers one response at a \
                          time: out-of-band responses (`conversation: \"none\"`) are not sent on."
                    .to_owned(),
            })
        } else {
            None
        };
        match refusal {
            None => Ok(()),
            Some(error) => Err(error_event(&error.body(), event.event_id.as_deref())),
        }
    }

    /// Why a `session.update` may not go on, if it may not.
    fn refuse_update(&self, update: &ClientEvent<'_>) -> Option<GatewayError> {
        if let Some(model) = update.model() {
            let same = model == self.requested
                || model == self.sent
                || self.serving.as_deref() == Some(model);
            if !same {
                return Some(GatewayError::invalid(
                    format!(
                        "A session keeps the model it was opened with (`{}`): open a new session \
                         for another.",
                        self.requested
                    ),
                    Some("session.model".to_owned()),
                ));
            }
        }
        for transcriber in update.transcriptions() {
            if self.budgeted() {
                return Some(GatewayError::PermissionDenied {
                    message: "Input transcription is billed apart from the responses' usage, so \
                              it cannot be held to this session's budget."
                        .to_owned(),
                });
            }
            let refusal = match transcriber {
                Some(model) => self.principal.authorize_model(model).err(),
                // The upstream's default model could be one the key may not use.
                None if !self.principal.models.is_empty() => Some(GatewayError::invalid(
                    "Name the transcription model: this key may use only certain models.",
                    Some("session.audio.input.transcription.model".to_owned()),
                )),
                None => None,
            };
            if refusal.is_some() {
                return refusal;
            }
        }
        None
    }

    /// An upstream event: notes what it says of the session; at a response's end, accounts
    /// for it. `Err`: the session must end (after the event is relayed).
    async fn observe(&mut self, text: &str) -> Result<Observed, GatewayError> {
        match ServerEvent::of(text) {
            ServerEvent::SessionCreated { model } => {
                if model.is_some() {
                    self.serving = model;
                }
            }
            ServerEvent::ResponseCreated => {
                self.open_responses += 1;
                if self.response_began.is_none() {
                    self.response_began = Some((crate::records::now_ms(), Instant::now()));
                }
            }
            ServerEvent::ResponseDone => self.account(text).await?,
            ServerEvent::Error => return Ok(Observed::Error),
            ServerEvent::Other => {}
        }
        Ok(Observed::Plain)
    }
}

/// What an upstream event is to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    /// An `error` event: scrubbed before it is relayed.
    Error,
    /// Anything else: relayed as it came.
    Plain,
}
