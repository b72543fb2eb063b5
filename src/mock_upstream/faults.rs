//! Scripted faults: what the mock does wrong, and for how many answers.
//!
//! `POST /_mock/faults` takes one fault object or an array of them; each applies to the next
//! `count` (default 1) answers, in order. Fields (all optional, combinable):
//!
//! | field | effect |
//! | --- | --- |
//! | `status`, `message`, `code`, `type` | answer with this status and OpenAI's error body |
//! | `retry_after` | `Retry-After` header (seconds, as given) |
//! | `retry_after_ms` | OpenAI's `retry-after-ms` header |
//! | `latency_ms` | wait this long before answering |
//! | `cut_after_events` | streams: send this many events, then break the connection; JSON: send half the body, then break |
//! | `stall_ms` | streams: pause this long after the first event |
//! | `stream_interval_ms` | streams: pause this long between events |
//! | `malformed` | answer 200 with a body that is not valid JSON (or SSE with garbage data) |
//! | `no_usage` | answer without `usage` (an upstream that does not report it) |
//! | `usage` | JSON answers: report this `usage` object instead of the answer's own (an upstream that bills more than the request's size suggests) |
//! | `answer_model` | chat and Responses (JSON and SSE): name this model as the one that answered (a dated snapshot, as OpenAI does) |
//! | `echo_authorization` | quote the `Authorization` (with `--azure`: the `api-key`) received in the error message and in the `x-request-id`, `openai-version` and `content-disposition` headers (an upstream that leaks the key back) |

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Deserialize;

/// One scripted misbehaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default = "one")]
    pub count: u32,
    pub status: Option<u16>,
    pub message: Option<String>,
    pub code: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub retry_after: Option<String>,
    pub retry_after_ms: Option<u64>,
    pub latency_ms: Option<u64>,
    pub cut_after_events: Option<usize>,
    pub stall_ms: Option<u64>,
    pub stream_interval_ms: Option<u64>,
    #[serde(default)]
    pub malformed: bool,
    #[serde(default)]
    pub echo_authorization: bool,
    #[serde(default)]
    pub no_usage: bool,
    pub usage: Option<serde_json::Value>,
    pub answer_model: Option<String>,
}

fn one() -> u32 {
    1
}

impl Default for Fault {
    /// No misbehaviour, for one answer.
    fn default() -> Self {
        Self {
            count: 1,
            status: None,
            message: None,
            code: None,
            kind: None,
            retry_after: None,
            retry_after_ms: None,
            latency_ms: None,
            cut_after_events: None,
            stall_ms: None,
            stream_interval_ms: None,
            malformed: false,
            echo_authorization: false,
            no_usage: false,
            usage: None,
            answer_model: None,
        }
    }
}

/// One fault or a list, as posted.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FaultsBody {
    Many(Vec<Fault>),
    One(Box<Fault>),
}

/// The queue of pending faults.
#[derive(Debug, Default)]
pub struct FaultQueue {
    pending: Mutex<VecDeque<Fault>>,
}

impl FaultQueue {
    /// Appends faults.
    pub fn push(&self, faults: Vec<Fault>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.extend(faults.into_iter().filter(|f| f.count > 0));
        }
    }

    /// Forgets every pending fault.
    pub fn clear(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.clear();
        }
    }

    /// The fault for the next answer, if any, counting it down.
    pub fn take(&self) -> Option<Fault> {
        let mut pending = self.pending.lock().ok()?;
        let front = pending.front_mut()?;
        front.count -= 1;
        let fault = front.clone();
        if front.count == 0 {
            pending.pop_front();
        }
        Some(fault)
    }

    /// How many answers are still scripted.
    pub fn remaining(&self) -> u64 {
        self.pending
            .lock()
            .map(|p| p.iter().map(|f| u64::from(f.count)).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_apply_in_order_for_their_count() {
        let queue = FaultQueue::default();
        queue.push(vec![
            Fault {
                count: 2,
                status: Some(500),
                ..Fault::default()
            },
            Fault {
                status: Some(429),
                ..Fault::default()
            },
        ]);
        assert_eq!(queue.remaining(), 3);
        assert_eq!(queue.take().unwrap().status, Some(500));
        assert_eq!(queue.take().unwrap().status, Some(500));
        assert_eq!(queue.take().unwrap().status, Some(429));
        assert!(queue.take().is_none());
    }
}
