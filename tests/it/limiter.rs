//! The `RateLimiter` behaviour suite, run against the memory engine (on Tokio's paused clock)
//! and the Redis engine (on Redis's clock), and Redis outages with a test-owned redis-server.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::limiter::memory::MemoryRateLimiter;
use tollgate::limiter::redis::RedisRateLimiter;
use tollgate::limiter::{Bucket, Charge, LimiterError, Quota, RateLimiter};
use tollgate::redis_link::{LinkError, RedisCalls};

use crate::support::engines::required_env;
use crate::support::redis_server::RedisServer;
use crate::support::redis_topologies::Target;

fn bucket(tag: &str, key: &str, limit: u64, period: Duration) -> Bucket {
    Bucket {
        key: key.to_owned(),
        tag: tag.to_owned(),
        quota: Quota {
            limit,
            period_us: period.as_micros() as u64,
        },
    }
}

fn charge(bucket: &Bucket, cost: u64) -> Charge {
    Charge {
        bucket: bucket.clone(),
        cost,
    }
}

/// The cases every engine must pass. `wait` lets time pass on the engine's clock.
pub(crate) async fn behaviour<W, F>(limiter: Arc<dyn RateLimiter>, wait: W)
where
    W: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let minute = Duration::from_secs(60);
    // Exactly the limit, then refusals that say when to retry.
    let a = bucket("ip:1", "a", 5, minute);
    for i in 0..5 {
        let decision = limiter.acquire(&[charge(&a, 1)]).await.unwrap();
        assert!(decision.allowed(), "request {i}");
        assert_eq!(decision.states[0].remaining, 4 - i);
    }
    let refused = limiter.acquire(&[charge(&a, 1)]).await.unwrap();
    assert!(!refused.allowed());
    let retry = refused.states[0].retry_after_us;
    assert!(
        (11_000_000..=12_100_000).contains(&retry),
        "one unit per 12 s, retry after {retry} us"
    );

    // All or nothing: b has room, a has none; b keeps its room.
    let b = bucket("ip:1", "b", 3, minute);
    let both = limiter
        .acquire(&[charge(&b, 1), charge(&a, 1)])
        .await
        .unwrap();
    assert!(!both.allowed());
    assert_eq!(
        limiter.peek(std::slice::from_ref(&b)).await.unwrap()[0].remaining,
        3
    );

    // Across tags too (two Redis calls): the one that took gives back.
    let c = bucket("key:9", "c", 3, minute);
    let across = limiter
        .acquire(&[charge(&c, 2), charge(&a, 1)])
        .await
        .unwrap();
    assert!(!across.allowed());
    assert_eq!(
        limiter.peek(std::slice::from_ref(&c)).await.unwrap()[0].remaining,
        3
    );

    // Peeking takes nothing.
    let peeked = limiter.peek(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!((peeked[0].remaining, peeked[1].remaining), (0, 3));

    // Token reservations settle both ways.
    let tokens = bucket("key:9", "tokens", 1000, minute);
    assert!(
        limiter
            .acquire(&[charge(&tokens, 600)])
            .await
            .unwrap()
            .allowed()
    );
    assert!(
        !limiter
            .acquire(&[charge(&tokens, 500)])
            .await
            .unwrap()
            .allowed(),
        "only 400 left"
    );
    limiter.settle(&[(tokens.clone(), -500)]).await.unwrap();
    let after_refund = limiter.peek(std::slice::from_ref(&tokens)).await.unwrap()[0].remaining;
    assert!((899..=900).contains(&after_refund), "{after_refund}");
    limiter.settle(&[(tokens.clone(), 300)]).await.unwrap();
    let after_extra = limiter.peek(std::slice::from_ref(&tokens)).await.unwrap()[0].remaining;
    assert!((599..=600).contains(&after_extra), "{after_extra}");
    limiter.settle(&[(tokens.clone(), -10_000)]).await.unwrap();
    assert_eq!(
        limiter.peek(std::slice::from_ref(&tokens)).await.unwrap()[0].remaining,
        1000,
        "never above full"
    );

    // Refill is continuous: after one emission interval exactly one more fits.
    let fast = bucket("ip:2", "fast", 2, Duration::from_secs(2));
    assert!(
        limiter
            .acquire(&[charge(&fast, 2)])
            .await
            .unwrap()
            .allowed()
    );
    assert!(
        !limiter
            .acquire(&[charge(&fast, 1)])
            .await
            .unwrap()
            .allowed()
    );
    wait(Duration::from_millis(1050)).await;
    assert!(
        limiter
            .acquire(&[charge(&fast, 1)])
            .await
            .unwrap()
            .allowed()
    );
    assert!(
        !limiter
            .acquire(&[charge(&fast, 1)])
            .await
            .unwrap()
            .allowed()
    );

    // Buckets are independent.
    let other = bucket("ip:3", "a", 5, minute);
    assert!(
        limiter
            .acquire(&[charge(&other, 5)])
            .await
            .unwrap()
            .allowed()
    );
}

