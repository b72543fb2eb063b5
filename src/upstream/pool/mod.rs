//! Pools: one model served by several deployments (OpenAI keys or projects, Azure deployments,
//! any OpenAI-compatible base URL), each with a weight and optional limits of its own.
//!
//! A pool is the first targets of an alias (`[models.NAME] pool = [...]`); the alias's
//! fallbacks follow them. For each call [`Pool::order`] puts the pool's deployments in the
//! order the call tries them: the first chosen by the strategy (weighted at random, least busy,
//! or weighted by the headroom each deployment's last answer reported), then the others as the
//! strategy ranks them. A deployment cools down — is left out for its `Retry-After`, else the
//! pool's `cooldown_ms` — when it answers 429 or cannot be reached, and when it fails in a way
//! a caller could provoke (5xx, 401/403, an Azure deployment that is not there) more than
//! `allowed_fails` times in a minute; a timeout says nothing of the deployment and ends the
//! call there (the next deployment could run it a second time). One whose headroom fell under
//! 5 % is left out until its limit resets; when every one is out, they are tried in the order
//! they come back. A deployment's own requests- and tokens-per-minute limits are kept by the
//! rate limiter (in Redis when configured, so replicas share them): one at its limit is passed
//! over for the next.
//!
//! Replicas share cooldowns and headroom through Redis ([`shared`]): each change is published
//! and every replica reads the others' four times a second, so the decision itself never waits
//! on the network.

pub mod deployment;
pub mod shared;

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;

use super::Target;
use crate::config::{ModelPool, PoolStrategy};
use crate::error::GatewayError;
use crate::limiter::{Bucket, Charge, Quota, RateLimiter};
pub use deployment::{Board, Busy, DeploymentState};
use deployment::{DRY, FULL, now_ms};

/// One deployment of a pool.
#[derive(Debug)]
pub struct Member {
    /// Where it is: an endpoint and the model sent there.
    pub target: Target,
    /// `upstream/model`: the same on every replica (metrics and shared state use it).
    pub name: Arc<str>,
    weight: u32,
    /// Its live state (shared with every pool that names the same deployment).
    pub state: Arc<DeploymentState>,
    /// Its own limits' buckets: requests per minute, tokens per minute.
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    /// Calls it answered, and its cooldowns (registered once: a label set per call costs).
    served: metrics::Counter,
    cooldowns: metrics::Counter,
}

impl Member {
    /// It answered a call sent at `sent_ms`: a cooldown that began before ends, and it is
    /// counted as having served.
    pub fn served_call(&self, sent_ms: u64) {
        self.state.recovered(sent_ms);
        self.served.increment(1);
    }
}

/// A pool: its strategy, its cooldown, its members (the first targets of its alias).
pub struct Pool {
    /// The alias it serves (metrics say it).
    pub alias: Arc<str>,
    strategy: PoolStrategy,
    cooldown: Duration,
    /// Failures a caller could provoke allowed in a minute before a deployment cools.
    allowed_fails: u32,
    members: Vec<Member>,
    /// Where the members' own limits are kept.
    limiter: Arc<dyn RateLimiter>,
    /// Whether a limiter that cannot answer turns calls away (`limits.on_backend_error`).
    limits_fail_closed: bool,
}

/// What a member's failed attempt says about the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Out of capacity (429): cools at once, for the upstream's `Retry-After` when it gave one.
    Capacity(Option<Duration>),
    /// Could not be reached: cools at once.
    Down,
    /// Failing in a way a caller could provoke (5xx, 401/403, an Azure deployment not found):
    /// cools once it has happened more than `allowed_fails` times in a minute.
    Faulty,
    /// Nothing to do with the deployment (the caller's request, or a timeout once it was
    /// sent): no cooldown, and no other deployment is tried.
    NotIts,
}

