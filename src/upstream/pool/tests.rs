use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::PoolMember;
use crate::limiter::memory::MemoryRateLimiter;

fn pool(strategy: PoolStrategy, members: &[(&str, u32, Option<u64>)]) -> (Pool, Arc<Board>) {
    let board = Arc::new(Board::default());
    let pool = pool_on(
        &board,
        strategy,
        members,
        Arc::new(MemoryRateLimiter::new()),
        false,
    );
    (pool, board)
}

fn pool_on(
    board: &Board,
    strategy: PoolStrategy,
    members: &[(&str, u32, Option<u64>)],
    limiter: Arc<dyn RateLimiter>,
    fail_closed: bool,
) -> Pool {
    let config = ModelPool {
        strategy,
        cooldown: Duration::from_secs(5),
        allowed_fails: 2,
        members: members
            .iter()
            .map(|(upstream, weight, rpm)| PoolMember {
                upstream: (*upstream).to_owned(),
                target: None,
                weight: *weight,
                requests_per_minute: *rpm,
                tokens_per_minute: None,
            })
            .collect(),
    };
    let targets: Vec<Target> = (0..members.len())
        .map(|endpoint| Target {
            endpoint,
            model: None,
        })
        .collect();
    let names = members
        .iter()
        .map(|(upstream, _, _)| Arc::from(format!("{upstream}/m")))
        .collect();
    Pool::new("m", &config, &targets, names, board, limiter, fail_closed)
}

fn firsts(pool: &Pool, calls: usize) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    for _ in 0..calls {
        *counts.entry(pool.order()[0]).or_default() += 1;
    }
    counts
}

#[test]
fn weighted_picks_follow_the_weights_and_every_member_stays_in_the_order() {
    let (pool, _) = pool(PoolStrategy::Weighted, &[("a", 3, None), ("b", 1, None)]);
    let counts = firsts(&pool, 20_000);
    let share = counts[&0] as f64 / 20_000.0;
    assert!((share - 0.75).abs() < 0.02, "share of a: {share}");
    let mut order = pool.order();
    order.sort_unstable();
    assert_eq!(order, vec![0, 1]);
}

#[test]
fn a_cooling_member_is_left_out_until_its_cooldown_ends_and_all_cooling_go_first_back_first() {
    let (pool, _) = pool(PoolStrategy::Weighted, &[("a", 1, None), ("b", 1, None)]);
    pool.failed(0, Verdict::Capacity(Some(Duration::from_millis(150))));
    for _ in 0..200 {
        assert_eq!(pool.order(), vec![1]);
    }
    pool.failed(1, Verdict::Capacity(Some(Duration::from_secs(60))));
    assert_eq!(
        pool.order(),
        vec![0, 1],
        "all cooling: the first back first"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pool.order(), vec![0]);
}

#[test]
fn a_cooldown_is_capped_and_defaults_to_the_pools() {
    let (pool, _) = pool(PoolStrategy::Weighted, &[("a", 1, None), ("b", 1, None)]);
    let now = now_ms();
    pool.failed(0, Verdict::Capacity(Some(Duration::from_secs(86_400))));
    let until = pool.member(0).state.cooling_until();
    let cap = crate::config::MAX_COOLDOWN.as_millis() as u64;
    assert!(until >= now + cap - 50 && until <= now + cap + 50);
    pool.failed(1, Verdict::Down);
    let until = pool.member(1).state.cooling_until();
    assert!(until >= now + 4_900 && until <= now + 5_100);
}

#[test]
fn least_busy_sends_to_the_member_with_the_fewest_calls_per_weight() {
    let (pool, _) = pool(PoolStrategy::LeastBusy, &[("a", 1, None), ("b", 2, None)]);
    let a: Vec<Busy> = (0..2).map(|_| pool.member(0).state.busy()).collect();
    let b: Vec<Busy> = (0..3).map(|_| pool.member(1).state.busy()).collect();
    // a: 2 per weight; b: 1.5 per weight.
    assert_eq!(pool.order(), vec![1, 0]);
    drop(a);
    assert_eq!(pool.order(), vec![0, 1]);
    drop(b);
}

#[test]
fn headroom_steers_away_from_a_member_about_to_run_dry() {
    let (pool, _) = pool(PoolStrategy::Headroom, &[("a", 1, None), ("b", 1, None)]);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("x-ratelimit-limit-requests", "1000".parse().unwrap());
    headers.insert("x-ratelimit-remaining-requests", "250".parse().unwrap());
    headers.insert("x-ratelimit-reset-requests", "30s".parse().unwrap());
    pool.member(0).state.observe_headroom(&headers);
    let counts = firsts(&pool, 20_000);
    let share = counts[&0] as f64 / 20_000.0;
    assert!(
        (share - 0.2).abs() < 0.02,
        "a has a quarter of b's room: {share}"
    );
    headers.insert("x-ratelimit-remaining-requests", "10".parse().unwrap());
    pool.member(0).state.observe_headroom(&headers);
    for _ in 0..200 {
        assert_eq!(pool.order(), vec![1], "a is about to run dry");
    }
}

