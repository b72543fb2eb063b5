//! Every row of DESIGN.md's error table, end to end, in OpenAI's envelope.

use std::time::Duration;

use serde_json::json;

use crate::support::{TestGateway, error_of};

fn chat_body() -> serde_json::Value {
    json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] })
}

#[tokio::test]
async fn malformed_json_is_400_without_param() {
    let gw = TestGateway::start().await;
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .header("content-type", "application/json")
        .body("{\"model\": \"x\",")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["param"].is_null());
    gw.stop().await;
}

#[tokio::test]
async fn schema_and_range_violations_name_the_field() {
    let gw = TestGateway::start().await;
    let cases = [
        (
            json!({ "messages": [{ "role": "user", "content": "x" }] }),
            None,
            "missing field `model`",
        ),
        (
            json!({ "model": 5, "messages": [] }),
            Some("model"),
            "expected a string",
        ),
        (
            json!({ "model": "m", "messages": [] }),
            Some("messages"),
            "at least one",
        ),
        (
            json!({ "model": "m", "messages": [{ "role": "user" }], "temperature": 9 }),
            Some("temperature"),
            "between",
        ),
        (
            json!({ "model": "m", "messages": [{ "role": "user" }], "max_tokens": -1 }),
            Some("max_tokens"),
            "invalid value",
        ),
    ];
    for (body, param, message) in cases {
        let (status, error) =
            error_of(gw.post("/v1/chat/completions", &body).send().await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["param"].as_str(), param, "{body}: {error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(&message.to_lowercase()),
            "{body}: {error}"
        );
    }
    assert!(
        gw.upstream_requests().await.is_empty(),
        "invalid requests never reach the upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn post_without_json_content_type_is_415() {
    let gw = TestGateway::start().await;
    for content_type in [None, Some("text/plain")] {
        let mut request = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&gw.key)
            .body(chat_body().to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, error) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, 415, "{content_type:?}");
        assert_eq!(error["type"], "invalid_request_error");
    }
    gw.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let gw = TestGateway::builder()
        .toml("[server]\nbody_limit_bytes = 1024")
        .start()
        .await
        .unwrap();
    let big = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "x".repeat(4096) }] });
    let (status, error) =
        error_of(gw.post("/v1/chat/completions", &big).send().await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(error["type"], "invalid_request_error");
    // Without Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(big.to_string().into_bytes())];
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 413);
    gw.stop().await;
}