impl Verdict {
    /// The verdict on `error`, answered by an Azure endpoint when `azure`.
    pub fn of(error: &GatewayError, azure: bool) -> Self {
        match error {
            GatewayError::UpstreamRateLimited { .. } => Self::Capacity(error.retry_after()),
            GatewayError::UpstreamUnreachable => Self::Down,
            GatewayError::UpstreamFailed { .. } | GatewayError::UpstreamAuth { .. } => Self::Faulty,
            // Azure's 404 on a deployment path: the deployment (or resource) is not there.
            GatewayError::UpstreamRejected { status, .. } if azure && status.as_u16() == 404 => {
                Self::Faulty
            }
            _ => Self::NotIts,
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("alias", &self.alias)
            .field("strategy", &self.strategy)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// The targets of one call in the order they are tried: the pool's members as `order` ranks
/// them (`Pool::order`), then the rest of `targets` as they are (a call without a pool walks
/// its targets with nothing allocated), each with its member index when it is one; and the
/// index of the last.
pub fn plan<'a>(
    pool: Option<&'a Pool>,
    order: &'a [usize],
    targets: &'a [Target],
) -> (
    impl Iterator<Item = (Option<usize>, &'a Target)> + 'a,
    usize,
) {
    let skipped = pool.map_or(0, Pool::len);
    let plan = order
        .iter()
        .filter_map(move |&member| Some((Some(member), &pool?.member(member).target)))
        .chain(targets.iter().skip(skipped).map(|t| (None, t)));
    let last = (order.len() + targets.len().saturating_sub(skipped)).saturating_sub(1);
    (plan, last)
}

/// One minute, in microseconds.
const MINUTE_US: u64 = 60_000_000;

impl Pool {
    /// The pool `config` describes for `alias`, its members at `targets` (the alias's first
    /// targets, in the same order), `names` naming each for metrics and shared state.
    pub fn new(
        alias: &str,
        config: &ModelPool,
        targets: &[Target],
        names: Vec<Arc<str>>,
        board: &Board,
        limiter: Arc<dyn RateLimiter>,
        limits_fail_closed: bool,
    ) -> Self {
        let bucket = |name: &str, unit: &str, limit: Option<u64>| {
            limit.map(|limit| Bucket {
                key: format!("pool:{name}:{unit}"),
                tag: format!("pool:{name}"),
                quota: Quota {
                    limit,
                    period_us: MINUTE_US,
                },
            })
        };
        let members = config
            .members
            .iter()
            .zip(targets)
            .zip(names)
            .map(|((member, target), name)| Member {
                served: crate::metrics::pool_served(alias, &name),
                cooldowns: crate::metrics::pool_cooldowns(&name),
                target: target.clone(),
                weight: member.weight,
                state: board.state(&name),
                requests: bucket(&name, "requests", member.requests_per_minute),
                tokens: bucket(&name, "tokens", member.tokens_per_minute),
                name,
            })
            .collect();
        Self {
            alias: Arc::from(alias),
            strategy: config.strategy,
            cooldown: config.cooldown,
            allowed_fails: config.allowed_fails,
            members,
            limiter,
            limits_fail_closed,
        }
    }

    /// How many of the alias's targets are this pool's members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the pool has no members (configuration refuses that; here for completeness).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member at `index`.
    pub fn member(&self, index: usize) -> &Member {
        &self.members[index]
    }

    /// Whether any member counts tokens against a limit of its own (the tokenizer is then
    /// built at start).
    pub fn counts_tokens(&self) -> bool {
        self.members.iter().any(|m| m.tokens.is_some())
    }

    /// The members' indices in the order this call tries them.
    pub fn order(&self) -> Vec<usize> {
        let now = now_ms();
        let mut rng = rand::rng();
        let mut open: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                let state = &self.members[i].state;
                !state.cooling(now)
                    && (self.strategy != PoolStrategy::Headroom || state.headroom(now) >= DRY)
            })
            .collect();
        if open.is_empty() {
            // Every one is out: the first back first.
            open.extend(0..self.members.len());
            open.sort_by_key(|&i| self.members[i].state.cooling_until());
            return open;
        }
        match self.strategy {
            PoolStrategy::LeastBusy => {
                // Calls in flight per unit of weight, ties broken at random.
                let mut keyed: Vec<(u64, u32, usize)> = open
                    .iter()
                    .map(|&i| {
                        let m = &self.members[i];
                        let load = u64::from(m.state.in_flight()) * 1_000_000 / u64::from(m.weight);
                        (load, rng.random::<u32>(), i)
                    })
                    .collect();
                keyed.sort_unstable();
                keyed.into_iter().map(|(_, _, i)| i).collect()
            }
            PoolStrategy::Weighted | PoolStrategy::Headroom => {
                let weight = |i: usize| {
                    let m = &self.members[i];
                    let scale = if self.strategy == PoolStrategy::Headroom {
                        u64::from(m.state.headroom(now).max(1))
                    } else {
                        u64::from(FULL)
                    };
                    u64::from(m.weight) * scale
                };
                let mut order = Vec::with_capacity(open.len());
                while !open.is_empty() {
                    let total: u64 = open.iter().map(|&i| weight(i)).sum();
                    let mut pick = rng.random_range(0..total.max(1));
                    let mut chosen = open.len() - 1;
                    for (position, &i) in open.iter().enumerate() {
                        if pick < weight(i) {
                            chosen = position;
                            break;
                        }
                        pick -= weight(i);
                    }
                    order.push(open.swap_remove(chosen));
                }
                order
            }
        }
    }

    /// Takes one call's share of `member`'s own limits (`tokens`: the prompt and the most the
    /// answer may hold). `Err` carries how long until it would fit; a limiter that cannot
    /// answer lets the call through (the deployment's own limit still guards it) unless
    /// `limits.on_backend_error = "fail_closed"`.
    pub async fn admit(&self, member: usize, tokens: u64) -> Result<(), Duration> {
        let member = &self.members[member];
        let charges: Vec<Charge> = member
            .requests
            .iter()
            .map(|bucket| Charge {
                bucket: bucket.clone(),
                cost: 1,
            })
            .chain(member.tokens.iter().map(|bucket| Charge {
                bucket: bucket.clone(),
                cost: tokens.min(bucket.quota.limit),
            }))
            .collect();
        if charges.is_empty() {
            return Ok(());
        }
        match self.limiter.acquire(&charges).await {
            Ok(decision) if decision.allowed() => Ok(()),
            Ok(decision) => Err(Duration::from_micros(
                decision
                    .states
                    .iter()
                    .map(|s| s.retry_after_us)
                    .max()
                    .unwrap_or(0),
            )),
            Err(error) => {
                static THROTTLE: crate::log_throttle::LogThrottle =
                    crate::log_throttle::LogThrottle::new();
                if let Some(held_back) = THROTTLE.allow() {
                    tracing::warn!(error = %error, held_back, "a deployment's own limits could not be checked; sending without them");
                }
                crate::metrics::record_backend_error("pool");
                if self.limits_fail_closed {
                    Err(Duration::from_secs(1))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The 429 for a call no member had room for: the soonest any has room again is `wait`.
    pub fn all_at_their_limits(&self, wait: Duration) -> GatewayError {
        GatewayError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
            message: format!(
                "Every deployment serving {} is at its own rate limit; try again later.",
                self.alias
            ),
        }
    }

    /// Notes how `member`'s attempt failed, cooling it down as `verdict` says (for the
    /// upstream's `Retry-After` when it gave one, else the pool's cooldown; at most
    /// [`crate::config::MAX_COOLDOWN`]). Returns whether another deployment may be tried.
    pub fn failed(&self, member: usize, verdict: Verdict) -> bool {
        let member = &self.members[member];
        let cool = match verdict {
            Verdict::NotIts => return false,
            Verdict::Capacity(retry_after) => Some(retry_after.unwrap_or(self.cooldown)),
            Verdict::Down => Some(self.cooldown),
            Verdict::Faulty => member
                .state
                .failed_again(self.allowed_fails)
                .then_some(self.cooldown),
        };
        if let Some(period) = cool {
            member
                .state
                .cool_down(period.min(crate::config::MAX_COOLDOWN));
            member.cooldowns.increment(1);
        }
        true
    }
}

#[cfg(test)]
mod tests;
