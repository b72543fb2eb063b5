//! The response cache on both engines: what is cached and what is not, tenant scoping,
//! `Cache-Control`, hits recorded at zero cost, the purge route, concurrent misses merged into
//! one upstream call, and a cache backend outage that never fails a request.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::support::engines::required_env;
use crate::support::redis_server::RedisServer;
use crate::support::redis_topologies::Target;
use crate::support::{TestGateway, eventually};

const ADMIN: &str = "admin-token-for-cache-tests";

/// The engines the suite runs on: memory, and a Redis (of any topology) under a fresh prefix.
pub(crate) enum Engine {
    Memory,
    Redis(Target),
}

async fn gateway(engine: Engine, toml: &str) -> TestGateway {
    gateway_with(engine, toml, Duration::ZERO).await
}

/// A gateway on `engine` whose mock upstream takes `latency` per answer.
async fn gateway_with(engine: Engine, toml: &str, latency: Duration) -> TestGateway {
    let mut builder = TestGateway::builder()
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .mock(|mock| mock.latency = latency);
    let mut toml = toml.to_owned();
    if let Engine::Redis(target) = engine {
        let prefix = format!("tg-cache-{}:", uuid::Uuid::new_v4().simple());
        toml = format!("[limits]\nredis_prefix = \"{prefix}\"\nbackend_timeout_ms = 500\n{toml}");
        builder = builder.env("REDIS_URL", &target.url);
        for (name, value) in &target.env {
            builder = builder.env(name, value);
        }
    }
    builder.toml(&toml).start().await.unwrap()
}

/// One answer: the cache header, the cost header and the body.
struct Answer {
    cache: String,
    cost: Option<String>,
    request_id: String,
    body: Value,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        cache: header("x-tollgate-cache").unwrap_or_default(),
        cost: header("x-tollgate-cost-usd"),
        request_id: header("x-request-id").unwrap(),
        body: response.json().await.unwrap(),
    }
}

fn chat(content: &str, temperature: f64) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "temperature": temperature,
        "messages": [{"role": "user", "content": content}],
    })
}

/// How many calls the mock received on `path`.
async fn upstream_calls(gw: &TestGateway, path: &str) -> usize {
    gw.upstream_requests()
        .await
        .iter()
        .filter(|r| r["path"] == path)
        .count()
}

