use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::PoolMember;
use crate::limiter::memory::MemoryRateLimiter;

fn pool(strategy: PoolStrategy, members: &[(&str, u32, Option<u64>)]) -> (Pool, Arc<Board>) {
    let board = Arc::new(Board::default());
    let config = ModelPool {
        strategy,
        cooldown: Duration::from_secs(5),
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
    let pool = Pool::new(
        "m",
        &config,
        &targets,
        names,
        &board,
        Arc::new(MemoryRateLimiter::new()),
    );
    (pool, board)
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
    pool.failed(0, Some(Duration::from_millis(150)));
    for _ in 0..200 {
        assert_eq!(pool.order(), vec![1]);
    }
    pool.failed(1, Some(Duration::from_secs(60)));
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
    pool.failed(0, Some(Duration::from_secs(86_400)));
    let until = pool.member(0).state.cooling_until();
    assert!(until <= now + crate::config::MAX_COOLDOWN.as_millis() as u64 + 50);
    pool.failed(1, None);
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

#[tokio::test]
async fn the_board_keeps_a_deployments_state_for_every_pool_that_names_it() {
    let (first, board) = pool(PoolStrategy::Weighted, &[("a", 1, None), ("b", 1, None)]);
    first.failed(0, None);
    assert!(board.state("a/m").cooling(now_ms()));
    assert!(!board.state("b/m").cooling(now_ms()));
}
