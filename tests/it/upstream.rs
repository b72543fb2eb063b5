//! Retries, backoff and `Retry-After`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{TestGateway, error_of};

fn chat() -> serde_json::Value {
    json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] })
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let gw = TestGateway::start().await;
    gw.fault(json!([{ "status": 500 }, { "status": 502 }, { "status": 429 }]))
        .await;
    let response = gw
        .post("/v1/chat/completions", &chat())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        gw.upstream_requests().await.len(),
        4,
        "three failures, three retries, one success"
    );
    gw.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let gw = TestGateway::start().await;
    gw.fault(json!({ "status": 429, "retry_after": "1" })).await;
    let started = Instant::now();
    let response = gw
        .post("/v1/chat/completions", &chat())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    gw.stop().await;
}

#[tokio::test]
async fn retry_after_ms_wins_over_retry_after() {
    let gw = TestGateway::start().await;
    gw.fault(json!({ "status": 503, "retry_after": "5", "retry_after_ms": 50 }))
        .await;
    let started = Instant::now();
    assert_eq!(
        gw.post("/v1/chat/completions", &chat())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_returned_at_once() {
    let gw = TestGateway::builder()
        .toml("[upstream]\nretry_after_cap_ms = 1000")
        .start()
        .await
        .unwrap();
    gw.fault(json!({ "status": 429, "retry_after": "120" }))
        .await;
    let started = Instant::now();
    let response = gw
        .post("/v1/chat/completions", &chat())
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.headers()["retry-after"], "120");
    assert_eq!(error_of(response).await.0, 429);
    assert_eq!(gw.upstream_requests().await.len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn backoff_grows_between_retries() {
    let gw = TestGateway::builder()
        .toml("[upstream]\nretry_base_delay_ms = 100\nretry_max_delay_ms = 1000")
        .start()
        .await
        .unwrap();
    gw.fault(json!({ "status": 500, "count": 3 })).await;
    let started = Instant::now();
    assert_eq!(
        gw.post("/v1/chat/completions", &chat())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Jitter draws each wait from [step/2, step]: 100, 200, 400 ms steps wait at least 350 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "took {:?}",
        started.elapsed()
    );
    gw.stop().await;
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let gw = TestGateway::start().await;
    gw.fault(json!({ "status": 400, "message": "bad" })).await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat())
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(gw.upstream_requests().await.len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_malformed_upstream_body_is_passed_as_received() {
    // The gateway does not parse plain answers it need not read; the SDK sees the same bytes
    // as from OpenAI. A truncated body (connection cut mid-answer) is a 502.
    let gw = TestGateway::start().await;
    gw.fault(json!({ "cut_after_events": 1 })).await;
    let (status, error) = error_of(
        gw.post("/v1/chat/completions", &chat())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(error["type"], "upstream_error");
    gw.stop().await;
}
