//! The rate-limit stage. Every rule that covers the route becomes a bucket for its subject
//! (the client IP, the key, the end user); one decision charges all of them or none.
//!
//! Requests cost 1. Tokens cost the request's estimate (prompt counted with the model's
//! tokenizer, plus its maximum completion or `limits.default_completion_tokens`), reserved
//! here and settled with the real usage afterwards ([`Admission::settle`]). A request larger
//! than a bucket can ever hold is refused with a 400 that says so (waiting would never help).
//!
//! When the backend cannot answer (Redis down, timeout, open breaker), `limits.on_backend_error`
//! decides: `fail_open` serves the request unlimited and counts it, `fail_closed` answers 503.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::Call;
use crate::config::BackendErrorPolicy;
use crate::error::GatewayError;
use crate::identity::Principal;
use crate::limiter::rules::{RouteClass, Rule, Scope, Unit};
use crate::limiter::{Bucket, BucketState, Charge};
use crate::state::AppState;

/// What a request was charged, for response headers and settlement.
#[derive(Debug, Clone)]
pub struct Admission {
    /// `rules[i]` made `charges[i]`, which left `states[i]`.
    rules: Vec<Rule>,
    charges: Vec<Charge>,
    states: Vec<BucketState>,
}

/// The buckets of `rules` that apply to `principal` on `route`, each with its rule.
pub fn buckets(principal: &Principal, rules: &[Rule], route: RouteClass) -> Vec<(Rule, Bucket)> {
    rules
        .iter()
        .filter(|rule| rule.covers(route))
        .filter_map(|rule| Some((*rule, bucket_of(principal, rule)?)))
        .collect()
}

/// The caller's bucket for `rule`; `None` when the rule's subject is unknown (a user rule
/// for a caller that names no user, a key rule for a caller without a key).
fn bucket_of(principal: &Principal, rule: &Rule) -> Option<Bucket> {
    let (tag, key) = match rule.scope {
        Scope::Ip => (format!("ip:{}", principal.client_ip), rule.id()),
        Scope::Key => (
            principal.key_id().map(|id| format!("key:{id}"))?,
            format!("key:{}", rule.id()),
        ),
        Scope::User => (
            principal.bucket_tag()?,
            format!("user:{}:{}", principal.user.as_deref()?, rule.id()),
        ),
    };
    Some(Bucket {
        key,
        tag,
        quota: rule.quota(),
    })
}

/// One bucket as `GET /rate-limit/status` shows it.
#[derive(Debug, serde::Serialize)]
pub struct BucketReport {
    pub rule: String,
    pub scope: &'static str,
    pub route: &'static str,
    pub unit: &'static str,
    pub limit: u64,
    pub remaining: u64,
    pub reset_seconds: f64,
}

/// Every bucket of the caller, read without charging anything.
pub async fn status(
    state: &AppState,
    principal: &Principal,
) -> Result<Vec<BucketReport>, GatewayError> {
    let pairs: Vec<(Rule, Bucket)> = principal
        .rules
        .iter()
        .filter_map(|rule| Some((*rule, bucket_of(principal, rule)?)))
        .collect();
    let buckets: Vec<Bucket> = pairs.iter().map(|(_, b)| b.clone()).collect();
    let states = state.limiter.peek(&buckets).await.map_err(|error| {
        tracing::warn!(%error, "rate limit status unavailable");
        GatewayError::Unavailable {
            what: "rate limiter",
        }
    })?;
    Ok(pairs
        .iter()
        .zip(states)
        .map(|((rule, _), state)| BucketReport {
            rule: rule.to_string(),
            scope: rule.scope.as_str(),
            route: rule.route.as_str(),
            unit: rule.unit.as_str(),
            limit: rule.limit,
            remaining: state.remaining,
            reset_seconds: state.reset_us as f64 / 1e6,
        })
        .collect())
}

/// The stage: charges the call's buckets (its token estimate made only if a token rule
/// applies); the call's [`Reservations`](super::Reservations) hold what was reserved.
pub async fn limit(call: &mut Call, state: &AppState) -> Result<(), GatewayError> {
    let class = match &call.operation {
        Some(operation) => RouteClass::of_family(&operation.family),
        None => RouteClass::of_route(call.route),
    };
    let default_completion = state.config.limits.default_completion_tokens;
    let Call {
        principal,
        json,
        route,
        ..
    } = call;
    let admission = admit(state, principal, class, || {
        json.as_mut()
            .map_or(0, |json| json.estimate(*route).total(default_completion))
    })
    .await?;
    call.reservations.hold_tokens(admission);
    Ok(())
}

