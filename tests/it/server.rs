//! The HTTP layer: request ids, security headers, CORS, slow clients, HTTP/2, shutdown.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestGateway;

#[tokio::test]
async fn request_ids_are_kept_when_well_formed_and_replaced_otherwise() {
    let gw = TestGateway::start().await;
    let kept = gw
        .client
        .get(gw.url("/health"))
        .header("x-request-id", "caller-id_1.2:3")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "caller-id_1.2:3");
    for bad in ["has space", &"x".repeat(200), "semi;colon"] {
        let replaced = gw
            .client
            .get(gw.url("/health"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = replaced.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32, "a fresh UUID: {id}");
    }
    let fresh = gw.client.get(gw.url("/nope")).send().await.unwrap();
    assert!(
        fresh.headers().contains_key("x-request-id"),
        "404s carry one too"
    );
    gw.stop().await;
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let gw = TestGateway::start().await;
    for response in [
        gw.client.get(gw.url("/health")).send().await.unwrap(),
        gw.client.get(gw.url("/v1/models")).send().await.unwrap(),
        gw.get("/v1/models").send().await.unwrap(),
    ] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers.contains_key("content-security-policy"));
    }
    gw.stop().await;
}

#[tokio::test]
async fn cors_allows_only_listed_origins_and_never_a_wildcard() {
    let gw = TestGateway::builder()
        .env("TOLLGATE_CORS_ORIGINS", "https://app.example.com")
        .start()
        .await
        .unwrap();
    let preflight = |origin: &'static str| {
        gw.client
            .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let denied = preflight("https://evil.example.com").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
    let plain = gw
        .get("/v1/models")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_client_dribbling_headers_is_cut_off() {
    let gw = TestGateway::builder()
        .toml("[server]\nheader_read_timeout_ms = 300")
        .start()
        .await
        .unwrap();
    let address = gw.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if socket.write_all(b"X-Slow: y\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buffer = [0u8; 512];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), socket.read(&mut buffer)).await
        {
            closed = true;
            break;
        }
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), socket.read(&mut buffer)).await
            && n > 0
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the connection stayed open");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "cut after {:?}",
        started.elapsed()
    );
    gw.stop().await;
}

#[tokio::test]
async fn http2_without_tls_and_keep_alive_both_work() {
    let gw = TestGateway::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(gw.url("/v1/models"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let h1 = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for _ in 0..5 {
        let response = h1.get(gw.url("/health")).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert!(
            response
                .headers()
                .get("connection")
                .is_none_or(|v| v != "close")
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_running_stream_finish_and_refuses_new_connections() {
    let mut gw = TestGateway::builder()
        .mock(|m| m.stream_interval = Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let body = json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "messages": [{ "role": "user", "content": "echo: one two three four five six" }],
    });
    let response = gw.post("/v1/chat/completions", &body).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();
    gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = reqwest::Client::new().get(gw.url("/health")).send().await;
    assert!(
        refused.is_err(),
        "new connections are refused once draining starts"
    );
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the in-flight stream finished: {text}"
    );
    gw.shutdown().await;
}
