//! Redis as clouds sell it: TLS with a private CA and client certificates, a Redis Cluster
//! (slots moving under load), and a Sentinel-managed primary that fails over under load. Each
//! runs the limiter, budget and cache behaviour suites, and the attacks a TLS link must
//! withstand (a server the CA did not sign, a missing client certificate, `#insecure`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate::budget::RedisBudgets;

use crate::support::engines::required_env;
use crate::support::redis_topologies::{RedisCluster, SentinelGroup, Target, TestCa, TlsRedis};
use crate::support::{TestGateway, error_of};

fn chat() -> serde_json::Value {
    json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 5 })
}

/// The store-level suites every Redis topology must pass.
async fn store_suites(target: &Target) {
    crate::limiter::behaviour(crate::limiter::redis_limiter(target), tokio::time::sleep).await;
    let prefix = format!("tg-budget-{}", uuid::Uuid::new_v4().simple());
    crate::budgets::behaviour(Arc::new(RedisBudgets::new(
        target.link(Duration::from_secs(1)),
        &prefix,
    )))
    .await;
}

/// A gateway on `target` with one request rule and `on_backend_error = fail_closed`, so
/// a Redis it cannot use shows as 503 instead of being served around.
async fn limited_gateway(target: &Target, requests: u32) -> TestGateway {
    let mut builder = TestGateway::builder()
        .env("REDIS_URL", &target.url)
        .toml(&format!(
            "[limits]\nredis_prefix = \"tg-managed-{}\"\nbackend_timeout_ms = 1000\n\
         on_backend_error = \"fail_closed\"\n\n[[limits.rules]]\nscope = \"key\"\n\
         route = \"chat\"\nrequests = {requests}\nper = \"1h\"\n",
            uuid::Uuid::new_v4().simple()
        ));
    for (name, value) in &target.env {
        builder = builder.env(name, value);
    }
    builder.start().await.unwrap()
}

