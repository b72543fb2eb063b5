//! One deployment's live state: whether it is cooling down, how busy it is, and how much of
//! its upstream rate limit its last answer said was left.
//!
//! Times are milliseconds on this process's monotonic clock ([`now_ms`]); what is shared with
//! other replicas travels as durations ("cooling for 1,200 ms"), so clocks never need to agree.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// Headroom when nothing is known: all of it.
pub const FULL: u32 = 1000;

/// Below this share of its limit (per mille) a deployment counts as running dry and is
/// skipped until its limit resets.
pub const DRY: u32 = 50;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since this process first asked (never 0, so 0 can mean "not set").
pub fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// The live state of one deployment (`upstream/model`), shared by every pool that names it and
/// kept across reloads.
#[derive(Debug, Default)]
pub struct DeploymentState {
    /// Skipped until then (ms on [`now_ms`]'s clock; 0: not cooling).
    cooling_until_ms: AtomicU64,
    /// When the cooldown in force began: only a call sent after it can end it early.
    cooled_at_ms: AtomicU64,
    /// Failures that do not cool at once (5xx, 401/403), counted in the current minute.
    failures: AtomicU32,
    /// When that minute began.
    failures_since_ms: AtomicU64,
    /// Calls sent to it whose answer has not ended.
    in_flight: AtomicU32,
    /// What its last answer said is left of its rate limit, per mille of the limit.
    headroom: AtomicU32,
    /// Until then `headroom` holds (the limit's reset); after it, the limit is full again.
    headroom_until_ms: AtomicU64,
    /// Set by a change other replicas have not been told of yet.
    unpublished: std::sync::atomic::AtomicBool,
}

impl DeploymentState {
    /// Whether it is cooling down at `now`.
    pub fn cooling(&self, now: u64) -> bool {
        self.cooling_until_ms.load(Ordering::Relaxed) > now
    }

    /// When its cooldown ends (0 when it is not cooling).
    pub fn cooling_until(&self) -> u64 {
        self.cooling_until_ms.load(Ordering::Relaxed)
    }

    /// Skips it for `period` from now (a longer cooldown already set stands).
    pub fn cool_down(&self, period: Duration) {
        let now = now_ms();
        let until = now + u64::try_from(period.as_millis()).unwrap_or(u64::MAX / 2);
        if self.cooling_until_ms.fetch_max(until, Ordering::Relaxed) < until {
            self.cooled_at_ms.store(now, Ordering::Relaxed);
            self.unpublished.store(true, Ordering::Relaxed);
        }
    }