/// Refuses a long call (a Realtime session, whose tokens are charged as they are used) when a
/// token bucket of the caller's on `route` is already empty: its start charges no tokens, so
/// it must find some room. A backend that cannot answer follows `limits.on_backend_error`.
pub async fn require_token_room(
    state: &AppState,
    principal: &Principal,
    route: RouteClass,
) -> Result<(), GatewayError> {
    let token_buckets = token_buckets(state, principal, route);
    if token_buckets.is_empty() {
        return Ok(());
    }
    let only: Vec<Bucket> = token_buckets.iter().map(|(_, b)| b.clone()).collect();
    let states = match state.limiter.peek(&only).await {
        Ok(states) => states,
        Err(error) => return limiter_failed(state, &error),
    };
    let spent = token_buckets
        .iter()
        .zip(&states)
        .find(|(_, bucket)| bucket.remaining == 0);
    match spent {
        None => Ok(()),
        Some(((rule, _), bucket)) => {
            let retry_after_secs = bucket.reset_us.div_ceil(1_000_000).max(1);
            Err(GatewayError::RateLimited {
                retry_after_secs,
                message: format!("Rate limit reached: {rule}. Retry after {retry_after_secs} s."),
            })
        }
    }
}

/// The caller's token buckets on `route` (none when limits are off).
fn token_buckets(
    state: &AppState,
    principal: &Principal,
    route: RouteClass,
) -> Vec<(Rule, Bucket)> {
    if !state.config.limits.enabled {
        return Vec::new();
    }
    buckets(principal, &principal.rules, route)
        .into_iter()
        .filter(|(rule, _)| rule.unit == Unit::Tokens)
        .collect()
}

/// A limiter that could not answer, as `limits.on_backend_error` says: `fail_open` serves
/// unlimited (counted, logged at debug), `fail_closed` answers 503.
fn limiter_failed(
    state: &AppState,
    error: &crate::limiter::LimiterError,
) -> Result<(), GatewayError> {
    crate::metrics::record_backend_error("limiter");
    match state.config.limits.on_backend_error {
        BackendErrorPolicy::FailOpen => {
            tracing::debug!(%error, "rate limit backend failed: serving unlimited (fail_open)");
            Ok(())
        }
        BackendErrorPolicy::FailClosed => Err(GatewayError::Unavailable {
            what: "rate limiter",
        }),
    }
}

/// Charges `tokens` a long call has used (a Realtime session's response) to the caller's token
/// buckets on `route`. They are charged whether or not they fit (they were used); `Err` says
/// the buckets are spent, and the call must stop. A backend that cannot answer follows
/// `limits.on_backend_error`.
pub async fn charge_used(
    state: &AppState,
    principal: &Principal,
    route: RouteClass,
    tokens: u64,
) -> Result<(), GatewayError> {
    if tokens == 0 {
        return Ok(());
    }
    let charges: Vec<(Rule, Charge)> = token_buckets(state, principal, route)
        .into_iter()
        .map(|(rule, bucket)| {
            (
                rule,
                Charge {
                    bucket,
                    cost: tokens,
                },
            )
        })
        .collect();
    if charges.is_empty() {
        return Ok(());
    }
    let only: Vec<Charge> = charges.iter().map(|(_, charge)| charge.clone()).collect();
    let decision = match state.limiter.acquire(&only).await {
        Ok(decision) => decision,
        Err(error) => return limiter_failed(state, &error),
    };
    if decision.allowed() {
        return Ok(());
    }
    // Used all the same: charged in full, and the call ends.
    let used = i64::try_from(tokens).unwrap_or(i64::MAX);
    let adjustments: Vec<(Bucket, i64)> = only.into_iter().map(|c| (c.bucket, used)).collect();
    if let Err(error) = state.limiter.settle(&adjustments).await {
        return limiter_failed(state, &error);
    }
    let (rule, wait_us) = charges
        .iter()
        .zip(&decision.states)
        .find(|(_, state)| state.retry_after_us > 0)
        .map_or((charges[0].0, 0), |((rule, _), state)| {
            (*rule, state.retry_after_us)
        });
    let retry_after_secs = wait_us.div_ceil(1_000_000).max(1);
    Err(GatewayError::RateLimited {
        retry_after_secs,
        message: format!(
            "Rate limit reached: {rule}. This session has used the tokens it may; open a new \
             one after {retry_after_secs} s."
        ),
    })
}