async fn statuses(gw: &TestGateway, count: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        statuses.push(
            gw.post("/v1/chat/completions", &chat())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_with_a_private_ca_and_a_client_certificate_serves_every_backend() {
    let Some(_) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "trusted");
    let server = TlsRedis::start(&ca).await;
    let (cert, key) = ca.issue("client");
    let target = Target {
        url: format!("rediss://localhost:{}", server.port),
        env: vec![
            ("TOLLGATE_REDIS_CA_FILE", ca.cert()),
            ("TOLLGATE_REDIS_CERT_FILE", cert),
            ("TOLLGATE_REDIS_KEY_FILE", key),
        ],
    };
    store_suites(&target).await;
    crate::cache::behaviour(crate::cache::Engine::Redis(target.clone())).await;
    let gw = limited_gateway(&target, 3).await;
    assert_eq!(statuses(&gw, 4).await, [200, 200, 200, 429]);
    let ready: serde_json::Value = gw
        .client
        .get(gw.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["redis"], "ok", "{ready}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_link_refuses_a_server_its_ca_did_not_sign_and_goes_without_a_client_certificate_nowhere()
 {
    let Some(_) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestCa::new(dir.path(), "trusted");
    let rogue = TestCa::new(dir.path(), "rogue");
    let impostor = TlsRedis::start(&rogue).await;
    let (cert, key) = trusted.issue("client");
    let client_files = vec![
        ("TOLLGATE_REDIS_CERT_FILE", cert),
        ("TOLLGATE_REDIS_KEY_FILE", key),
    ];
    // A server whose certificate the configured CA did not sign: nothing is sent to it.
    let mut env = client_files.clone();
    env.push(("TOLLGATE_REDIS_CA_FILE", trusted.cert()));
    let gw = limited_gateway(
        &Target {
            url: format!("rediss://localhost:{}", impostor.port),
            env,
        },
        100,
    )
    .await;
    assert_eq!(statuses(&gw, 2).await, [503, 503]);
    gw.stop().await;

    // The real server, but no client certificate: it refuses the handshake.
    let server = TlsRedis::start(&trusted).await;
    let gw = limited_gateway(
        &Target {
            url: format!("rediss://localhost:{}", server.port),
            env: vec![("TOLLGATE_REDIS_CA_FILE", trusted.cert())],
        },
        100,
    )
    .await;
    assert_eq!(statuses(&gw, 2).await, [503, 503]);
    gw.stop().await;

    // Switching certificate checks off, or naming a CA for a plain link, stops start-up.
    for (url, extra, says) in [
        (
            format!("rediss://localhost:{}/#insecure", server.port),
            vec![],
            "certificates are always checked",
        ),
        (
            format!("redis://127.0.0.1:{}", server.port),
            vec![("TOLLGATE_REDIS_CA_FILE", trusted.cert())],
            "only used with TLS",
        ),
        (
            format!("rediss://localhost:{}", server.port),
            vec![("TOLLGATE_REDIS_CERT_FILE", trusted.cert())],
            "needs both",
        ),
    ] {
        let mut env: tollgate::config::Env = [("REDIS_URL", url.as_str())].into_iter().collect();
        for (name, value) in &extra {
            env.set(name, value);
        }
        let error = tollgate::config::Config::from_toml_str("t.toml", "", &env)
            .expect_err("start-up refuses")
            .0
            .join("\n");
        assert!(error.contains(says), "{error}");
        assert!(!error.contains("localhost:"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_serves_every_backend_and_two_replicas_stay_exact_while_slots_move() {
    let Some(_) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let cluster = RedisCluster::start().await;
    let target = cluster.target();
    store_suites(&target).await;
    crate::cache::behaviour(crate::cache::Engine::Redis(target.clone())).await;
    // Keys of many callers land on every node (they are hash-tagged per bucket, not per
    // deployment), so no node carries the whole load.
    let per_node = cluster.keys_per_node().await;
    assert!(per_node.iter().all(|n| *n > 0), "{per_node:?}");

    // Two processes admit exactly the limit while a third of the slots moves between nodes.
    crate::limits::redis::two_processes_admit_exactly_the_limit(&target, cluster.reshard(2000))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_is_followed_and_the_limit_holds_across_it() {
    let Some(_) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let mut group = SentinelGroup::start().await;
    let target = group.target();
    store_suites(&target).await;
    let gw = limited_gateway(&target, 60).await;
    assert_eq!(statuses(&gw, 20).await, [200; 20]);

    // Load runs while the primary is killed and the Sentinel promotes the replica.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, refused, unavailable) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let slowest_ms = Arc::new(AtomicU64::new(0));
    let load = {
        let request = gw.post("/v1/chat/completions", &chat());
        let (stop, served, refused, unavailable, slowest) = (
            stop.clone(),
            served.clone(),
            refused.clone(),
            unavailable.clone(),
            slowest_ms.clone(),
        );
        async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let status = request.try_clone().unwrap().send().await.unwrap().status();
                slowest.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                match status.as_u16() {
                    200 => served.fetch_add(1, Ordering::Relaxed),
                    429 => refused.fetch_add(1, Ordering::Relaxed),
                    503 => unavailable.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected {other}"),
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
                // Stop short of the limit: what is left is counted after the failover.
                if served.load(Ordering::Relaxed) >= 30 {
                    break;
                }
            }
        }
    };
    let failover = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        group.kill_primary().await;
        let promoted = crate::support::eventually(Duration::from_secs(20), || async {
            group.current_primary().await == Some(group.replica)
        })
        .await;
        assert!(promoted, "the Sentinel promoted the replica");
        // Served again through the new primary, found by asking the Sentinel.
        let before = served.load(Ordering::Relaxed);
        let back = crate::support::eventually(Duration::from_secs(10), || async {
            served.load(Ordering::Relaxed) > before
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        back
    };
    let ((), back) = tokio::join!(load, failover);
    assert!(back, "requests are served again after the failover");
    let slowest = slowest_ms.load(Ordering::Relaxed);
    assert!(
        slowest < 3000,
        "no request waits out the failover: {slowest} ms"
    );
    // The counters moved with the data: 20 before, what the load got, and the rest now make
    // exactly 60 (the replica held every acknowledged write before the kill).
    let during = served.load(Ordering::Relaxed);
    let after = statuses(&gw, 60 - 20 - during + 5).await;
    assert_eq!(
        after.iter().filter(|s| **s == 200).count(),
        60 - 20 - during,
        "{after:?}"
    );
    assert_eq!(after.iter().filter(|s| **s == 429).count(), 5, "{after:?}");
    assert_eq!(refused.load(Ordering::Relaxed), 0);
    let error = error_of(
        gw.post("/v1/chat/completions", &chat())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error.0, 429);
    gw.stop().await;
}
