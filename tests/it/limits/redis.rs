//! Limits shared through Redis: two processes admit exactly the limit, and a Redis that dies
//! (down from the start, or killed mid-run and restarted) is met by the configured policy.

use super::*;
use crate::support::redis_topologies::Target;

async fn with_dead_redis(policy: &str) -> (u16, Duration) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = TestGateway::builder()
        .toml(&format!(
            "[limits]\non_backend_error = \"{policy}\"\nbackend_timeout_ms = 50\n"
        ))
        .env("REDIS_URL", &format!("redis://127.0.0.1:{port}"))
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            gw.post("/v1/chat/completions", &chat())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    let took = started.elapsed();
    // Readiness names Redis, and fails only when the limits cannot serve without it.
    let ready = gw.client.get(gw.url("/health/ready")).send().await.unwrap();
    let ready_status = ready.status().as_u16();
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"], "unavailable", "{ready}");
    let expected = if policy == "fail_closed" { 503 } else { 200 };
    assert_eq!(ready_status, expected, "{ready}");
    gw.stop().await;
    assert!(statuses.windows(2).all(|w| w[0] == w[1]), "{statuses:?}");
    (statuses[0], took)
}

#[tokio::test]
async fn with_redis_down_fail_open_serves_and_fail_closed_refuses_quickly() {
    let (status, took) = with_dead_redis("fail_open").await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (status, took) = with_dead_redis("fail_closed").await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_redis_admit_exactly_the_limit() {
    let Some(redis) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    two_processes_admit_exactly_the_limit(&Target::plain(redis), async {}).await;
}

/// Two `tollgate serve` processes on the Redis `target` names admit exactly a request limit
/// and a token limit between them, 60 requests at once each, while `during` runs beside the
/// first burst (a cluster moving slots, say).
pub(crate) async fn two_processes_admit_exactly_the_limit(
    target: &Target,
    during: impl std::future::Future<Output = ()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("shared.db").display());
    let mock = crate::support::MockServer::start().await;
    let prefix = format!("tg-e2e-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(
        dir.path().join("tollgate.toml"),
        format!(
            "[cache]\nembeddings = \"off\"\n\n[limits]\nredis_prefix = \"{prefix}\"\n\
             # Exactness, not outages, is under test: a loaded machine must not fail open.\n\
             backend_timeout_ms = 2000\non_backend_error = \"fail_closed\"\n\n\
             [[limits.rules]]\nscope = \"key\"\nroute = \"chat\"\nrequests = 20\nper = \"1h\"\n\n\
             [[limits.rules]]\nscope = \"key\"\nroute = \"embeddings\"\ntokens = 100\nper = \"1h\"\n"
        ),
    )
    .unwrap();
    let key = binary::create_key(&database, dir.path()).await;
    let mut env = vec![
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database.clone()),
        ("REDIS_URL", target.url.clone()),
        (
            "TOLLGATE_CONFIG",
            dir.path().join("tollgate.toml").display().to_string(),
        ),
    ];
    env.extend(target.env.iter().cloned());
    let first = binary::serve(&env, dir.path()).await;
    let second = binary::serve(&env, dir.path()).await;
    let client = reqwest::Client::new();
    let fire = |body: Value, path: &'static str| {
        let urls = [
            format!("http://{}{path}", first.address),
            format!("http://{}{path}", second.address),
        ];
        let client = client.clone();
        let key = key.clone();
        async move {
            let requests = (0..60).map(|i| {
                client
                    .post(&urls[i % 2])
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
            });
            let answers = futures_util::future::join_all(requests).await;
            let ok = answers
                .iter()
                .filter(|a| a.as_ref().is_ok_and(|r| r.status() == 200))
                .count();
            let limited = answers
                .iter()
                .filter(|a| a.as_ref().is_ok_and(|r| r.status() == 429))
                .count();
            (ok, limited)
        }
    };
    let (chat_answers, ()) = tokio::join!(fire(chat(), "/v1/chat/completions"), during);
    assert_eq!(
        chat_answers,
        (20, 40),
        "20 requests per hour across both replicas"
    );
    // "hello world" costs 2 tokens to embed: 100 tokens admit exactly 50 of 60 (the cache is
    // off: a hit uses no upstream tokens and is settled at zero).
    let embed = json!({ "model": "text-embedding-3-small", "input": "hello world" });
    assert_eq!(
        fire(embed, "/v1/embeddings").await,
        (50, 10),
        "100 tokens per hour across both replicas"
    );
    first.kill().await;
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_and_restarted_under_two_processes() {
    let Some(_) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let mut redis = crate::support::redis_server::RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("outage.db").display());
    let mock = crate::support::MockServer::start().await;
    std::fs::write(
        dir.path().join("tollgate.toml"),
        "[limits]\nbackend_timeout_ms = 150\non_backend_error = \"fail_open\"\n\n\
         [[limits.rules]]\nscope = \"key\"\nroute = \"chat\"\nrequests = 30\nper = \"1h\"\n",
    )
    .unwrap();
    let key = binary::create_key(&database, dir.path()).await;
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database),
        ("REDIS_URL", redis.url()),
        (
            "TOLLGATE_CONFIG",
            dir.path().join("tollgate.toml").display().to_string(),
        ),
    ];
    let replicas = [
        binary::serve(&env, dir.path()).await,
        binary::serve(&env, dir.path()).await,
    ];
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| format!("http://{}/v1/chat/completions", r.address))
        .collect();
    let client = reqwest::Client::new();
    let send = |i: usize| {
        let request = client
            .post(&urls[i % 2])
            .bearer_auth(&key)
            .json(&chat())
            .send();
        async move {
            let started = Instant::now();
            let status = request.await.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, started.elapsed())
        }
    };

    // Healthy: the shared limit holds across both replicas. (The backend timeout is 150 ms, not
    // less: under a loaded CI machine a healthy Redis call took over 50 ms, and fail_open then
    // served a 31st request.)
    let mut healthy = Vec::new();
    for i in 0..40 {
        healthy.push(send(i).await.0);
    }
    assert_eq!(healthy.iter().filter(|s| **s == 200).count(), 30);
    assert_eq!(healthy.iter().filter(|s| **s == 429).count(), 10);

    // Redis dies: fail_open serves every request, none waits past the timeout for long.
    redis.stop().await;
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        let (status, took) = send(i).await;
        assert_eq!(
            status, 200,
            "fail_open serves while Redis is down (request {i})"
        );
        slowest = slowest.max(took);
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a request waited {slowest:?} during the outage"
    );

    // Redis returns (empty: it keeps nothing on disk): limits resume by themselves.
    redis.restart().await;
    let resumed = crate::support::eventually(Duration::from_secs(10), || async {
        let mut refused = false;
        for i in 0..40 {
            refused |= send(i).await.0 == 429;
        }
        refused
    })
    .await;
    assert!(
        resumed,
        "the shared limit is enforced again after Redis came back"
    );
    for replica in replicas {
        let log = replica.stop().await;
        assert!(!log.contains("panicked"), "{log}");
    }
}
