//! Pools: one model over several deployments. Calls spread by weight; a deployment that
//! answers 429 is cooled down for its `Retry-After` and traffic comes back after; a member's
//! own limit passes calls to the next; the headroom strategy steers away from a deployment
//! about to run dry; two replicas share cooldowns through Redis; records and metrics name the
//! deployment that served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate::mock_upstream::MockOptions;
use tollgate::upstream::pool::shared::{MemoryPoolStore, PoolStore, RedisPoolStore};

use crate::support::engines::required_env;
use crate::support::redis_topologies::Target;
use crate::support::{MockServer, TestGateway};

const KEY_A: &str = "sk-deployment-a-1111";
const KEY_B: &str = "sk-deployment-b-2222";

/// Two deployments `a` and `b` (mocks of their own, each requiring its key) and a gateway
/// whose alias (unique to the test, so the process-wide metrics of tests running beside it
/// never mix) is served by them as `pool` says.
struct Pooled {
    gw: TestGateway,
    a: MockServer,
    b: MockServer,
    alias: String,
}

impl Pooled {
    async fn call(&self) -> reqwest::Response {
        self.gw
            .post("/v1/chat/completions", &chat(&self.alias))
            .send()
            .await
            .unwrap()
    }

    /// The deployment label of `upstream` in this test's pool.
    fn deployment(&self, upstream: &str) -> String {
        format!("deployment=\"{upstream}/{}\"", self.alias)
    }
}

async fn mock(key: &str, adjust: impl FnOnce(&mut MockOptions)) -> MockServer {
    let mut options = MockOptions {
        api_key: Some(key.to_owned()),
        ..MockOptions::default()
    };
    adjust(&mut options);
    MockServer::with(options).await
}

fn pool_toml(a: &MockServer, b: &MockServer, alias: &str, pool: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "a"
base_url = "{a}"
api_key_env = "KEY_A"

[[upstreams]]
name = "b"
base_url = "{b}"
api_key_env = "KEY_B"

[models.{alias}]
{pool}
"#,
        a = a.url(),
        b = b.url(),
    )
}