#[tokio::test]
async fn missing_unknown_revoked_and_expired_keys_are_401() {
    let gw = TestGateway::start().await;
    let (revoked_id, revoked) = gw.create_key(&[]).await;
    gw.store
        .revoke(&revoked_id, tollgate::keys::now_ms())
        .await
        .unwrap();
    let expired = {
        let new = tollgate::keys::NewKey {
            name: "old".into(),
            expires_at_ms: Some(1),
            ..Default::default()
        };
        let issued = tollgate::keys::issue(new, 0);
        gw.store.insert(&issued.key, &issued.hash).await.unwrap();
        issued.secret
    };
    let unknown = tollgate::keys::issue(tollgate::keys::NewKey::default(), 0).secret;
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "no key was sent"),
        (Some("Bearer".into()), "expected Authorization"),
        (Some("Basic dXNlcjpwYXNz".into()), "expected Authorization"),
        (Some("Bearer sk-not-ours".into()), "not a Tollgate key"),
        (Some(format!("Bearer {unknown}")), "not known"),
        (Some(format!("Bearer {revoked}")), "revoked"),
        (Some(format!("Bearer {expired}")), "expired"),
    ];
    for (authorization, reason) in cases {
        let mut request = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body());
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let (status, error) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, 401, "{authorization:?}");
        assert_eq!(error["type"], "authentication_error");
        assert_eq!(error["code"], "invalid_api_key");
        assert!(
            error["message"].as_str().unwrap().contains(reason),
            "{authorization:?}: {error}"
        );
    }
    // Two credentials, even both valid: which caller is meant is not for the gateway to guess.
    let (_, valid) = gw.create_key(&[]).await;
    let (status, error) = error_of(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {valid}"))
            .header("authorization", format!("Bearer {valid}"))
            .json(&chat_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("one Authorization header"),
        "{error}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_model_outside_the_keys_list_is_403() {
    let gw = TestGateway::start().await;
    let (_, limited) = gw.create_key(&["gpt-4o-mini"]).await;
    let mut body = chat_body();
    body["model"] = json!("gpt-4o");
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&limited)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, 403);
    assert_eq!(error["type"], "permission_error");
    assert_eq!(error["param"], "model");
    let allowed = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&limited)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn upstream_rejections_pass_through_with_their_message() {
    let gw = TestGateway::start().await;
    let mut body = chat_body();
    body["model"] = json!("gpt-nonexistent");
    let (status, error) =
        error_of(gw.post("/v1/chat/completions", &body).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(error["code"], "model_not_found");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("gpt-nonexistent")
    );
    gw.fault(json!({ "status": 422, "message": "Unprocessable thing", "code": "bad_thing" }))
        .await;
    let (status, error) = error_of(
        gw.post("/v1/chat/completions", &chat_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(error["message"], "Unprocessable thing");
    gw.stop().await;
}

#[tokio::test]
async fn upstream_refusing_our_key_is_502_and_says_nothing_of_it() {
    let gw = TestGateway::builder()
        .mock(|m| m.api_key = Some("sk-another-key".into()))
        .start()
        .await
        .unwrap();
    let response = gw
        .post("/v1/chat/completions", &chat_body())
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    assert!(
        !text.contains(crate::support::UPSTREAM_KEY) && !text.contains("sk-"),
        "{text}"
    );
    assert!(
        !text.to_lowercase().contains("incorrect api key"),
        "the upstream's message about our key stays private: {text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn upstream_429_after_retries_is_429_with_its_retry_after() {
    let gw = TestGateway::builder()
        .env("OPENAI_MAX_RETRIES", "1")
        .start()
        .await
        .unwrap();
    gw.fault(json!({ "status": 429, "retry_after_ms": 20, "retry_after": "1", "count": 2 }))
        .await;
    let response = gw
        .post("/v1/chat/completions", &chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, error) = error_of(response).await;
    assert_eq!(status, 429);
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(
        gw.upstream_requests().await.len(),
        2,
        "one try and one retry"
    );
    gw.stop().await;
}

#[tokio::test]
async fn upstream_5xx_after_retries_is_502() {
    let gw = TestGateway::builder()
        .env("OPENAI_MAX_RETRIES", "2")
        .start()
        .await
        .unwrap();
    gw.fault(json!({ "status": 503, "count": 3 })).await;
    let (status, error) = error_of(
        gw.post("/v1/chat/completions", &chat_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(error["type"], "upstream_error");
    assert_eq!(gw.upstream_requests().await.len(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let gw = TestGateway::builder()
        .env("OPENAI_TIMEOUT", "300")
        .start()
        .await
        .unwrap();
    gw.fault(json!({ "latency_ms": 2000 })).await;
    let started = std::time::Instant::now();
    let (status, error) = error_of(
        gw.post("/v1/chat/completions", &chat_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 504);
    assert_eq!(error["type"], "upstream_error");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the timeout cut the wait: {:?}",
        started.elapsed()
    );
    gw.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_is_503() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = TestGateway::builder()
        .env("OPENAI_BASE_URL", &format!("http://127.0.0.1:{port}/v1"))
        .env("OPENAI_MAX_RETRIES", "1")
        .start()
        .await
        .unwrap();
    let (status, error) = error_of(
        gw.post("/v1/chat/completions", &chat_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(error["type"], "upstream_error");
    assert_eq!(error["code"], "upstream_unreachable");
    gw.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let gw = TestGateway::start().await;
    let (status, error) = error_of(gw.get("/no/such/route").send().await.unwrap()).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
    let (status, error) = error_of(gw.get("/chat/completions").send().await.unwrap()).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // Under /v1 the allowlist answers for OpenAI's other methods on the path.
    let put = gw
        .client
        .put(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(put.headers()["allow"], "GET, POST");
    let (status, error) = error_of(put).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_panic_is_a_500_with_the_request_id_and_no_internals() {
    use axum::routing::get;
    async fn boom() -> &'static str {
        panic!("secret internal detail")
    }
    let app = tollgate::server::with_layers(
        axum::Router::new().route("/boom", get(boom)),
        &[],
        tollgate::records::Recorder::disabled(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::Client::new()
        .get(format!("http://{address}/boom"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let (status, error) = error_of(response).await;
    assert_eq!(status, 500);
    assert_eq!(error["type"], "server_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("trace-me-123"), "{message}");
    assert!(!message.contains("secret internal detail"), "{message}");
}
