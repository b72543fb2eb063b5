//! What every request leaves behind: one log line, the request metrics, and (for API routes)
//! its audit record.
//!
//! The line is written when the response head is ready (for a stream: when it starts), in JSON
//! by `telemetry::write_json_access` (a tracing event when logs are text), with
//! the stable fields `request.id`, `http.method`, `http.path` (the matched route, never the raw
//! query), `http.status`, `duration_ms`, and — when the pipeline knows them — `key.id`,
//! `model` and `error.kind`. Never a header value, a prompt or a completion.
//!
//! The audit record is queued before the response is returned, so a client never holds an
//! answer whose record is not at least in the queue; a stream's record is queued when the
//! stream ends, with its usage. A caller who leaves before the answer still leaves a record
//! (outcome `client_left`): the upstream part of the call runs on and hands its facts to the
//! [`LeftBehind`] slot this layer puts in the request. Open routes (health, metrics), the admin
//! API and the dashboard leave no record.

use futures_util::future::Either;
use opentelemetry::context::FutureExt as _;

use crate::otel::{RequestSpan, stage_in};
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::request_id::RequestId;
use crate::error::ErrorKind;
use crate::records::{CallFacts, LeftBehind, PendingFacts, Record, Recorder, Unanswered};
use crate::telemetry::AccessLine;

/// The layer.
pub async fn observe(
    State(recorder): State<Recorder>,
    mut request: Request,
    next: Next,
) -> Response {
    let seen = Seen {
        started: Instant::now(),
        created_at_ms: crate::records::now_ms(),
        method: request.method().clone(),
        route: request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned()),
        request_id: request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        peer: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    };
    let audited = recorder.enabled() && is_audited(&seen.route);
    // The request's span (traces on, audited routes): its stages run in its context.
    let trace = is_audited(&seen.route)
        .then(|| RequestSpan::start(request.headers(), seen.method.as_str(), &seen.route))
        .flatten();
    let departure = Departure::watch(&mut request, audited.then_some(&recorder), seen);
    let run = next.run(request);
    let mut response = match &trace {
        Some(trace) => Either::Right(run.with_context(trace.context())),
        None => Either::Left(run),
    }
    .await;
    let Some(seen) = departure.stay() else {
        return response;
    };
    let started = seen.started;
    let (method, route, request_id) = (&seen.method, &seen.route, &seen.request_id);
    let duration = started.elapsed();
    let status = response.status().as_u16();
    let facts = response.extensions_mut().remove::<CallFacts>();
    let error_kind = response.extensions().get::<ErrorKind>().map(|k| k.0);
    if tracing::enabled!(tracing::Level::INFO) {
        let line = AccessLine {
            request_id,
            method: method.as_str(),
            path: route,
            status,
            duration,
            key_id: facts.as_ref().and_then(|f| f.key_id.as_deref()),
            model: facts.as_ref().and_then(|f| f.model_requested.as_deref()),
            error_kind,
        };
        if !crate::telemetry::write_json_access(&line) {
            tracing::info!(
                request.id = line.request_id,
                http.method = line.method,
                http.path = line.path,
                http.status = line.status,
                duration_ms = duration.as_secs_f64() * 1000.0,
                key.id = line.key_id,
                model = line.model,
                error.kind = line.error_kind,
                "request"
            );
        }
    }
    let upstream_wait = facts.as_ref().and_then(|f| f.upstream_wait);
    crate::metrics::record_request(
        &crate::metrics::RequestLabels {
            route,
            status,
            model: facts.as_ref().and_then(|f| f.model_label.clone()),
            cache: facts.as_ref().and_then(|f| f.cache_status),
            error: error_kind,
        },
        duration,
        upstream_wait,
    );
    server_timing(&mut response, duration, upstream_wait);

    if !audited {
        // Records off: the span still ends with what the call came to.
        if let Some(trace) = trace {
            trace.note(status, error_kind, facts.as_ref());
            trace.end();
        }
        return response;
    }
    let outcome = outcome_of(status, error_kind);
    let mut draft = seen.draft(status, outcome);
    draft.error_kind = error_kind.map(str::to_owned);
    draft.latency_ms = millis(duration);
    if let Some(trace) = &trace {
        trace.note(status, error_kind, facts.as_ref());
    }
    if let Some(facts) = facts {
        apply(&mut draft, facts, &recorder);
    }
    match response
        .extensions_mut()
        .remove::<PendingFacts>()
        .and_then(|pending| pending.take())
    {
        Some(pending) => {
            let recorder_for_text = recorder.clone();
            recorder.record_after(draft, pending, move |mut record, facts| {
                if let Some(trace) = trace {
                    // A stream's usage is known now, at its end.
                    trace.note(status, error_kind, Some(&facts));
                    trace.end();
                }
                apply(&mut record, facts, &recorder_for_text);
                record.latency_ms = millis(started.elapsed());
                record
            });
        }
        None => match trace {
            Some(trace) => {
                stage_in(&trace.context(), "tollgate.record", recorder.record(draft)).await;
                trace.end();
            }
            None => recorder.record(draft).await,
        },
    }
    response
}