    /// Counts a failure that cools only when repeated: `true` once `allowed` have already
    /// been counted within the minute (the counter then starts again).
    pub fn failed_again(&self, allowed: u32) -> bool {
        let now = now_ms();
        let since = self.failures_since_ms.load(Ordering::Relaxed);
        if since == 0 || now.saturating_sub(since) >= 60_000 {
            self.failures_since_ms.store(now, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.failures.fetch_add(1, Ordering::Relaxed) >= allowed {
            self.failures.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Ends a cooldown early: a call sent at `sent_ms`, after the cooldown began, was
    /// answered (an answer to a call sent before it says nothing about the deployment now).
    /// Only this replica's view changes: the others' cooldowns run out on their own.
    pub fn recovered(&self, sent_ms: u64) {
        // Read first: the common case (not cooling) writes nothing to a shared cache line.
        if self.cooling_until_ms.load(Ordering::Relaxed) != 0
            && self.cooled_at_ms.load(Ordering::Relaxed) <= sent_ms
        {
            self.cooling_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Its headroom at `now`, per mille ([`FULL`] once the limit has reset or when unknown).
    pub fn headroom(&self, now: u64) -> u32 {
        if self.headroom_until_ms.load(Ordering::Relaxed) > now {
            self.headroom.load(Ordering::Relaxed)
        } else {
            FULL
        }
    }

    /// Notes what an answer's `x-ratelimit-*` headers say is left.
    pub fn observe_headroom(&self, headers: &HeaderMap) {
        if let Some((share, reset)) = Headroom::read(headers) {
            self.set_headroom(share, now_ms() + reset);
        }
    }

    fn set_headroom(&self, share: u32, until: u64) {
        let before = self.headroom(now_ms());
        self.headroom.store(share, Ordering::Relaxed);
        self.headroom_until_ms.store(until, Ordering::Relaxed);
        // Tell the others when it moved by a twentieth or crossed into running dry.
        if before.abs_diff(share) >= 50 || (share < DRY) != (before < DRY) {
            self.unpublished.store(true, Ordering::Relaxed);
        }
    }

    /// Counts a call in flight until the returned guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// What other replicas should know, if anything changed since the last call.
    pub fn take_unpublished(&self, now: u64) -> Option<Shared> {
        self.unpublished
            .swap(false, Ordering::Relaxed)
            .then(|| self.shared(now))
    }

    /// Marks the state as not yet told to the others (a publish failed).
    pub fn mark_unpublished(&self) {
        self.unpublished.store(true, Ordering::Relaxed);
    }

    /// The state as durations from `now`.
    pub fn shared(&self, now: u64) -> Shared {
        let until = self.headroom_until_ms.load(Ordering::Relaxed);
        Shared {
            cooling_ms: self.cooling_until().saturating_sub(now),
            headroom: (until > now).then(|| (self.headroom.load(Ordering::Relaxed), until - now)),
        }
    }

    /// Takes in what another replica saw: a longer cooldown, a fresher headroom reading.
    pub fn merge(&self, shared: &Shared, now: u64) {
        if shared.cooling_ms > 0 {
            self.cooling_until_ms
                .fetch_max(now + shared.cooling_ms, Ordering::Relaxed);
        }
        if let Some((share, for_ms)) = shared.headroom {
            self.headroom.store(share.min(FULL), Ordering::Relaxed);
            self.headroom_until_ms
                .store(now + for_ms, Ordering::Relaxed);
        }
    }
}

/// A deployment's state as replicas tell each other: durations, not instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shared {
    /// How much longer it is cooling down (0: it is not).
    pub cooling_ms: u64,
    /// Its headroom per mille, and for how much longer that reading holds.
    pub headroom: Option<(u32, u64)>,
}

/// One call in flight to a deployment; dropping it ends the call (a stream holds it to its end).
#[derive(Debug)]
pub struct Busy(Arc<DeploymentState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every deployment's state by name, kept across reloads so a reload forgets no cooldown.
#[derive(Debug, Default)]
pub struct Board {
    states: Mutex<std::collections::HashMap<Arc<str>, Arc<DeploymentState>>>,
}

impl Board {
    /// The state of `deployment`, created on first use (at start or reload, not per request).
    pub fn state(&self, deployment: &str) -> Arc<DeploymentState> {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(state) = states.get(deployment) {
            return Arc::clone(state);
        }
        let state = Arc::new(DeploymentState::default());
        states.insert(Arc::from(deployment), Arc::clone(&state));
        state
    }

    /// Every deployment known, with its state.
    pub fn all(&self) -> Vec<(Arc<str>, Arc<DeploymentState>)> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, state)| (Arc::clone(name), Arc::clone(state)))
            .collect()
    }
}

/// Each limit's headers: its size, what is left, and when it resets.
const HEADROOM_HEADERS: [(&str, &str, &str); 2] = [
    (
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ),
    (
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ),
];

/// What `x-ratelimit-*` headers say is left: the smaller share of requests and tokens, per
/// mille, and when that share's limit resets.
struct Headroom;

impl Headroom {
    /// Reads OpenAI's headers (`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`);
    /// Azure sends only the `remaining` ones, which count for nothing without a limit.
    fn read(headers: &HeaderMap) -> Option<(u32, u64)> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        let reset = |name: &str| headers.get(name)?.to_str().ok().and_then(parse_reset);
        HEADROOM_HEADERS
            .iter()
            .filter_map(|(limit, remaining, reset_in)| {
                let limit = number(limit)?;
                let remaining = number(remaining)?;
                if limit == 0 {
                    return None;
                }
                let share = u32::try_from(
                    u128::from(remaining.min(limit)) * u128::from(FULL) / u128::from(limit),
                )
                .unwrap_or(FULL);
                // Without a reset time the reading holds a second.
                let reset_ms = reset(reset_in).unwrap_or(1000);
                Some((share, reset_ms.min(60_000)))
            })
            .min_by_key(|(share, _)| *share)
    }
}

/// OpenAI's reset durations: `6ms`, `1.5s`, `2m0s`, `1h2m3.5s`; milliseconds.
fn parse_reset(text: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('s') {
            (1000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else if rest.starts_with('h') {
            (3_600_000.0, 1)
        } else {
            return None;
        };
        total += value * unit_ms;
        rest = &rest[len..];
    }
    total.is_finite().then(|| total.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_read_as_openai_writes_them() {
        assert_eq!(parse_reset("6ms"), Some(6));
        assert_eq!(parse_reset("1.5s"), Some(1500));
        assert_eq!(parse_reset("2m0s"), Some(120_000));
        assert_eq!(parse_reset("1h2m3.5s"), Some(3_723_500));
        assert_eq!(parse_reset(""), None);
        assert_eq!(parse_reset("5"), None);
        assert_eq!(parse_reset("5x"), None);
    }

    #[test]
    fn headroom_is_the_scarcer_of_requests_and_tokens() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-ratelimit-limit-requests", "1000"),
            ("x-ratelimit-remaining-requests", "900"),
            ("x-ratelimit-reset-requests", "60ms"),
            ("x-ratelimit-limit-tokens", "100000"),
            ("x-ratelimit-remaining-tokens", "2000"),
            ("x-ratelimit-reset-tokens", "7s"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        assert_eq!(Headroom::read(&headers), Some((20, 7000)));
        headers.remove("x-ratelimit-limit-tokens");
        assert_eq!(Headroom::read(&headers), Some((900, 60)));
        assert_eq!(Headroom::read(&HeaderMap::new()), None);
    }

    #[test]
    fn a_cooldown_ends_when_it_says_and_the_longer_one_stands() {
        let state = DeploymentState::default();
        let now = now_ms();
        assert!(!state.cooling(now));
        state.cool_down(Duration::from_secs(10));
        state.cool_down(Duration::from_secs(1));
        assert!(state.cooling(now + 9_000));
        assert!(!state.cooling(now + 11_000));
        assert!(state.take_unpublished(now).is_some());
        assert!(state.take_unpublished(now).is_none());
        state.recovered(now - 1);
        assert!(
            state.cooling(now_ms()),
            "an answer to a call sent before the cooldown"
        );
        state.recovered(now_ms());
        assert!(!state.cooling(now_ms()));
        assert!(
            state.take_unpublished(now).is_none(),
            "a recovery is not published"
        );
    }

    #[test]
    fn repeated_failures_cool_only_past_the_allowance() {
        let state = DeploymentState::default();
        assert!(!state.failed_again(2));
        assert!(!state.failed_again(2));
        assert!(state.failed_again(2));
        assert!(!state.failed_again(2), "counted afresh");
    }

    #[test]
    fn a_huge_limit_header_does_not_overflow() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-limit-tokens",
            u64::MAX.to_string().parse().unwrap(),
        );
        headers.insert(
            "x-ratelimit-remaining-tokens",
            u64::MAX.to_string().parse().unwrap(),
        );
        assert_eq!(Headroom::read(&headers), Some((FULL, 1000)));
    }

    #[test]
    fn another_replicas_reading_is_taken_in_as_durations() {
        let here = DeploymentState::default();
        let there = DeploymentState::default();
        there.cool_down(Duration::from_millis(2_000));
        there.set_headroom(30, now_ms() + 5_000);
        let now = now_ms();
        here.merge(&there.shared(now), now);
        assert!(here.cooling(now + 1_500));
        assert!(!here.cooling(now + 2_500));
        assert_eq!(here.headroom(now + 4_000), 30);
        assert_eq!(here.headroom(now + 6_000), FULL);
    }

    #[test]
    fn busy_counts_until_dropped() {
        let state = Arc::new(DeploymentState::default());
        let first = state.busy();
        let second = state.busy();
        assert_eq!(state.in_flight(), 2);
        drop(first);
        drop(second);
        assert_eq!(state.in_flight(), 0);
    }
}