/// Charges the request's buckets. `estimate_tokens` is called only if a token rule applies.
async fn admit(
    state: &AppState,
    principal: &Principal,
    route: RouteClass,
    estimate_tokens: impl FnOnce() -> u64,
) -> Result<Option<Admission>, GatewayError> {
    if !state.config.limits.enabled {
        return Ok(None);
    }
    let applicable = buckets(principal, &principal.rules, route);
    if applicable.is_empty() {
        return Ok(None);
    }
    let mut estimate = None;
    let mut estimate_tokens = Some(estimate_tokens);
    let mut rules = Vec::with_capacity(applicable.len());
    let mut charges = Vec::with_capacity(applicable.len());
    for (rule, bucket) in applicable {
        let cost = match rule.unit {
            Unit::Requests => 1,
            Unit::Tokens => {
                *estimate.get_or_insert_with(|| estimate_tokens.take().map_or(0, |f| f()))
            }
        };
        if !bucket.quota.can_ever_fit(cost) {
            return Err(GatewayError::invalid(
                format!(
                    "This request needs about {cost} tokens, more than the limit of {rule} can ever hold."
                ),
                None,
            ));
        }
        rules.push(rule);
        charges.push(Charge { bucket, cost });
    }
    let decision = match state.limiter.acquire(&charges).await {
        Ok(decision) => decision,
        Err(error) => return limiter_failed(state, &error).map(|()| None),
    };
    if !decision.allowed() {
        let (rule, state) = rules
            .iter()
            .zip(&decision.states)
            .filter(|(_, s)| s.retry_after_us > 0)
            .max_by_key(|(_, s)| s.retry_after_us)
            .map(|(rule, s)| (*rule, *s))
            .unwrap_or((rules[0], decision.states[0]));
        let retry_after_secs = state.retry_after_us.div_ceil(1_000_000).max(1);
        metrics::counter!("tollgate_rate_limited_total", "scope" => rule.scope.as_str(), "unit" => rule.unit.as_str())
            .increment(1);
        return Err(GatewayError::RateLimited {
            retry_after_secs,
            message: format!("Rate limit reached: {rule}. Retry after {retry_after_secs} s."),
        });
    }
    Ok(Some(Admission {
        rules,
        charges,
        states: decision.states,
    }))
}

impl Admission {
    /// OpenAI's `x-ratelimit-*` headers for the tightest request rule and token rule.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        const NAMES: [(Unit, [&str; 3]); 2] = [
            (
                Unit::Requests,
                [
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ],
            ),
            (
                Unit::Tokens,
                [
                    "x-ratelimit-limit-tokens",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ],
            ),
        ];
        for (unit, [limit, remaining, reset]) in NAMES {
            let tightest = self
                .rules
                .iter()
                .zip(&self.states)
                .filter(|(rule, _)| rule.unit == unit)
                .min_by_key(|(rule, state)| (state.remaining, rule.limit));
            if let Some((rule, state)) = tightest {
                let values = [
                    HeaderValue::from(rule.limit),
                    HeaderValue::from(state.remaining),
                    HeaderValue::try_from(format_reset(Duration::from_micros(state.reset_us)))
                        .unwrap_or(HeaderValue::from_static("0s")),
                ];
                for (name, value) in [limit, remaining, reset].into_iter().zip(values) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
        }
    }

    /// Settles token reservations with the tokens really used (`None`: the call failed before
    /// any were used, so everything reserved comes back). Runs after the response.
    pub async fn settle(self, state: &AppState, used_tokens: Option<u64>) {
        let adjustments: Vec<(Bucket, i64)> = self
            .rules
            .into_iter()
            .zip(self.charges)
            .filter(|(rule, _)| rule.unit == Unit::Tokens)
            .map(|(_, charge)| {
                let used = used_tokens.unwrap_or(0);
                (
                    charge.bucket,
                    i64::try_from(used).unwrap_or(i64::MAX)
                        - i64::try_from(charge.cost).unwrap_or(i64::MAX),
                )
            })
            .filter(|(_, delta)| *delta != 0)
            .collect();
        if adjustments.is_empty() {
            return;
        }
        if let Err(error) = state.limiter.settle(&adjustments).await {
            tracing::warn!(%error, "could not settle token reservations; buckets refill on their own");
        }
    }

    /// Whether any token bucket was charged (so settlement has work to do).
    pub fn has_tokens(&self) -> bool {
        self.rules.iter().any(|rule| rule.unit == Unit::Tokens)
    }
}

/// OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`, `250ms`.
pub fn format_reset(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs_f64().ceil() as u64;
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_format_matches_openai() {
        assert_eq!(format_reset(Duration::from_millis(250)), "250ms");
        assert_eq!(format_reset(Duration::from_millis(1200)), "2s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
    }
}