#[tokio::test]
async fn a_members_own_limit_turns_calls_away_when_spent() {
    let (pool, _) = pool(PoolStrategy::Weighted, &[("a", 1, Some(3)), ("b", 1, None)]);
    for _ in 0..3 {
        assert_eq!(pool.admit(0, 0).await, Ok(()));
    }
    let refused = pool
        .admit(0, 0)
        .await
        .expect_err("the fourth call in a minute");
    assert!(
        refused > Duration::from_secs(10),
        "waits for the bucket: {refused:?}"
    );
    assert_eq!(pool.admit(1, 0).await, Ok(()));
}

#[test]
fn the_board_keeps_a_deployments_state_for_every_pool_that_names_it() {
    let (first, board) = pool(PoolStrategy::Weighted, &[("a", 1, None), ("b", 1, None)]);
    let limiter: Arc<dyn RateLimiter> = Arc::new(MemoryRateLimiter::new());
    let second = pool_on(
        &board,
        PoolStrategy::LeastBusy,
        &[("c", 1, None), ("a", 1, None)],
        limiter,
        false,
    );
    first.failed(0, Verdict::Down);
    assert!(
        second.member(1).state.cooling(now_ms()),
        "a cools in both pools"
    );
    assert!(!second.member(0).state.cooling(now_ms()));
    assert_eq!(second.order(), vec![0]);
}

#[test]
fn failures_a_caller_could_provoke_cool_only_past_the_allowance_and_timeouts_never() {
    let (pool, _) = pool(PoolStrategy::Weighted, &[("a", 1, None), ("b", 1, None)]);
    assert!(
        !pool.failed(0, Verdict::NotIts),
        "a timeout: no other deployment is tried"
    );
    assert!(!pool.member(0).state.cooling(now_ms()));
    for _ in 0..2 {
        assert!(
            pool.failed(0, Verdict::Faulty),
            "the next deployment is tried"
        );
        assert!(!pool.member(0).state.cooling(now_ms()));
    }
    pool.failed(0, Verdict::Faulty);
    assert!(
        pool.member(0).state.cooling(now_ms()),
        "the third in a minute cools"
    );
}

#[test]
fn verdicts_read_the_error_table() {
    use axum::http::StatusCode;
    let rejected = |status: u16| GatewayError::UpstreamRejected {
        status: StatusCode::from_u16(status).unwrap(),
        body: bytes::Bytes::new(),
    };
    let limited = GatewayError::UpstreamRateLimited {
        retry_after: Some("7".parse().unwrap()),
    };
    assert_eq!(
        Verdict::of(&limited, false),
        Verdict::Capacity(Some(Duration::from_secs(7)))
    );
    assert_eq!(
        Verdict::of(&GatewayError::UpstreamUnreachable, false),
        Verdict::Down
    );
    assert_eq!(
        Verdict::of(&GatewayError::UpstreamTimeout, false),
        Verdict::NotIts
    );
    let auth = GatewayError::UpstreamAuth {
        status: StatusCode::FORBIDDEN,
    };
    assert_eq!(Verdict::of(&auth, false), Verdict::Faulty);
    assert_eq!(
        Verdict::of(&rejected(404), true),
        Verdict::Faulty,
        "Azure: no such deployment"
    );
    assert_eq!(Verdict::of(&rejected(404), false), Verdict::NotIts);
    assert_eq!(
        Verdict::of(&rejected(400), true),
        Verdict::NotIts,
        "the caller's request"
    );
}

/// A limiter whose backend never answers.
struct Unavailable;

#[async_trait::async_trait]
impl RateLimiter for Unavailable {
    async fn acquire(
        &self,
        _: &[Charge],
    ) -> Result<crate::limiter::Decision, crate::limiter::LimiterError> {
        Err(crate::limiter::LimiterError::Timeout)
    }
    async fn settle(&self, _: &[(Bucket, i64)]) -> Result<(), crate::limiter::LimiterError> {
        Err(crate::limiter::LimiterError::Timeout)
    }
    async fn peek(
        &self,
        _: &[Bucket],
    ) -> Result<Vec<crate::limiter::BucketState>, crate::limiter::LimiterError> {
        Err(crate::limiter::LimiterError::Timeout)
    }
}

#[tokio::test]
async fn a_limiter_that_cannot_answer_follows_the_limits_policy() {
    let board = Board::default();
    let open = pool_on(
        &board,
        PoolStrategy::Weighted,
        &[("a", 1, Some(1))],
        Arc::new(Unavailable),
        false,
    );
    assert_eq!(open.admit(0, 0).await, Ok(()), "fail_open");
    let closed = pool_on(
        &board,
        PoolStrategy::Weighted,
        &[("a", 1, Some(1))],
        Arc::new(Unavailable),
        true,
    );
    assert!(closed.admit(0, 0).await.is_err(), "fail_closed");
}
