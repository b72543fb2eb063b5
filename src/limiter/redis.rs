//! The shared engine: buckets in Redis, so every replica enforces one limit.
//!
//! Each decision is one `EVALSHA` of `gcra.lua` per hash tag (a request's buckets share the
//! tag of their subject: the IP, or the key/JWT user/anonymous caller), run on Redis's clock
//! so replicas with skewed clocks agree, with every key `{tag}`-tagged so a script's keys sit
//! on one Redis Cluster slot. `redis::Script` reloads the script on `NOSCRIPT` (after a Redis
//! restart or failover). A request whose buckets span two tags makes two calls at once; if one
//! refuses, what the other took is given back, so a decision stays all-or-nothing.
//!
//! Outages: every call is bounded by `limits.backend_timeout_ms` and goes through the
//! [`RedisLink`]'s circuit breaker; while it is open the pipeline applies
//! `limits.on_backend_error` at once, and limits resume by themselves when Redis is back.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::join_all;

use super::{Bucket, BucketState, Charge, Decision, LimiterError, RateLimiter};
use crate::redis_link::{LinkError, RedisCalls, RedisLink};

/// Buckets in Redis.
pub struct RedisRateLimiter {
    link: RedisCalls,
    script: redis::Script,
    prefix: String,
}

impl From<LinkError> for LimiterError {
    fn from(error: LinkError) -> Self {
        match error {
            LinkError::Backend(detail) => Self::Backend(detail),
            LinkError::Timeout => Self::Timeout,
            LinkError::CircuitOpen => Self::CircuitOpen,
        }
    }
}

impl RedisRateLimiter {
    /// A limiter on the shared `link` whose keys start with `prefix`.
    pub fn new(link: Arc<RedisLink>, prefix: &str) -> Self {
        Self {
            link: RedisCalls::new(link, "limits"),
            script: redis::Script::new(include_str!("gcra.lua")),
            prefix: prefix.to_owned(),
        }
    }

    /// Runs the script for one tag group, within the timeout and through the breaker.
    async fn run(
        &self,
        mode: &str,
        group: &[(&Bucket, i64)],
    ) -> Result<Vec<Vec<i64>>, LimiterError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(mode);
        for (bucket, amount) in group {
            invocation.key(format!("{}:{{{}}}:{}", self.prefix, bucket.tag, bucket.key));
            invocation
                .arg(bucket.quota.limit)
                .arg(bucket.quota.period_us)
                .arg(*amount);
        }
        Ok(self.link.invoke(&invocation).await?)
    }

    /// Runs `mode` over `items` grouped by tag, concurrently; states in the items' order, and
    /// the first error if a group failed (its items keep a refused, empty state).
    async fn run_grouped(
        &self,
        mode: &str,
        items: &[(&Bucket, i64)],
    ) -> (Vec<BucketState>, Option<LimiterError>) {
        let mut tags: Vec<&str> = items.iter().map(|(b, _)| b.tag.as_str()).collect();
        tags.sort_unstable();
        tags.dedup();
        let groups: Vec<Vec<usize>> = tags
            .iter()
            .map(|tag| {
                (0..items.len())
                    .filter(|&i| items[i].0.tag == *tag)
                    .collect()
            })
            .collect();
        let calls = groups.iter().map(|indices| {
            let group: Vec<(&Bucket, i64)> = indices.iter().map(|&i| items[i]).collect();
            async move { self.run(mode, &group).await }
        });
        let answers = join_all(calls).await;
        let mut states = vec![
            BucketState {
                allowed: false,
                remaining: 0,
                reset_us: 0,
                retry_after_us: 0
            };
            items.len()
        ];
        let mut first_error = None;
        for (indices, answer) in groups.iter().zip(answers) {
            match answer {
                Ok(rows) => {
                    for (&i, row) in indices.iter().zip(rows) {
                        let value =
                            |k: usize| u64::try_from(row.get(k).copied().unwrap_or(0)).unwrap_or(0);
                        states[i] = BucketState {
                            allowed: value(0) == 1,
                            remaining: value(1),
                            reset_us: value(2),
                            retry_after_us: value(3),
                        };
                    }
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        (states, first_error)
    }

    async fn give_back(&self, items: &[(&Bucket, i64)], states: &[BucketState]) {
        let taken: Vec<(&Bucket, i64)> = items
            .iter()
            .zip(states)
            .filter(|(_, s)| s.allowed)
            .map(|((b, cost), _)| (*b, -*cost))
            .collect();
        if !taken.is_empty() {
            let (_, error) = self.run_grouped("settle", &taken).await;
            if let Some(error) = error {
                tracing::warn!(%error, "could not give back a partial rate-limit charge; it refills on its own");
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(&self, charges: &[Charge]) -> Result<Decision, LimiterError> {
        let items: Vec<(&Bucket, i64)> = charges
            .iter()
            .map(|c| (&c.bucket, i64::try_from(c.cost).unwrap_or(i64::MAX)))
            .collect();
        let (mut states, error) = self.run_grouped("acquire", &items).await;
        if let Some(error) = error {
            // Give back what the groups that answered took.
            self.give_back(&items, &states).await;
            return Err(error);
        }
        if states.iter().any(|s| !s.allowed) && states.iter().any(|s| s.allowed) {
            // One tag group refused while another took: undo the taking.
            self.give_back(&items, &states).await;
            for state in &mut states {
                state.allowed = false;
            }
        }
        Ok(Decision { states })
    }

    async fn settle(&self, adjustments: &[(Bucket, i64)]) -> Result<(), LimiterError> {
        let items: Vec<(&Bucket, i64)> = adjustments.iter().map(|(b, d)| (b, *d)).collect();
        match self.run_grouped("settle", &items).await {
            (_, Some(error)) => Err(error),
            _ => Ok(()),
        }
    }

    async fn peek(&self, buckets: &[Bucket]) -> Result<Vec<BucketState>, LimiterError> {
        let items: Vec<(&Bucket, i64)> = buckets.iter().map(|b| (b, 0)).collect();
        match self.run_grouped("peek", &items).await {
            (_, Some(error)) => Err(error),
            (states, None) => Ok(states),
        }
    }
}