#[tokio::test(start_paused = true)]
async fn memory_engine_behaviour() {
    behaviour(Arc::new(MemoryRateLimiter::new()), tokio::time::advance).await;
}

/// A limiter on the Redis `target` names, under a fresh prefix.
pub(crate) fn redis_limiter(target: &Target) -> Arc<dyn RateLimiter> {
    let prefix = format!("tg-test-{}", uuid::Uuid::new_v4().simple());
    Arc::new(RedisRateLimiter::new(
        target.link(Duration::from_millis(200)),
        &prefix,
    ))
}

#[tokio::test]
async fn redis_engine_behaviour() {
    let Some(url) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    behaviour(redis_limiter(&Target::plain(url)), tokio::time::sleep).await;
}

#[tokio::test(start_paused = true)]
async fn memory_stays_flat_as_distinct_clients_pass() {
    let limiter = MemoryRateLimiter::new();
    for round in 0..5u64 {
        for i in 0..20_000u64 {
            let b = bucket(
                &format!("ip:{round}-{i}"),
                "r",
                1000,
                Duration::from_secs(1),
            );
            assert!(limiter.acquire(&[charge(&b, 1)]).await.unwrap().allowed());
        }
        // A bucket refills in a second; once full it holds no information and is swept.
        tokio::time::advance(Duration::from_millis(2100)).await;
    }
    let last = bucket("ip:last", "r", 1000, Duration::from_secs(1));
    limiter.acquire(&[charge(&last, 1)]).await.unwrap();
    // Touch every shard (5,000 keys over 64 shards miss one with odds below 1e-30) so each sweeps.
    for i in 0..5_000u64 {
        limiter
            .peek(&[bucket(
                &format!("sweep-{i}"),
                "x",
                1,
                Duration::from_secs(1),
            )])
            .await
            .unwrap();
    }
    assert!(
        limiter.len() <= 1,
        "{} buckets held after 100,000 distinct clients",
        limiter.len()
    );
}

/// The attack: make the cache's Redis calls fail (an answer too large to store in time) so
/// that a shared breaker would switch the limiter to `fail_open`. Breakers are per backend on
/// the one shared connection: the cache's failure leaves the limiter deciding.
#[tokio::test]
async fn one_backends_redis_failures_do_not_switch_another_off() {
    let Some(url) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let link = Target::plain(url).link(Duration::from_millis(500));
    let cache = RedisCalls::new(link.clone(), "cache");
    let prefix = format!("tg-test-{}", uuid::Uuid::new_v4().simple());
    let limiter = RedisRateLimiter::new(link, &prefix);

    let failed = cache
        .query::<()>(&redis::cmd("TOLLGATE-NO-SUCH-COMMAND"))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let open = cache.query::<String>(&redis::cmd("PING")).await;
    assert!(
        matches!(open, Err(LinkError::CircuitOpen)),
        "the cache's breaker opened: {open:?}"
    );
    let a = bucket("ip:1", "isolation", 1, Duration::from_secs(60));
    assert!(
        limiter.acquire(&[charge(&a, 1)]).await.unwrap().allowed(),
        "the limiter still answers"
    );
    assert!(
        !limiter.acquire(&[charge(&a, 1)]).await.unwrap().allowed(),
        "and still refuses past its limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_fast_and_recovers_by_itself() {
    let Some(_) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let mut server = RedisServer::start().await;
    let limiter = redis_limiter(&Target::plain(server.url()));
    let a = bucket("ip:1", "outage", 1000, Duration::from_secs(60));
    assert!(limiter.acquire(&[charge(&a, 1)]).await.unwrap().allowed());

    server.stop().await;
    let started = Instant::now();
    let first = limiter.acquire(&[charge(&a, 1)]).await;
    assert!(first.is_err(), "{first:?}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );
    // While the breaker is open, calls do not wait at all.
    let fast = Instant::now();
    for _ in 0..100 {
        assert!(matches!(
            limiter.acquire(&[charge(&a, 1)]).await,
            Err(LimiterError::CircuitOpen)
        ));
    }
    assert!(
        fast.elapsed() < Duration::from_millis(50),
        "100 calls took {:?}",
        fast.elapsed()
    );

    server.restart().await;
    let recovered = crate::support::eventually(Duration::from_secs(10), || async {
        limiter
            .acquire(&[charge(&a, 1)])
            .await
            .is_ok_and(|d| d.allowed())
    })
    .await;
    assert!(recovered, "limits resume by themselves once Redis is back");
}
