//! One log line per failing thing per interval: a backend that fails for every request (Redis
//! down under load) writes a line every [`EVERY`] with how many it held back, not one per
//! request — thousands of identical lines bury the rest of the log and cost the CPU the
//! requests need. Metrics still count every failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// At most one line per this long from each throttle.
pub const EVERY: Duration = Duration::from_secs(10);

/// A call site's throttle, usually a `static`.
#[derive(Debug, Default)]
pub struct LogThrottle {
    /// When a line last went out, Unix ms (0: never).
    last_ms: AtomicU64,
    /// Lines held back since.
    held_back: AtomicU64,
}

impl LogThrottle {
    /// A throttle that has let nothing through yet.
    pub const fn new() -> Self {
        Self {
            last_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(held back)` when a line may be written now (how many were held back since the last
    /// one); `None` when it is to be held back.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(crate::records::now_ms().try_into().unwrap_or(0))
    }

    /// [`Self::allow`] at `now_ms`.
    pub fn allow_at(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Acquire);
        let every = u64::try_from(EVERY.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now_ms.saturating_sub(last) < every
            || self
                .last_ms
                .compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_what_was_held_back() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.allow_at(1_000), Some(0));
        for at in 1_001..1_100 {
            assert_eq!(throttle.allow_at(at), None);
        }
        assert_eq!(throttle.allow_at(10_999), None);
        assert_eq!(
            throttle.allow_at(11_000),
            Some(100),
            "the next line counts the rest"
        );
        assert_eq!(throttle.allow_at(11_001), None);
        assert_eq!(throttle.allow_at(30_000), Some(1));
    }
}
