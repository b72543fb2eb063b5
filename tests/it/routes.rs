//! Every client route, with and without `/v1`, and what reaches the upstream.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestGateway, UPSTREAM_KEY, error_of};

#[tokio::test]
async fn every_model_route_answers_with_and_without_v1() {
    let gw = TestGateway::start().await;
    let cases: [(&str, Value, &str); 4] = [
        (
            "chat/completions",
            json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] }),
            "chat.completion",
        ),
        (
            "embeddings",
            json!({ "model": "text-embedding-3-small", "input": "hello" }),
            "list",
        ),
        (
            "images/generations",
            json!({ "model": "dall-e-3", "prompt": "a cat" }),
            "",
        ),
        (
            "responses",
            json!({ "model": "gpt-4o-mini", "input": "hi" }),
            "response",
        ),
    ];
    for prefix in ["/v1/", "/"] {
        for (path, body, object) in &cases {
            let response = gw
                .post(&format!("{prefix}{path}"), body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{prefix}{path}");
            assert_eq!(response.headers()["content-type"], "application/json");
            let answer: Value = response.json().await.unwrap();
            if !object.is_empty() {
                assert_eq!(answer["object"], *object, "{prefix}{path}: {answer}");
            } else {
                assert!(answer["data"][0]["url"].is_string(), "{answer}");
            }
        }
        let models: Value = gw
            .get(&format!("{prefix}models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(models["object"], "list");
        let one: Value = gw
            .get(&format!("{prefix}models/gpt-4o"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one["id"], "gpt-4o");
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_body_reaches_the_upstream_untouched_and_credentials_do_not() {
    let gw = TestGateway::start().await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"brand_new_param":{"nested":[1,2.50,"x"]},"temperature":0}"#;
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .header("content-type", "application/json")
        .header("cookie", "session=abc")
        .header("openai-beta", "assistants=v2")
        .header("x-user-id", "user-1")
        .header("openai-organization", "org-caller-choice")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = gw.upstream_requests().await;
    let sent = &received[0];
    assert_eq!(
        sent["body"]["brand_new_param"],
        json!({ "nested": [1, 2.5, "x"] })
    );
    let headers = &sent["headers"];
    assert_eq!(
        headers["authorization"],
        format!("Bearer {UPSTREAM_KEY}"),
        "the upstream key replaces the caller's"
    );
    assert!(headers.get("cookie").is_none());
    assert!(headers.get("x-user-id").is_none());
    assert!(
        headers.get("openai-organization").is_none(),
        "callers cannot pick our organization"
    );
    assert_eq!(
        headers["openai-beta"], "assistants=v2",
        "OpenAI's own headers pass"
    );
    assert!(
        headers["x-client-request-id"].is_string(),
        "our request id travels upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn organization_and_project_are_sent_when_configured() {
    let gw = TestGateway::builder()
        .env("OPENAI_ORGANIZATION", "org-ours")
        .env("OPENAI_PROJECT", "proj-ours")
        .start()
        .await
        .unwrap();
    gw.get("/v1/models").send().await.unwrap();
    let sent = &gw.upstream_requests().await[0];
    assert_eq!(sent["headers"]["openai-organization"], "org-ours");
    assert_eq!(sent["headers"]["openai-project"], "proj-ours");
    gw.stop().await;
}

#[tokio::test]
async fn other_v1_routes_are_forwarded_with_method_path_query_and_body() {
    let gw = TestGateway::start().await;
    let response = gw
        .get("/v1/files?purpose=batch&limit=2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "the mock has no files API; its 404 passes through"
    );
    let (_, error) = error_of(response).await;
    assert!(error["message"].as_str().unwrap().contains("GET /v1/files"));
    let moderation = gw
        .post("/v1/moderations", &json!({ "input": "flag-me please" }))
        .send()
        .await
        .unwrap();
    assert_eq!(moderation.status(), 200);
    let moderation: Value = moderation.json().await.unwrap();
    assert_eq!(moderation["results"][0]["flagged"], true);
    let deleted = gw
        .client
        .delete(gw.url("/v1/files/file_1"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 404);
    // Batches cannot be deleted in OpenAI's API: answered here, never forwarded.
    let not_an_operation = gw
        .client
        .delete(gw.url("/v1/batches/batch_1"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(not_an_operation.status(), 405);
    assert_eq!(not_an_operation.headers()["allow"], "GET");
    let received = gw.upstream_requests().await;
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(received[0]["method"], "GET");
    assert_eq!(received[0]["path"], "/v1/files");
    assert_eq!(received[0]["query"], "purpose=batch&limit=2");
    assert_eq!(received[1]["body"]["input"], "flag-me please");
    assert_eq!(received[2]["method"], "DELETE");
    assert_eq!(received[2]["path"], "/v1/files/file_1");
    gw.stop().await;
}

#[tokio::test]
async fn multipart_uploads_are_streamed_through() {
    let gw = TestGateway::start().await;
    let file = "x".repeat(300_000);
    let boundary = "tollgate-test-boundary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{file}\r\n--{boundary}--\r\n"
    );
    // Sent chunked, as an SDK streaming a file would.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = form
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = gw
        .client
        .post(gw.url("/v1/files"))
        .bearer_auth(&gw.key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "forwarded to the mock's files API");
    let received = gw.upstream_requests().await;
    let body = received[0]["body"].as_str().unwrap();
    assert!(
        body.contains("name=\"purpose\"") && body.contains(&file),
        "the multipart body arrived whole"
    );
    assert!(
        received[0]["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
    gw.stop().await;
}

#[tokio::test]
async fn models_are_filtered_to_the_key() {
    let gw = TestGateway::start().await;
    let (_, limited) = gw
        .create_key(&["gpt-4o-mini", "text-embedding-3-small"])
        .await;
    let list: Value = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gpt-4o-mini", "text-embedding-3-small"]);
    let denied = gw
        .client
        .get(gw.url("/v1/models/gpt-4o"))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(denied).await.0, 403);
    let full: Value = gw
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(full["data"].as_array().unwrap().len() > 2);
    gw.stop().await;
}

#[tokio::test]
async fn embeddings_in_base64_pass_through() {
    let gw = TestGateway::start().await;
    let body = json!({ "model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64" });
    let answer: Value = gw
        .post("/v1/embeddings", &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["data"][1]["embedding"].is_string());
    assert_eq!(answer["usage"]["prompt_tokens"], 2);
    gw.stop().await;
}

#[tokio::test]
async fn the_seeds_generate_api_keeps_its_shapes() {
    let gw = TestGateway::start().await;
    let response = gw
        .post(
            "/api/ai/generate",
            &json!({ "prompt": "echo: hello there world", "maxTokens": 2, "temperature": 0 }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["success"], true);
    assert_eq!(answer["data"]["content"], "hello there");
    assert_eq!(answer["data"]["usage"]["completionTokens"], 2);
    assert!(answer["data"]["metadata"]["requestId"].is_string());
    assert!(answer["data"]["metadata"]["latency"].is_u64());
    let sent = &gw.upstream_requests().await[0]["body"];
    assert_eq!(sent["temperature"], 0.0, "an explicit 0 stays 0");
    assert_eq!(sent["max_tokens"], 2);

    let invalid = gw
        .post(
            "/api/ai/generate",
            &json!({ "prompt": "x", "maxTokens": 5000 }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let invalid: Value = invalid.json().await.unwrap();
    assert_eq!(invalid["error"], "Invalid request");
    assert_eq!(invalid["details"][0]["path"][0], "maxTokens");

    let unauthorized = gw
        .client
        .post(gw.url("/api/ai/generate"))
        .json(&json!({ "prompt": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let unauthorized: Value = unauthorized.json().await.unwrap();
    assert_eq!(unauthorized["error"], "Unauthorized");
    assert_eq!(unauthorized["success"], false);
    gw.stop().await;
}

#[tokio::test]
async fn health_is_open_and_readiness_checks_the_store() {
    let gw = TestGateway::start().await;
    let live = gw.client.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready: Value = gw
        .client
        .get(gw.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["store"], "ok");
    let metrics = gw.client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("tollgate_requests_total")
    );
    gw.stop().await;
}

#[tokio::test]
async fn metrics_can_require_a_key() {
    let gw = TestGateway::builder()
        .toml("[server]\nmetrics_public = false")
        .start()
        .await
        .unwrap();
    assert_eq!(
        gw.client
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(gw.get("/metrics").send().await.unwrap().status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_longer_than_the_upstream_timeout_is_not_cut_by_it() {
    // The call's deadline (1 s here) runs from when the upload has been sent: a caller
    // uploading at an acceptable pace for longer than that is served, for a file and for a
    // form to a model route alike.
    let gw = TestGateway::builder()
        .env("OPENAI_TIMEOUT", "1000")
        .toml("[server]\nbody_read_timeout_ms = 500\nupload_min_bytes_per_sec = 1000\n")
        .start()
        .await
        .unwrap();
    let boundary = "slow-boundary";
    for (path, field) in [
        ("/v1/files", "purpose"),
        ("/v1/audio/transcriptions", "model"),
    ] {
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\nwhisper-1\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        // About 2 s of upload: 8 pieces of 4 KB, a quarter second apart (16 KB/s).
        let mut pieces: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(head.into_bytes())];
        pieces.extend((0..8).map(|_| Ok(vec![b'x'; 4096])));
        pieces.push(Ok(tail.into_bytes()));
        let paced =
            futures_util::StreamExt::then(futures_util::stream::iter(pieces), |piece| async {
                tokio::time::sleep(Duration::from_millis(250)).await;
                piece
            });
        let started = std::time::Instant::now();
        let response = gw
            .client
            .post(gw.url(path))
            .bearer_auth(&gw.key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(paced))
            .send()
            .await
            .unwrap();
        assert!(started.elapsed() > Duration::from_millis(1500));
        assert_eq!(response.status(), 200, "{path}: forwarded whole");
    }
    gw.stop().await;
}
