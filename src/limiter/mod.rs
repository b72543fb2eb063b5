//! Rate limiting: the `RateLimiter` trait, its engines, and the GCRA they share.
//!
//! A request's decision covers every bucket that applies to it at once (per IP, per key, per
//! user; requests and tokens): either every bucket has room and all are charged, or none is.
//! Token buckets are charged an estimate first and settled with the real usage afterwards.
//! `memory.rs` is the embedded default (one replica); `redis.rs` shares buckets between
//! replicas, on Redis's clock.

pub mod gcra;
pub mod memory;
pub mod redis;
pub mod rules;

use async_trait::async_trait;

pub use gcra::Quota;

/// One bucket: its storage key and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Unique per rule and subject, the same on every replica.
    pub key: String,
    /// Groups buckets that must live on one Redis Cluster slot (the subject).
    pub tag: String,
    pub quota: Quota,
}

/// A bucket and what to take from it.
#[derive(Debug, Clone)]
pub struct Charge {
    pub bucket: Bucket,
    pub cost: u64,
}

/// A bucket's state after a decision or a peek.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub allowed: bool,
    pub remaining: u64,
    /// Microseconds until the bucket is full.
    pub reset_us: u64,
    /// When refused: microseconds until the charge would fit.
    pub retry_after_us: u64,
}

/// The answer to [`RateLimiter::acquire`]: one state per charge, in order.
#[derive(Debug, Clone)]
pub struct Decision {
    pub states: Vec<BucketState>,
}

impl Decision {
    /// Whether every charge fit (and was taken).
    pub fn allowed(&self) -> bool {
        self.states.iter().all(|s| s.allowed)
    }
}

/// Why the backend could not decide.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("rate limit backend timed out")]
    Timeout,
    #[error("rate limit backend unavailable: {0}")]
    Backend(String),
    #[error("rate limit backend skipped: circuit open after recent failures")]
    CircuitOpen,
}

/// Where buckets live.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes every charge if all fit, none otherwise.
    async fn acquire(&self, charges: &[Charge]) -> Result<Decision, LimiterError>;
    /// Adjusts earlier charges by `delta` units each (negative gives units back).
    async fn settle(&self, adjustments: &[(Bucket, i64)]) -> Result<(), LimiterError>;
    /// The buckets' states, taking nothing.
    async fn peek(&self, buckets: &[Bucket]) -> Result<Vec<BucketState>, LimiterError>;
}
