//! The embedded engine: buckets in this process's memory.
//!
//! Buckets live in 64 mutex-guarded shards, keyed by bucket key, holding only a TAT. A bucket
//! whose TAT has passed is full, which is the same as absent, so entries are swept as they
//! refill: a shard drops its expired entries when it is touched a sweep interval after the last
//! sweep, and shrinks its table once mostly empty. Memory follows the buckets in use, not the
//! number of distinct clients ever seen. A decision locks its shards in index order (so two
//! decisions cannot deadlock) and is all-or-nothing across its buckets. Time is Tokio's
//! monotonic clock, so tests can pause and advance it.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Bucket, BucketState, Charge, Decision, LimiterError, RateLimiter};

const SHARDS: usize = 64;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Shard {
    tats: HashMap<String, u64>,
    last_sweep_us: u64,
}

/// In-memory buckets for one replica.
pub struct MemoryRateLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    epoch: Instant,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// A bucket's identity: unique across tags, as in Redis (`{tag}:key`).
fn identity(bucket: &Bucket) -> String {
    let mut id = String::with_capacity(bucket.tag.len() + bucket.key.len() + 1);
    id.push_str(&bucket.tag);
    id.push('\u{1f}');
    id.push_str(&bucket.key);
    id
}

/// The shards a decision holds, locked.
struct Locked<'a> {
    guards: Vec<(usize, MutexGuard<'a, Shard>)>,
}

impl Locked<'_> {
    fn map(&mut self, shard: usize) -> &mut HashMap<String, u64> {
        let position = self
            .guards
            .iter()
            .position(|(i, _)| *i == shard)
            .unwrap_or(0);
        &mut self.guards[position].1.tats
    }
}

impl MemoryRateLimiter {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Microseconds on the monotonic clock (never 0, which means "no bucket").
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// How many buckets are held (the memory benchmark and tests read it).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the shards holding `keys` in index order, sweeping each if due.
    fn lock<'k>(&self, keys: impl Iterator<Item = &'k str>, now_us: u64) -> Locked<'_> {
        let mut indices: Vec<usize> = keys.map(|k| self.shard_of(k)).collect();
        indices.sort_unstable();
        indices.dedup();
        let guards = indices
            .into_iter()
            .map(|i| {
                let mut shard = self.shards[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if now_us.saturating_sub(shard.last_sweep_us) >= SWEEP_EVERY.as_micros() as u64 {
                    shard.tats.retain(|_, tat| *tat > now_us);
                    if shard.tats.capacity() > 1024 && shard.tats.len() < shard.tats.capacity() / 4
                    {
                        shard.tats.shrink_to_fit();
                    }
                    shard.last_sweep_us = now_us;
                }
                (i, shard)
            })
            .collect();
        Locked { guards }
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, charges: &[Charge]) -> Result<Decision, LimiterError> {
        let now = self.now_us();
        let ids: Vec<String> = charges.iter().map(|c| identity(&c.bucket)).collect();
        let mut locked = self.lock(ids.iter().map(String::as_str), now);
        let outcomes: Vec<_> = charges
            .iter()
            .zip(&ids)
            .map(|(charge, id)| {
                let tat = locked.map(self.shard_of(id)).get(id).copied().unwrap_or(0);
                (tat, charge.bucket.quota.decide(tat, now, charge.cost))
            })
            .collect();
        let allowed = outcomes.iter().all(|(_, o)| o.allowed);
        if allowed {
            for (id, (_, outcome)) in ids.into_iter().zip(&outcomes) {
                locked.map(self.shard_of(&id)).insert(id, outcome.tat_us);
            }
        }
        let states = charges
            .iter()
            .zip(&outcomes)
            .map(|(charge, (tat, o))| match (allowed, o.allowed) {
                (true, _) | (false, false) => BucketState {
                    allowed,
                    remaining: o.remaining,
                    reset_us: o.reset_us,
                    retry_after_us: o.retry_after_us,
                },
                // All or nothing: a bucket that had room took nothing because another had none.
                (false, true) => {
                    let seen = charge.bucket.quota.peek(*tat, now);
                    BucketState {
                        allowed: false,
                        remaining: seen.remaining,
                        reset_us: seen.reset_us,
                        retry_after_us: 0,
                    }
                }
            })
            .collect();
        Ok(Decision { states })
    }

    async fn settle(&self, adjustments: &[(Bucket, i64)]) -> Result<(), LimiterError> {
        let now = self.now_us();
        let ids: Vec<String> = adjustments.iter().map(|(b, _)| identity(b)).collect();
        let mut locked = self.lock(ids.iter().map(String::as_str), now);
        for ((bucket, delta), id) in adjustments.iter().zip(ids) {
            let map = locked.map(self.shard_of(&id));
            let tat = map.get(&id).copied().unwrap_or(0);
            match bucket.quota.adjust(tat, now, *delta) {
                Some(moved) => map.insert(id, moved),
                None => map.remove(&id),
            };
        }
        Ok(())
    }

    async fn peek(&self, buckets: &[Bucket]) -> Result<Vec<BucketState>, LimiterError> {
        let now = self.now_us();
        let ids: Vec<String> = buckets.iter().map(identity).collect();
        let mut locked = self.lock(ids.iter().map(String::as_str), now);
        Ok(buckets
            .iter()
            .zip(&ids)
            .map(|(bucket, id)| {
                let tat = locked.map(self.shard_of(id)).get(id).copied().unwrap_or(0);
                let seen = bucket.quota.peek(tat, now);
                BucketState {
                    allowed: true,
                    remaining: seen.remaining,
                    reset_us: seen.reset_us,
                    retry_after_us: 0,
                }
            })
            .collect())
    }
}
