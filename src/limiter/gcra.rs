//! GCRA, the generic cell rate algorithm: a token bucket kept as one number.
//!
//! A bucket of `limit` per `period` refills continuously: one unit every `period / limit`. Its
//! whole state is the *theoretical arrival time* (TAT): the instant at which the bucket would be
//! full again. Taking `cost` units moves the TAT forward by `cost × period / limit`; the request
//! fits when the new TAT is no more than one `period` ahead of now. There are no windows, so
//! there are no window-edge bursts: a client cannot take `limit` at 0:59 and `limit` at 1:00.
//!
//! All times are integer microseconds. The Redis engine runs the same arithmetic in
//! `redis_gcra.lua`, on Redis's clock; the two are tested against the same cases.

/// A bucket's size and refill period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Units the bucket holds (and refills per period).
    pub limit: u64,
    /// Microseconds to refill from empty to full.
    pub period_us: u64,
}

/// A bucket after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the cost fit (and was taken).
    pub allowed: bool,
    /// The TAT to store (unchanged when refused).
    pub tat_us: u64,
    /// Units left after this decision.
    pub remaining: u64,
    /// Microseconds until the bucket is full again.
    pub reset_us: u64,
    /// When refused: microseconds until this cost would fit.
    pub retry_after_us: u64,
}

impl Quota {
    /// Microseconds of TAT that `cost` units occupy.
    pub fn increment_us(&self, cost: u64) -> u64 {
        let increment =
            u128::from(self.period_us) * u128::from(cost) / u128::from(self.limit.max(1));
        u64::try_from(increment).unwrap_or(u64::MAX)
    }

    /// Whether `cost` can ever fit in this bucket.
    pub fn can_ever_fit(&self, cost: u64) -> bool {
        cost <= self.limit
    }

    /// Decides whether `cost` units fit at `now_us`, given the stored TAT (0 when absent).
    pub fn decide(&self, stored_tat_us: u64, now_us: u64, cost: u64) -> Outcome {
        let tat = stored_tat_us.max(now_us);
        let new_tat = tat.saturating_add(self.increment_us(cost));
        if new_tat - now_us <= self.period_us {
            Outcome {
                allowed: true,
                tat_us: new_tat,
                remaining: self.remaining_at(new_tat, now_us),
                reset_us: new_tat - now_us,
                retry_after_us: 0,
            }
        } else {
            Outcome {
                allowed: false,
                tat_us: stored_tat_us,
                remaining: self.remaining_at(tat, now_us),
                reset_us: tat - now_us,
                retry_after_us: new_tat - now_us - self.period_us,
            }
        }
    }

    /// The state at `now_us` without taking anything.
    pub fn peek(&self, stored_tat_us: u64, now_us: u64) -> Outcome {
        let tat = stored_tat_us.max(now_us);
        Outcome {
            allowed: true,
            tat_us: stored_tat_us,
            remaining: self.remaining_at(tat, now_us),
            reset_us: tat - now_us,
            retry_after_us: 0,
        }
    }

    /// Moves a stored TAT by `delta` units (negative returns units), never below now. `None`
    /// means the bucket is full and its entry can be dropped.
    pub fn adjust(&self, stored_tat_us: u64, now_us: u64, delta: i64) -> Option<u64> {
        let shift = self.increment_us(delta.unsigned_abs());
        let tat = stored_tat_us.max(now_us);
        let moved = if delta >= 0 {
            tat.saturating_add(shift)
        } else {
            tat.saturating_sub(shift)
        };
        (moved > now_us).then_some(moved)
    }

    fn remaining_at(&self, tat_us: u64, now_us: u64) -> u64 {
        let used_us = tat_us.saturating_sub(now_us);
        let free_us = self.period_us.saturating_sub(used_us);
        let remaining =
            u128::from(free_us) * u128::from(self.limit) / u128::from(self.period_us.max(1));
        u64::try_from(remaining).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000_000;

    #[test]
    fn a_full_bucket_admits_exactly_its_limit_at_once() {
        let quota = Quota {
            limit: 10,
            period_us: MINUTE,
        };
        let mut tat = 0;
        let now = 1_000_000_000;
        for i in 0..10 {
            let outcome = quota.decide(tat, now, 1);
            assert!(outcome.allowed, "request {i}");
            assert_eq!(outcome.remaining, 9 - i);
            tat = outcome.tat_us;
        }
        let refused = quota.decide(tat, now, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(
            refused.retry_after_us,
            MINUTE / 10,
            "one unit refills in period / limit"
        );
        assert_eq!(refused.tat_us, tat, "a refusal takes nothing");
    }

    #[test]
    fn no_window_edge_burst() {
        let quota = Quota {
            limit: 10,
            period_us: MINUTE,
        };
        let now = 5 * MINUTE - 1_000_000;
        let mut tat = 0;
        for _ in 0..10 {
            tat = quota.decide(tat, now, 1).tat_us;
        }
        // Two seconds later, across a minute boundary, only what refilled is available.
        let later = now + 2_000_000;
        assert!(
            !quota.decide(tat, later, 1).allowed,
            "10 per minute refills one per 6 s"
        );
        assert!(quota.decide(tat, now + 6_000_000, 1).allowed);
    }

    #[test]
    fn token_costs_reserve_and_settle_both_ways() {
        let quota = Quota {
            limit: 1000,
            period_us: MINUTE,
        };
        let now = 10 * MINUTE;
        let reserved = quota.decide(0, now, 600);
        assert!(reserved.allowed);
        assert_eq!(reserved.remaining, 400);
        assert!(
            !quota.decide(reserved.tat_us, now, 500).allowed,
            "500 more does not fit"
        );
        // The response used only 100 of the 600 reserved: 500 come back.
        let settled = quota.adjust(reserved.tat_us, now, -500).unwrap();
        assert_eq!(quota.peek(settled, now).remaining, 900);
        // A response larger than reserved takes the difference.
        let over = quota.adjust(settled, now, 300).unwrap();
        assert_eq!(quota.peek(over, now).remaining, 600);
        // Returning more than was taken leaves a full bucket, never more.
        assert_eq!(quota.adjust(over, now, -5000), None);
    }

    #[test]
    fn a_cost_beyond_the_limit_never_fits() {
        let quota = Quota {
            limit: 100,
            period_us: MINUTE,
        };
        assert!(!quota.can_ever_fit(101));
        assert!(!quota.decide(0, MINUTE, 101).allowed);
        assert!(quota.decide(0, MINUTE, 100).allowed);
    }

    #[test]
    fn peek_takes_nothing_and_reports_reset() {
        let quota = Quota {
            limit: 4,
            period_us: 4_000_000,
        };
        let taken = quota.decide(0, 100, 2);
        let seen = quota.peek(taken.tat_us, 100);
        assert_eq!(seen.remaining, 2);
        assert_eq!(seen.reset_us, 2_000_000);
        assert_eq!(
            quota.peek(taken.tat_us, 100).remaining,
            2,
            "peeking twice changes nothing"
        );
    }
}