pub(crate) async fn behaviour(engine: Engine) {
    let gw = gateway(engine, "").await;
    const CHAT: &str = "/v1/chat/completions";

    // A deterministic chat: a miss, then a hit with the same body, one upstream call.
    let first = send(gw.post(CHAT, &chat("cache me", 0.0))).await;
    assert_eq!(first.cache, "MISS");
    assert_ne!(first.cost.as_deref(), Some("0.000000"));
    let hit = eventually(Duration::from_secs(2), || async {
        // The store is written in the background; Redis may take a moment.
        send(gw.post(CHAT, &chat("cache me", 0.0))).await.cache == "HIT"
    })
    .await;
    assert!(hit, "the second identical request is a hit");
    let second = send(gw.post(CHAT, &chat("cache me", 0.0))).await;
    assert_eq!(second.cache, "HIT");
    assert_eq!(second.body, first.body, "a hit returns the stored answer");
    assert_eq!(second.cost.as_deref(), Some("0.000000"));
    assert_eq!(upstream_calls(&gw, CHAT).await, 1);

    // Formatting and key order do not split an entry.
    let reordered = gw
        .client
        .post(gw.url(CHAT))
        .bearer_auth(&gw.key)
        .header("content-type", "application/json")
        .body(r#"{ "messages": [{"content": "cache me", "role": "user"}], "temperature": 0.0, "model": "gpt-4o-mini" }"#);
    assert_eq!(send(reordered).await.cache, "HIT");

    // The hit's record: zero cost, the model that answered, HIT; the miss's: its real cost.
    let record = gw.record_of(&second.request_id).await;
    assert_eq!(record.cache_status.as_deref(), Some("HIT"));
    assert_eq!(record.cost_nanos, Some(0));
    assert_eq!(record.model_used.as_deref(), first.body["model"].as_str());
    let miss = gw.record_of(&first.request_id).await;
    assert_eq!(miss.cache_status.as_deref(), Some("MISS"));
    assert!(miss.cost_nanos.unwrap() > 0);

    // Another tenant never sees this key's answers.
    let (_, other_key) = gw.create_key(&[]).await;
    let other = send(
        gw.client
            .post(gw.url(CHAT))
            .bearer_auth(&other_key)
            .json(&chat("cache me", 0.0)),
    )
    .await;
    assert_eq!(other.cache, "MISS");
    assert_eq!(upstream_calls(&gw, CHAT).await, 2);

    // Not deterministic, or streamed: bypassed, every time.
    for _ in 0..2 {
        assert_eq!(
            send(gw.post(CHAT, &chat("cache me", 0.7))).await.cache,
            "BYPASS"
        );
    }
    let mut streamed = chat("cache me", 0.0);
    streamed["stream"] = json!(true);
    let response = gw.post(CHAT, &streamed).send().await.unwrap();
    assert_eq!(response.headers()["x-tollgate-cache"], "BYPASS");
    let _ = response.text().await.unwrap();
    assert_eq!(upstream_calls(&gw, CHAT).await, 5);

    // no-cache skips the lookup but refreshes the entry; no-store is never written.
    let refreshed = send(
        gw.post(CHAT, &chat("cache me", 0.0))
            .header("cache-control", "no-cache"),
    )
    .await;
    assert_eq!(refreshed.cache, "BYPASS");
    assert_eq!(upstream_calls(&gw, CHAT).await, 6);
    for _ in 0..2 {
        let unstored = send(
            gw.post(CHAT, &chat("never stored", 0.0))
                .header("cache-control", "no-store"),
        )
        .await;
        assert_eq!(unstored.cache, "MISS");
    }
    assert_eq!(upstream_calls(&gw, CHAT).await, 8);

    // Embeddings are cached by default.
    let embed = json!({"model": "text-embedding-3-small", "input": "cache this vector"});
    assert_eq!(send(gw.post("/v1/embeddings", &embed)).await.cache, "MISS");
    let embedded = eventually(Duration::from_secs(2), || async {
        send(gw.post("/v1/embeddings", &embed)).await.cache == "HIT"
    })
    .await;
    assert!(embedded, "embeddings are cached");

    // The seeds' route is a chat call underneath, and says so.
    let generate = json!({"prompt": "cache the seeds' route", "temperature": 0});
    let header = |response: reqwest::Response| {
        response.headers()["x-tollgate-cache"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let first = gw.post("/api/ai/generate", &generate).send().await.unwrap();
    assert_eq!(header(first), "MISS");
    let generated = eventually(Duration::from_secs(2), || async {
        header(gw.post("/api/ai/generate", &generate).send().await.unwrap()) == "HIT"
    })
    .await;
    assert!(generated, "/api/ai/generate is answered from the cache");

    // The purge empties it: the next identical request goes upstream again.
    let purged: Value = gw
        .client
        .delete(gw.url("/admin/cache"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(purged["purged"].as_u64().unwrap() >= 2, "{purged}");
    assert_eq!(
        send(gw.post(CHAT, &chat("cache me", 0.0))).await.cache,
        "MISS"
    );
    let unauthorised = gw
        .client
        .delete(gw.url("/admin/cache"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn cache_behaviour_in_memory() {
    behaviour(Engine::Memory).await;
}

#[tokio::test]
async fn cache_behaviour_in_redis() {
    let Some(url) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    behaviour(Engine::Redis(Target::plain(url))).await;
}

async fn concurrent_misses(engine: Engine) {
    let gw = gateway_with(engine, "", Duration::from_millis(300)).await;
    let answers =
        join_all((0..16).map(|_| send(gw.post("/v1/chat/completions", &chat("all at once", 0.0)))))
            .await;
    assert_eq!(upstream_calls(&gw, "/v1/chat/completions").await, 1);
    assert_eq!(answers.iter().filter(|a| a.cache == "MISS").count(), 1);
    assert_eq!(answers.iter().filter(|a| a.cache == "HIT").count(), 15);
    assert!(answers.iter().all(|a| a.body == answers[0].body));
    gw.stop().await;
}

#[tokio::test]
async fn identical_concurrent_misses_go_upstream_once_in_memory() {
    concurrent_misses(Engine::Memory).await;
}

#[tokio::test]
async fn identical_concurrent_misses_go_upstream_once_in_redis() {
    let Some(url) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    concurrent_misses(Engine::Redis(Target::plain(url))).await;
}

#[tokio::test]
async fn a_cache_outage_never_fails_a_request() {
    let mut redis = RedisServer::start().await;
    let gw = gateway(Engine::Redis(Target::plain(redis.url())), "").await;
    const CHAT: &str = "/v1/chat/completions";
    assert_eq!(
        send(gw.post(CHAT, &chat("outage", 0.0))).await.cache,
        "MISS"
    );
    redis.stop().await;
    for _ in 0..3 {
        let answer = send(gw.post(CHAT, &chat("outage", 0.0))).await;
        assert_eq!(
            answer.cache, "MISS",
            "served from upstream while Redis is down"
        );
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"tollgate_backend_errors_total{backend="cache"}"#),
        "the outage is counted"
    );
    redis.restart().await;
    let back = eventually(Duration::from_secs(5), || async {
        send(gw.post(CHAT, &chat("after", 0.0))).await.cache == "HIT"
    })
    .await;
    assert!(back, "the cache resumes by itself once Redis is back");
    gw.stop().await;
}

#[tokio::test]
async fn cache_policies_follow_the_config() {
    let gw = gateway(
        Engine::Memory,
        "[cache]\nchat = \"always\"\nembeddings = \"off\"\n",
    )
    .await;
    const CHAT: &str = "/v1/chat/completions";
    assert_eq!(send(gw.post(CHAT, &chat("warm", 1.0))).await.cache, "MISS");
    assert_eq!(send(gw.post(CHAT, &chat("warm", 1.0))).await.cache, "HIT");
    let embed = json!({"model": "text-embedding-3-small", "input": "x"});
    assert_eq!(
        send(gw.post("/v1/embeddings", &embed)).await.cache,
        "BYPASS"
    );
    gw.stop().await;

    // An answer over max_entry_bytes is not stored (a chat answer is ~600 bytes).
    let gw = gateway(Engine::Memory, "[cache]\nmax_entry_bytes = 100\n").await;
    for _ in 0..2 {
        assert_eq!(send(gw.post(CHAT, &chat("big", 0.0))).await.cache, "MISS");
    }
    gw.stop().await;

    let gw = gateway(Engine::Memory, "[cache]\nchat = \"off\"\n").await;
    assert_eq!(
        send(gw.post(CHAT, &chat("warm", 0.0))).await.cache,
        "BYPASS"
    );
    assert_eq!(
        send(gw.post(CHAT, &chat("warm", 0.0))).await.cache,
        "BYPASS"
    );
    gw.stop().await;
}