fn unique_alias() -> String {
    format!("pooled-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn pooled(pool: &str, a: MockServer, b: MockServer) -> Pooled {
    let alias = unique_alias();
    // The callers' own rate limits are off: the deployments' are what is tested.
    let toml = format!(
        "[limits]\nenabled = false\n{}",
        pool_toml(&a, &b, &alias, pool)
    );
    let gw = TestGateway::builder()
        .toml(&toml)
        .env("KEY_A", KEY_A)
        .env("KEY_B", KEY_B)
        .start()
        .await
        .unwrap();
    Pooled { gw, a, b, alias }
}

fn chat(alias: &str) -> Value {
    json!({"model": alias, "messages": [{"role": "user", "content": "which deployment?"}]})
}

async fn count(client: &reqwest::Client, mock: &MockServer) -> usize {
    mock.requests(client).await.len()
}

async fn forget(client: &reqwest::Client, mock: &MockServer) {
    mock.forget(client).await;
}

async fn fault(client: &reqwest::Client, mock: &MockServer, faults: Value) {
    mock.fault(client, faults).await;
}

/// The value of `metric` with labels containing `labels` on the gateway's `/metrics`.
fn metric(page: &str, metric: &str, labels: &str) -> u64 {
    page.lines()
        .filter(|line| line.starts_with(metric) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn ten_thousand_calls_spread_by_weight_and_records_name_the_deployment() {
    let a = mock(KEY_A, |m| m.record_limit = 20_000).await;
    let b = mock(KEY_B, |m| m.record_limit = 20_000).await;
    let pool = r#"pool = [{ upstream = "a", weight = 3 }, { upstream = "b", weight = 1 }]"#;
    let p = pooled(pool, a, b).await;
    let calls = 10_000;
    let statuses: Vec<u16> = futures_util::stream::iter(0..calls)
        .map(|_| async { p.call().await.status().as_u16() })
        .buffer_unordered(32)
        .collect()
        .await;
    let refused: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        refused.is_empty(),
        "{} refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    let page = p.gw.metrics().await;
    let served_a = metric(&page, "tollgate_pool_served_total", &p.deployment("a"));
    let served_b = metric(&page, "tollgate_pool_served_total", &p.deployment("b"));
    assert_eq!(served_a + served_b, calls);
    let share = served_a as f64 / calls as f64;
    assert!(
        (share - 0.75).abs() < 0.02,
        "a served {share:.3} (weight 3 of 4)"
    );

    let response = p.call().await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let record = p.gw.record_of(&id).await;
    assert!(
        matches!(record.upstream.as_deref(), Some("a" | "b")),
        "{:?}",
        record.upstream
    );
    assert_eq!(record.model_requested.as_deref(), Some(p.alias.as_str()));
    p.gw.stop().await;
}

#[tokio::test]
async fn a_deployment_answering_429_is_skipped_for_its_retry_after_then_served_again() {
    let a = mock(KEY_A, |_| {}).await;
    let b = mock(KEY_B, |_| {}).await;
    let pool = r#"pool = [{ upstream = "a" }, { upstream = "b" }]"#;
    let p = pooled(pool, a, b).await;
    let client = &p.gw.client;
    // a answers 429 with Retry-After: 4 (its faults are cleared once it has been tried).
    fault(
        client,
        &p.a,
        json!([{"status": 429, "retry_after": "4", "count": 50}]),
    )
    .await;
    let mut answered = 0;
    while count(client, &p.a).await == 0 {
        let response = p.call().await;
        assert_eq!(response.status(), 200, "b answers when a refuses");
        answered += 1;
        assert!(answered < 200, "a was never tried");
    }
    let cooled = Instant::now();
    client
        .delete(p.a.control("/_mock/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(count(client, &p.a).await, 1, "a is tried once, not retried");
    // While it cools, nothing goes to a.
    for _ in 0..40 {
        assert_eq!(p.call().await.status(), 200);
    }
    if cooled.elapsed() < Duration::from_millis(3_500) {
        assert_eq!(count(client, &p.a).await, 1, "a cooling down got a call");
    }
    // Once its Retry-After has passed, a gets calls again.
    tokio::time::sleep(Duration::from_millis(4_300).saturating_sub(cooled.elapsed())).await;
    for _ in 0..40 {
        assert_eq!(p.call().await.status(), 200);
    }
    assert!(count(client, &p.a).await > 5, "traffic came back to a");
    let page = p.gw.metrics().await;
    assert_eq!(
        metric(&page, "tollgate_pool_cooldowns_total", &p.deployment("a")),
        1
    );
    p.gw.stop().await;
}

#[tokio::test]
async fn a_bad_key_or_a_failing_deployment_is_passed_over_and_cools_after_its_allowance() {
    // a refuses the key the gateway holds for it: a 401 is the operator's problem, never the
    // caller's, so b answers; a cools on its third failure in a minute (allowed_fails = 2).
    let a = mock("sk-not-what-the-gateway-sends", |_| {}).await;
    let b = mock(KEY_B, |_| {}).await;
    let pool = r#"pool = [{ upstream = "a", weight = 100000 }, { upstream = "b" }]"#;
    let p = pooled(pool, a, b).await;
    for _ in 0..10 {
        assert_eq!(p.call().await.status(), 200);
    }
    let to_a = count(&p.gw.client, &p.a).await;
    assert!(
        (3..=4).contains(&to_a),
        "a cooled after its third failure: {to_a}"
    );
    p.gw.stop().await;

    // allowed_fails = 0: a 500 cools at once.
    let a = mock(KEY_A, |_| {}).await;
    let b = mock(KEY_B, |_| {}).await;
    let pool = r#"allowed_fails = 0
pool = [{ upstream = "a", weight = 100000 }, { upstream = "b" }]"#;
    let p = pooled(pool, a, b).await;
    fault(&p.gw.client, &p.a, json!([{"status": 500, "count": 10}])).await;
    for _ in 0..10 {
        assert_eq!(p.call().await.status(), 200);
    }
    assert!(
        count(&p.gw.client, &p.a).await <= 2,
        "a cooled on its first 500"
    );
    p.gw.stop().await;
}

#[tokio::test]
async fn a_timeout_ends_the_call_without_cooling_or_running_it_twice() {
    let a = mock(KEY_A, |_| {}).await;
    let b = mock(KEY_B, |_| {}).await;
    let alias = unique_alias();
    let toml = format!(
        "[limits]\nenabled = false\n[upstream]\nmax_retries = 0\n{}",
        pool_toml(
            &a,
            &b,
            &alias,
            r#"pool = [{ upstream = "a", weight = 100000 }, { upstream = "b" }]"#
        )
    );
    let gw = TestGateway::builder()
        .toml(&toml)
        .env("KEY_A", KEY_A)
        .env("KEY_B", KEY_B)
        .env("OPENAI_TIMEOUT", "400")
        .start()
        .await
        .unwrap();
    let p = Pooled { gw, a, b, alias };
    // a is slow past the deadline: the caller's request may have run there.
    fault(
        &p.gw.client,
        &p.a,
        json!([{"latency_ms": 1500, "count": 1}]),
    )
    .await;
    loop {
        let status = p.call().await.status();
        if status == 504 {
            break;
        }
        assert_eq!(status, 200);
    }
    assert_eq!(count(&p.gw.client, &p.b).await, 0, "not sent to b as well");
    let page = p.gw.metrics().await;
    assert_eq!(
        metric(&page, "tollgate_pool_cooldowns_total", &p.deployment("a")),
        0,
        "a timeout says nothing of the deployment"
    );
    p.gw.stop().await;
}

#[tokio::test]
async fn a_members_own_limit_passes_calls_to_the_next_and_refuses_when_all_are_spent() {
    let a = mock(KEY_A, |_| {}).await;
    let b = mock(KEY_B, |_| {}).await;
    let pool = r#"pool = [
  { upstream = "a", weight = 100, requests_per_minute = 3 },
  { upstream = "b", weight = 1, requests_per_minute = 2 },
]"#;
    let p = pooled(pool, a, b).await;
    for _ in 0..5 {
        let response = p.call().await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(count(&p.gw.client, &p.a).await, 3);
    assert_eq!(count(&p.gw.client, &p.b).await, 2);
    let refused = p.call().await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        count(&p.gw.client, &p.a).await + count(&p.gw.client, &p.b).await,
        5
    );
    p.gw.stop().await;
}

#[tokio::test]
async fn the_headroom_strategy_steers_away_from_a_deployment_before_it_runs_dry() {
    // a may serve 20 calls a minute and says so in its x-ratelimit headers; b has room.
    let a = mock(KEY_A, |m| m.requests_per_minute = Some(20)).await;
    let b = mock(KEY_B, |m| m.requests_per_minute = Some(100_000)).await;
    let pool = r#"strategy = "headroom"
pool = [{ upstream = "a", weight = 4 }, { upstream = "b" }]"#;
    let p = pooled(pool, a, b).await;
    for _ in 0..120 {
        let response = p.call().await;
        assert_eq!(response.status(), 200);
    }
    let served_a = count(&p.gw.client, &p.a).await;
    assert!(served_a >= 10, "a has the larger weight: {served_a}");
    assert!(served_a <= 20, "a was sent more than its limit: {served_a}");
    let page = p.gw.metrics().await;
    assert_eq!(
        metric(&page, "tollgate_pool_cooldowns_total", &p.deployment("a")),
        0,
        "a never had to refuse a call"
    );
    p.gw.stop().await;
}

#[tokio::test]
async fn least_busy_sends_to_the_deployment_with_fewer_calls_in_flight() {
    // a answers in 400 ms, b at once: with calls overlapping, most go to b.
    let a = mock(KEY_A, |m| m.latency = Duration::from_millis(400)).await;
    let b = mock(KEY_B, |_| {}).await;
    let pool = r#"strategy = "least_busy"
pool = [{ upstream = "a" }, { upstream = "b" }]"#;
    let p = pooled(pool, a, b).await;
    let statuses: Vec<u16> = futures_util::stream::iter(0..60)
        .map(|_| async { p.call().await.status().as_u16() })
        .buffer_unordered(6)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    let (to_a, to_b) = (
        count(&p.gw.client, &p.a).await,
        count(&p.gw.client, &p.b).await,
    );
    assert!(to_b >= 4 * to_a, "least busy: a {to_a}, b {to_b}");
    p.gw.stop().await;
}

#[tokio::test]
async fn two_replicas_share_a_cooldown_through_redis() {
    let Some(url) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let a = mock(KEY_A, |_| {}).await;
    let b = mock(KEY_B, |_| {}).await;
    let prefix = format!("tg-pool-{}", uuid::Uuid::new_v4().simple());
    let pool = r#"pool = [{ upstream = "a" }, { upstream = "b" }]"#;
    let alias = unique_alias();
    let toml = format!(
        "[limits]\nredis_prefix = \"{prefix}\"\n{}",
        pool_toml(&a, &b, &alias, pool)
    );
    let replica = || async {
        TestGateway::builder()
            .toml(&toml)
            .env("KEY_A", KEY_A)
            .env("KEY_B", KEY_B)
            .env("REDIS_URL", &url)
            .start()
            .await
            .unwrap()
    };
    let (first, second) = (replica().await, replica().await);
    let client = &first.client;
    fault(
        client,
        &a,
        json!([{"status": 429, "retry_after": "30", "count": 1}]),
    )
    .await;
    // The first replica meets a's 429...
    while count(client, &a).await == 0 {
        let response = first
            .post("/v1/chat/completions", &chat(&alias))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // ...and within a sync interval or two the second knows a is cooling.
    tokio::time::sleep(Duration::from_millis(700)).await;
    forget(client, &a).await;
    forget(client, &b).await;
    for _ in 0..40 {
        let response = second
            .post("/v1/chat/completions", &chat(&alias))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        count(client, &a).await,
        0,
        "the second replica sent calls to a cooling deployment"
    );
    assert_eq!(count(client, &b).await, 40, "b served them");
    first.stop().await;
    second.stop().await;
}

/// What every pool store must do: cooldowns extend to the longer one and end when told,
/// headroom readings replace the last and lapse, unknown deployments read as nothing known.
async fn pool_store_behaviour(store: &dyn PoolStore) {
    use tollgate::upstream::pool::deployment::Shared;
    let name =
        |n: &str| -> Arc<str> { Arc::from(format!("{n}-{}", uuid::Uuid::new_v4().simple())) };
    let (a, b, unknown) = (name("a"), name("b"), name("unknown"));
    let cooling = |ms| Shared {
        cooling_ms: ms,
        headroom: None,
    };
    store.publish(&[(a.clone(), cooling(2_000))]).await.unwrap();
    store.publish(&[(a.clone(), cooling(500))]).await.unwrap();
    store
        .publish(&[(
            b.clone(),
            Shared {
                cooling_ms: 0,
                headroom: Some((120, 300)),
            },
        )])
        .await
        .unwrap();
    let known = store
        .fetch(&[a.clone(), b.clone(), unknown.clone()])
        .await
        .unwrap();
    assert!(
        (1_500..=2_000).contains(&known[0].cooling_ms),
        "the longer cooldown stands: {:?}",
        known[0]
    );
    assert_eq!(known[0].headroom, None);
    assert_eq!(known[1].cooling_ms, 0);
    let (share, left) = known[1].headroom.expect("b's headroom");
    assert_eq!(share, 120);
    assert!(left <= 300 && left > 100, "{left}");
    assert_eq!(known[2], Shared::default());
    // A replica's recovery is its own: publishing no cooldown leaves the shared one.
    store.publish(&[(a.clone(), cooling(0))]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let known = store.fetch(&[a, b]).await.unwrap();
    assert!(known[0].cooling_ms > 1_000, "{:?}", known[0]);
    assert_eq!(known[1].headroom, None, "a reading lapses with its reset");
}

#[tokio::test]
async fn pool_store_behaviour_in_memory() {
    pool_store_behaviour(&MemoryPoolStore::default()).await;
}

#[tokio::test]
async fn pool_store_behaviour_in_redis() {
    let Some(url) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let link = Target::plain(url).link(Duration::from_millis(500));
    let prefix = format!("tg-pool-{}", uuid::Uuid::new_v4().simple());
    pool_store_behaviour(&RedisPoolStore::new(link, &prefix)).await;
}

#[tokio::test]
async fn a_key_limited_to_other_models_cannot_reach_a_pools_deployments_through_it() {
    let a = mock(KEY_A, |_| {}).await;
    let b = mock(KEY_B, |_| {}).await;
    let pool = r#"pool = [{ upstream = "a", target = "gpt-4o-mini" }, { upstream = "b", target = "gpt-4o-mini" }]"#;
    let p = pooled(pool, a, b).await;
    // The key may use gpt-4o-mini, which the pool's deployments serve, but not the pool.
    let (_, limited) = p.gw.create_key(&["gpt-4o-mini"]).await;
    let response =
        p.gw.client
            .post(p.gw.url("/v1/chat/completions"))
            .bearer_auth(&limited)
            .json(&chat(&p.alias))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        count(&p.gw.client, &p.a).await + count(&p.gw.client, &p.b).await,
        0
    );
    // A key given the pool may use it.
    let (_, allowed) = p.gw.create_key(&[p.alias.as_str()]).await;
    let response =
        p.gw.client
            .post(p.gw.url("/v1/chat/completions"))
            .bearer_auth(&allowed)
            .json(&chat(&p.alias))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    p.gw.stop().await;
}
