//! PostgreSQL stopped for 10 s under 300 requests a second (`pg_ctl stop -m fast` on a cluster
//! the test owns, so connections are refused as in a restart or failover): no request waits
//! for it (p99 under 50 ms throughout), every response has its record, and a key revoked once
//! the database is back stops working within a second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::binary;
use crate::support::engines::required_env;
use crate::support::pg_cluster::PgCluster;
use crate::support::redis_topologies::TestCa;

/// One request of the paced load: when it started (since the load began), how long it took,
/// its status (0: no answer).
type Sample = (Duration, Duration, u16);

/// Sends `rate` requests a second until `stop` is set; every answer's sample.
async fn paced_load(
    url: String,
    key: String,
    rate: u32,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut requests = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let began = Instant::now();
    let body =
        json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "outage" }] });
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        ticks.tick().await;
        let request = client.post(&url).bearer_auth(&key).json(&body);
        let samples = samples.clone();
        requests.spawn(async move {
            let started = Instant::now();
            let status = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if response.bytes().await.is_err() {
                        0
                    } else {
                        status
                    }
                }
                Err(_) => 0,
            };
            let took = started.elapsed();
            samples
                .lock()
                .unwrap()
                .push((started - began, took, status));
        });
    }
    while requests.join_next().await.is_some() {}
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.sort_by_key(|s| s.0);
    samples
}

fn percentile(samples: &[&Sample], p: f64) -> Duration {
    let mut took: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    took.sort();
    took[((took.len() as f64 * p).ceil() as usize).clamp(1, took.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgres_costs_no_latency_loses_no_record_and_revocation_still_lands() {
    let Some(_) = required_env("TOLLGATE_TEST_DATABASE_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "pg");
    let cluster = PgCluster::start(Some(&ca)).await;
    let url = cluster.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.cert()),
    );
    std::fs::write(
        dir.path().join("tollgate.toml"),
        "[limits]\nenabled = false\n\n[records]\nflush_ms = 100\n",
    )
    .unwrap();
    let (revoked_id, revoked) = binary::create_key_with(&url, dir.path(), &[]).await;
    let binary::Stack {
        served: gateway,
        key,
        mock: _mock,
    } = binary::stack(
        dir.path(),
        Some(&url),
        &[
            ("TOLLGATE_DATA_DIR", dir.path().display().to_string()),
            (
                "TOLLGATE_CONFIG",
                dir.path().join("tollgate.toml").display().to_string(),
            ),
        ],
    )
    .await;
    let chat_url = format!("http://{}/v1/chat/completions", gateway.address);
    let client = reqwest::Client::new();
    let status_for = |secret: &str| {
        client
            .post(&chat_url)
            .bearer_auth(secret)
            .json(&json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    // Both keys are seen once before the outage (a key never seen must wait for the database).
    assert_eq!(status_for(&revoked).await.unwrap().status(), 200);
    let mut extra_responses = 1;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio_util::task::TaskTracker::new().spawn(paced_load(
        chat_url.clone(),
        key,
        300,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outage_began = Instant::now();
    cluster.stop().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.start_again().await;
    let outage = outage_began.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Revoked once the database answers: refused everywhere within a second (the cache's
    // lifetime) and a lookup.
    let revoke = tokio::process::Command::new(binary::path())
        .args(["keys", "revoke", &revoked_id])
        .env("DATABASE_URL", &url)
        .env_remove("TOLLGATE_CONFIG")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    let revoked_at = Instant::now();
    let refused_after = loop {
        let status = status_for(&revoked).await.unwrap().status().as_u16();
        // Refused or not, each answer is audited.
        extra_responses += 1;
        if status == 401 {
            break revoked_at.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the revocation never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = load.await.unwrap();
    gateway.signal("TERM").await;
    let (code, log) = gateway.finish().await;
    assert_eq!(code, Some(0), "{log}");

    let failed: Vec<&Sample> = samples.iter().filter(|s| s.2 != 200).collect();
    assert!(
        failed.is_empty(),
        "every request was served: {:?}",
        &failed[..failed.len().min(5)]
    );
    let window = |from: Duration, to: Duration| -> Vec<&Sample> {
        samples.iter().filter(|s| s.0 >= from && s.0 < to).collect()
    };
    let during = window(Duration::from_secs(3), Duration::from_secs(3) + outage);
    let all: Vec<&Sample> = samples.iter().collect();
    let (p99_during, p99_all) = (percentile(&during, 0.99), percentile(&all, 0.99));
    let slowest = samples.iter().map(|s| s.1).max().unwrap();
    eprintln!(
        "postgres outage: {} requests ({} during the {outage:?} outage), p50 {:?}, p99 {p99_all:?}, \
         p99 during the outage {p99_during:?}, slowest {slowest:?}; revocation refused after {refused_after:?}",
        samples.len(),
        during.len(),
        percentile(&all, 0.5),
    );
    assert!(
        during.len() > 2000,
        "the load ran through the outage: {}",
        during.len()
    );
    assert!(
        p99_during < Duration::from_millis(50),
        "p99 during the outage {p99_during:?}"
    );
    assert!(p99_all < Duration::from_millis(50), "p99 {p99_all:?}");
    assert!(
        refused_after < Duration::from_millis(1500),
        "revocation took {refused_after:?}"
    );

    // One record per response, the outage's included (they waited in the spill file).
    let config = tollgate::config::Config::from_toml_str(
        "t",
        "",
        &[("OPENAI_API_KEY", "sk-x"), ("DATABASE_URL", url.as_str())]
            .into_iter()
            .collect(),
    )
    .unwrap();
    let stores = tollgate::store::connect(&config.database).await.unwrap();
    assert_eq!(
        stores.records.count().await.unwrap(),
        samples.len() as u64 + extra_responses,
        "one record per response, the refusal's too"
    );
}
