//! The mock's own rate limit (`mock-upstream --requests-per-minute N`): like OpenAI, every
//! answer carries `x-ratelimit-{limit,remaining,reset}-requests`, and a request over the limit
//! gets a 429 with `retry-after-ms`. A fixed one-minute window (OpenAI refills continuously;
//! the headers' meaning is the same).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

/// Requests counted in the current window.
#[derive(Debug)]
pub struct Window {
    limit: u64,
    state: Mutex<(Instant, u64)>,
}

/// What a request found: the headers to send, and whether it is over the limit.
pub struct Admission {
    pub headers: HeaderMap,
    pub refused: bool,
    pub retry_after: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Window {
    /// A window of `limit` requests a minute.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            state: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Counts one request (unless it is over the limit) and says what to answer with.
    pub fn admit(&self) -> Admission {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.duration_since(state.0) >= MINUTE {
            *state = (now, 0);
        }
        let refused = state.1 >= self.limit;
        if !refused {
            state.1 += 1;
        }
        let reset = MINUTE.saturating_sub(now.duration_since(state.0));
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        set("x-ratelimit-limit-requests", self.limit.to_string());
        set(
            "x-ratelimit-remaining-requests",
            (self.limit - state.1.min(self.limit)).to_string(),
        );
        set(
            "x-ratelimit-reset-requests",
            format!("{}ms", reset.as_millis()),
        );
        if refused {
            set("retry-after-ms", reset.as_millis().to_string());
        }
        Admission {
            headers,
            refused,
            retry_after: reset,
        }
    }
}
