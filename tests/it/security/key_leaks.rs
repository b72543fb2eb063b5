//! The upstream key never reaches another host, and nothing secret comes back.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_spelling_sends_the_key_to_another_host_or_outside_the_base_path() {
    let attacker = Attacker::start().await;
    let gw = gateway("[anonymous]\nenabled = true\n").await;
    let (_, restricted) = gw.create_key(&["gpt-4o-mini"]).await;
    let jwt = sign_jwt("user-1");
    let credentials: [(&str, Option<&str>); 4] = [
        ("key", Some(&gw.key)),
        ("restricted key", Some(&restricted)),
        ("jwt", Some(&jwt)),
        ("anonymous", None),
    ];
    let address = gw.base.trim_start_matches("http://").to_owned();
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let spellings = spellings(attacker.address);
    assert!(spellings.len() >= 40);
    clear_upstream_requests(&gw).await;
    let mut h2 = h2c(&address).await;
    let mut over_h2 = 0;
    for path in &spellings {
        for method in ["GET", "POST"] {
            for (who, token) in credentials {
                let authorization = token.map(|t| format!("Bearer {t}"));
                let mut headers = vec![("Content-Type", "application/json")];
                if let Some(value) = &authorization {
                    headers.push(("Authorization", value));
                }
                let payload: &[u8] = if method == "POST" { body } else { b"" };
                // HTTP/1.1, byte for byte: no client library normalises the path first.
                let answer = send(&address, &http(method, path, &headers, payload))
                    .await
                    .unwrap_or_else(|e| panic!("{method} {path} as {who}: {e}"));
                assert!(
                    matches!(answer.status, 400 | 403 | 404 | 405),
                    "{method} {path} as {who}: {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
                assert!(!String::from_utf8_lossy(&answer.body).contains(UPSTREAM_KEY));
                // h2c: the same path as the :path pseudo-header, when HTTP allows it at all.
                let Ok(uri) = format!("{}{path}", gw.base).parse::<hyper::Uri>() else {
                    continue;
                };
                let mut request = hyper::Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("content-type", "application/json");
                if let Some(value) = &authorization {
                    request = request.header("authorization", value);
                }
                let request = request
                    .body(Full::new(Bytes::from(payload.to_vec())))
                    .unwrap();
                let (status, answer) = h2_send(&mut h2, request).await;
                assert!(
                    matches!(status, 400 | 403 | 404 | 405),
                    "h2 {method} {path} as {who}: {status}"
                );
                assert!(!String::from_utf8_lossy(&answer).contains(UPSTREAM_KEY));
                over_h2 += 1;
            }
        }
    }
    assert!(
        over_h2 >= 40 * 2 * 4,
        "only {over_h2} requests could be sent over h2"
    );
    assert_eq!(
        attacker.connections(),
        Vec::<String>::new(),
        "the attacker's host was contacted"
    );
    let received = gw.upstream_requests().await;
    assert!(received.is_empty(), "forwarded: {received:?}");

    // An absolute-form target or a Host header naming the attacker changes nothing: the
    // request goes to the configured upstream, under its base path.
    let absolute = format!("http://{}/v1/files", attacker.address);
    let token = format!("Bearer {}", gw.key);
    for request in [
        http("GET", &absolute, &[("Authorization", &token)], b""),
        format!(
            "GET /v1/files HTTP/1.1\r\nHost: {}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n",
            attacker.address
        )
        .into_bytes(),
    ] {
        let answer = send(&address, &request).await.unwrap();
        assert_eq!(answer.status, 404, "the mock has no files API");
    }
    assert!(attacker.connections().is_empty());
    let received = gw.upstream_requests().await;
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request["path"], "/v1/files");
    }
    // What is forwarded is the path as checked: escapes of plain letters decoded.
    clear_upstream_requests(&gw).await;
    let response = gw
        .post("/v1/threads/%72uns", &json!({ "assistant_id": "asst_1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(gw.upstream_requests().await[0]["path"], "/v1/threads/runs");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_and_headers_that_quote_the_key_are_scrubbed() {
    let gw = gateway("").await;
    let chat = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] });
    let routes: [(&str, Value); 3] = [
        ("/v1/chat/completions", chat.clone()),
        ("/v1/moderations", json!({ "input": "x" })),
        (
            "/v1/completions",
            json!({ "model": "gpt-4o-mini", "prompt": "x" }),
        ),
    ];
    for status in [400, 404, 413, 422] {
        for (path, body) in &routes {
            gw.fault(
                json!({ "status": status, "message": "Rejected", "echo_authorization": true }),
            )
            .await;
            let response = gw.post(path, body).send().await.unwrap();
            let headers = format!("{:?}", response.headers());
            let (got, error) = error_of(response).await;
            assert_eq!(got, status);
            let text = error.to_string();
            assert!(!text.contains(UPSTREAM_KEY), "{path} {status}: {text}");
            assert!(!headers.contains(UPSTREAM_KEY), "{headers}");
            assert!(text.contains("[REDACTED]"), "{text}");
        }
    }
    // A successful answer whose headers quote the key: those headers are not relayed.
    gw.fault(json!({ "echo_authorization": true })).await;
    let response = gw.post("/v1/chat/completions", &chat).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = format!("{:?}", response.headers());
    assert!(!headers.contains(UPSTREAM_KEY), "{headers}");
    assert!(!response.text().await.unwrap().contains(UPSTREAM_KEY));
    gw.stop().await;
}

#[tokio::test]
async fn only_allowlisted_request_headers_go_upstream() {
    let gw = gateway("").await;
    clear_upstream_requests(&gw).await;
    let response = gw
        .post(
            "/v1/chat/completions",
            &json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .header("x-api-key", "sk-caller-chosen")
        .header("api-key", "sk-caller-chosen")
        .header("cookie", "session=1")
        .header("proxy-authorization", "Basic eDp5")
        .header("x-forwarded-host", "evil.example")
        .header("openai-organization", "org-caller")
        .header("openai-project", "proj-caller")
        .header("x-custom-credential", "secret")
        .header("x-stainless-lang", "python")
        .header("openai-beta", "assistants=v2")
        .header("idempotency-key", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = gw.upstream_requests().await;
    let headers = received[0]["headers"].as_object().unwrap();
    let mut names: Vec<&str> = headers.keys().map(String::as_str).collect();
    names.sort_unstable();
    for name in &names {
        assert!(
            [
                "accept",
                "authorization",
                "content-length",
                "content-type",
                "host",
                "idempotency-key",
                "openai-beta",
                "user-agent",
                "x-client-request-id",
                "x-stainless-lang",
            ]
            .contains(name),
            "{name} reached the upstream: {names:?}"
        );
    }
    assert_eq!(headers["authorization"], format!("Bearer {UPSTREAM_KEY}"));
    assert_eq!(headers["openai-beta"], "assistants=v2");
    gw.stop().await;
}