/// What the layer notes of a request before running it.
struct Seen {
    started: Instant,
    created_at_ms: i64,
    method: axum::http::Method,
    route: String,
    request_id: String,
    peer: Option<std::net::IpAddr>,
}

impl Seen {
    /// The request's record as far as the layer knows it.
    fn draft(self, status: u16, outcome: &str) -> Record {
        Record {
            id: uuid::Uuid::now_v7().to_string(),
            created_at_ms: self.created_at_ms,
            request_id: self.request_id,
            method: self.method.to_string(),
            route: self.route,
            status,
            latency_ms: millis(self.started.elapsed()),
            client_ip: self.peer.map(|ip| ip.to_string()),
            caller: "none".to_owned(),
            outcome: outcome.to_owned(),
            ..Record::default()
        }
    }
}

/// A caller's departure, watched while the request runs: dropped before the response exists
/// (the caller left, and the layer's future with it), it queues the record of the call, which
/// waits for what the call's upstream part hands to the [`LeftBehind`] slot.
struct Departure {
    seen: Option<Seen>,
    armed: Option<(Recorder, tokio::sync::oneshot::Receiver<Unanswered>)>,
}

impl Departure {
    /// Puts the slot in `request` when `recorder` is to record it.
    fn watch(request: &mut Request, recorder: Option<&Recorder>, seen: Seen) -> Self {
        let armed = recorder.map(|recorder| {
            let (slot, unanswered) = LeftBehind::new();
            request.extensions_mut().insert(slot);
            (recorder.clone(), unanswered)
        });
        Self {
            seen: Some(seen),
            armed,
        }
    }

    /// The caller stayed: nothing to do on drop; what was seen goes to the normal record.
    fn stay(mut self) -> Option<Seen> {
        self.armed = None;
        self.seen.take()
    }
}

impl Drop for Departure {
    fn drop(&mut self) {
        let (Some((recorder, unanswered)), Some(seen)) = (self.armed.take(), self.seen.take())
        else {
            return;
        };
        // 499: nginx's "client closed request", for a call that never got an answer at all.
        let draft = seen.draft(499, "client_left");
        let recorder_for_facts = recorder.clone();
        recorder.record_after(draft, unanswered, move |mut record, left| {
            record.status = left.status;
            record.error_kind = left.error_kind.map(str::to_owned);
            apply(&mut record, left.facts, &recorder_for_facts);
            record.outcome = "client_left".to_owned();
            record
        });
    }
}

/// `Server-Timing`: the gateway's own time and, when it called one, the upstream's wait, in
/// milliseconds (browsers' dev tools and curl users can see where the time went).
fn server_timing(
    response: &mut Response,
    total: std::time::Duration,
    upstream: Option<std::time::Duration>,
) {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let value = match upstream {
        Some(upstream) => format!(
            "gateway;dur={:.3}, upstream;dur={:.3}",
            ms(total.saturating_sub(upstream)),
            ms(upstream)
        ),
        None => format!("gateway;dur={:.3}", ms(total)),
    };
    if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(axum::http::HeaderName::from_static("server-timing"), value);
    }
}

/// Whether requests to `route` leave an audit record: the API routes do; health, metrics, the
/// admin API, the dashboard and paths matching no route do not.
fn is_audited(route: &str) -> bool {
    !(route == "unmatched"
        || route.starts_with("/health")
        || route == "/metrics"
        || route.starts_with("/admin")
        || route.starts_with("/dashboard"))
}

/// Fills the record from what the pipeline learned.
fn apply(record: &mut Record, facts: CallFacts, recorder: &Recorder) {
    facts.fill(record, recorder.stores_text());
}

/// The outcome a status implies: `ok`, `refused` (Tollgate said no), `upstream_error`, `error`.
fn outcome_of(status: u16, error_kind: Option<&str>) -> &'static str {
    match (status, error_kind) {
        // 101: a Realtime session opened (its responses have records of their own).
        (100..=399, _) => "ok",
        (_, Some(kind)) if kind.starts_with("upstream") => "upstream_error",
        (400..=499, _) => "refused",
        _ => "error",
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
