//! The real binary under SIGTERM and SIGINT: in-flight streams finish, then it exits cleanly.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tollgate::mock_upstream::MockOptions;

use crate::support::{MockServer, UPSTREAM_KEY, binary};

async fn drains_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("signals.db").display());
    let mock = MockServer::with(MockOptions {
        api_key: Some(UPSTREAM_KEY.to_owned()),
        stream_interval: Duration::from_millis(100),
        ..MockOptions::default()
    })
    .await;
    let key = binary::create_key(&database, dir.path()).await;
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database),
    ];
    let server = binary::serve(&env, dir.path()).await;
    let body = json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "messages": [{ "role": "user", "content": "echo: one two three four five six seven eight" }],
    });
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{}/v1/chat/completions", server.address))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();
    server.signal(signal).await;
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the stream finished after {signal}: {text}"
    );
    let (code, log) = server.finish().await;
    assert_eq!(code, Some(0), "clean exit after {signal}: {log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("tollgate stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_then_exits_0() {
    drains_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_in_flight_streams_then_exits_0() {
    drains_on("INT").await;
}
