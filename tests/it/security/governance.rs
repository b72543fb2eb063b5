//! Every route is governed or refused: restricted and budgeted callers on each route family.

use super::*;

/// A multipart form with these text fields and a small file: the fields first (as the Python
/// SDK sends them) or the file first (as the Node SDK does for `{ file, model }`).
fn multipart(fields: &[(&str, &str)], file_first: bool) -> (String, Vec<u8>) {
    let boundary = "security-suite-boundary";
    let file = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
         Content-Type: application/octet-stream\r\n\r\nRIFF....WAVE{}\r\n",
        // A file large enough to stream in many chunks when it leads; small otherwise, so
        // that a refusal before reading (415) cannot race the client's write.
        "x".repeat(if file_first { 200_000 } else { 64 })
    );
    let mut body = String::new();
    if file_first {
        body.push_str(&file);
    }
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    if !file_first {
        body.push_str(&file);
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

/// One request of the governance table.
struct Call {
    method: reqwest::Method,
    path: &'static str,
    body: Body,
}

enum Body {
    None,
    Json(Value),
    Multipart(&'static [(&'static str, &'static str)]),
    FileFirst(&'static [(&'static str, &'static str)]),
    Typed(&'static str, &'static str),
}

fn call(method: reqwest::Method, path: &'static str, body: Body) -> Call {
    Call { method, path, body }
}

fn json_post(path: &'static str, body: Value) -> Call {
    call(reqwest::Method::POST, path, Body::Json(body))
}

async fn attempt(gw: &TestGateway, secret: &str, call: &Call) -> (u16, Value) {
    let mut request = gw
        .client
        .request(call.method.clone(), gw.url(call.path))
        .bearer_auth(secret);
    request = match &call.body {
        Body::None => request,
        Body::Json(value) => request.json(value),
        Body::Multipart(fields) | Body::FileFirst(fields) => {
            let file_first = matches!(call.body, Body::FileFirst(_));
            let (content_type, body) = multipart(fields, file_first);
            request.header("content-type", content_type).body(body)
        }
        Body::Typed(content_type, body) => request
            .header("content-type", *content_type)
            .body(body.to_owned()),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_governed_or_refused() {
    use reqwest::Method;
    let gw = gateway("").await;
    let (_, restricted) = gw.create_key(&["gpt-4o-mini"]).await;
    let (_, budgeted) = budgeted_key(&gw, 100.0).await;
    let (_, spent) = budgeted_key(&gw, 0.000001).await;
    let (_, allowed_batches) = gw
        .create_key_with(NewKey {
            name: "batches".into(),
            models: vec!["gpt-4o-mini".into()],
            routes: vec!["batches".into()],
            ..NewKey::default()
        })
        .await;
    let input_file = batch_input(&gw).await;
    let keys = [
        ("free", gw.key.clone()),
        ("restricted", restricted),
        ("budgeted", budgeted),
        ("spent", spent),
        ("restricted with batches", allowed_batches),
    ];
    // Each call with the status each key gets (in the order of `keys`); 200/404 mean
    // forwarded (the mock has no API for some families and answers 404).
    let table: Vec<(Call, [u16; 5])> = vec![
        (
            call(
                Method::POST,
                "/v1/audio/transcriptions",
                Body::Multipart(&[("model", "whisper-1")]),
            ),
            [200, 403, 200, 429, 403],
        ),
        (
            call(
                Method::POST,
                "/v1/audio/transcriptions",
                Body::FileFirst(&[("model", "whisper-1")]),
            ),
            [200, 403, 200, 429, 403],
        ),
        (
            call(
                Method::POST,
                "/v1/audio/transcriptions",
                Body::FileFirst(&[("model", "gpt-4o-mini")]),
            ),
            // gpt-4o-mini has no audio prices: a transcription by it cannot be held to a budget.
            [200, 200, 403, 403, 200],
        ),
        (
            call(
                Method::POST,
                "/v1/audio/translations",
                Body::Multipart(&[("model", "gpt-4o-mini"), ("model", "whisper-1")]),
            ),
            [200, 403, 403, 403, 403],
        ),
        (
            call(
                Method::POST,
                "/v1/images/edits",
                Body::Multipart(&[("model", "gpt-image-1"), ("prompt", "p"), ("n", "2")]),
            ),
            [200, 403, 200, 429, 403],
        ),
        (
            json_post(
                "/v1/audio/speech",
                json!({ "model": "tts-1", "input": "hi", "voice": "alloy" }),
            ),
            [200, 403, 200, 429, 403],
        ),
        (
            json_post(
                "/v1/completions",
                json!({ "model": "gpt-4o-mini", "prompt": "hi", "max_tokens": 5 }),
            ),
            [404, 404, 404, 429, 404],
        ),
        (
            json_post(
                "/v1/moderations",
                json!({ "model": "omni-moderation-latest", "input": "hi" }),
            ),
            [200, 403, 200, 200, 403],
        ),
        (
            json_post("/v1/moderations", json!({ "input": "no model named" })),
            [200, 403, 200, 200, 403],
        ),
        (
            // A batch is checked against its input file: one gpt-4o-mini request.
            json_post(
                "/v1/batches",
                json!({ "input_file_id": input_file, "endpoint": "/v1/chat/completions", "completion_window": "24h" }),
            ),
            [200, 200, 200, 429, 200],
        ),
        (
            // `runs` in another spelling is still `runs`, never a thread id.
            json_post("/v1/threads/%72uns", json!({ "assistant_id": "asst_1" })),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post(
                "/v1/fine_tuning/jobs",
                json!({ "model": "gpt-4o-mini", "training_file": "file-1" }),
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post(
                "/v1/threads/thread_1/runs",
                json!({ "assistant_id": "asst_1" }),
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post(
                "/v1/realtime/client_secrets",
                json!({ "session": { "type": "realtime", "model": "gpt-realtime" } }),
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post(
                "/v1/vector_stores",
                json!({ "name": "docs", "file_ids": ["file-1"] }),
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post("/v1/evals/eval_1/runs", json!({ "name": "run" })),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post("/v1/containers", json!({ "name": "sandbox" })),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post(
                "/v1/chatkit/sessions",
                json!({ "workflow": { "id": "wf_1" } }),
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post(
                "/v1/videos",
                json!({ "model": "sora-2", "prompt": "a cat" }),
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            json_post("/v1/conversations", json!({ "items": [] })),
            [404, 404, 404, 404, 404],
        ),
        (
            json_post(
                "/v1/uploads",
                json!({ "filename": "a.jsonl", "purpose": "batch", "bytes": 10, "mime_type": "text/jsonl" }),
            ),
            [404, 404, 404, 404, 404],
        ),
        (
            call(
                Method::DELETE,
                "/v1/models/ft:gpt-4o-mini:org::x",
                Body::None,
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            call(Method::GET, "/v1/files", Body::None),
            [404, 404, 404, 404, 404],
        ),
        (
            call(Method::GET, "/v1/chat/completions", Body::None),
            [404, 404, 404, 404, 404],
        ),
        (
            call(Method::POST, "/v1/batches/batch_1/cancel", Body::None),
            [404, 404, 404, 404, 404],
        ),
        // Two `model`s: which one would the upstream read? Neither: 400, whoever asks.
        (
            call(
                Method::POST,
                "/v1/chat/completions",
                Body::Typed(
                    "application/json",
                    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"model":"o1"}"#,
                ),
            ),
            [400, 400, 400, 400, 400],
        ),
        (
            call(
                Method::POST,
                "/v1/completions",
                Body::Typed(
                    "application/json",
                    r#"{"model":"gpt-4o-mini","prompt":"x","m\u006fdel":"o1"}"#,
                ),
            ),
            [400, 400, 400, 400, 400],
        ),
        // A JSON route called with another type, and a multipart body where JSON is expected:
        // 415 before anything is read or forwarded, whoever asks.
        (
            call(
                Method::POST,
                "/v1/completions",
                Body::Typed("text/plain", r#"{"model":"o1","prompt":"x"}"#),
            ),
            [415, 415, 415, 415, 415],
        ),
        (
            call(
                Method::POST,
                "/v1/completions",
                Body::Multipart(&[("model", "o1"), ("prompt", "x")]),
            ),
            [415, 415, 415, 415, 415],
        ),
        (
            call(
                Method::POST,
                "/v1/chat/completions",
                Body::Multipart(&[("model", "o1")]),
            ),
            [415, 415, 415, 415, 415],
        ),
        (
            call(
                Method::POST,
                "/v1/files",
                Body::Typed("application/x-www-form-urlencoded", "purpose=batch"),
            ),
            [415, 415, 415, 415, 415],
        ),
        (
            call(
                Method::from_bytes(b"TRACE").unwrap(),
                "/v1/files",
                Body::None,
            ),
            [405, 405, 405, 405, 405],
        ),
        (
            call(Method::from_bytes(b"FOO").unwrap(), "/v1/files", Body::None),
            [405, 405, 405, 405, 405],
        ),
    ];
    for (call, expected) in &table {
        for ((who, secret), want) in keys.iter().zip(expected) {
            clear_upstream_requests(&gw).await;
            let (status, body) = attempt(&gw, secret, call).await;
            assert_eq!(
                status, *want,
                "{} {} as the {who} key: {body}",
                call.method, call.path
            );
            // What reached the upstream, less the reading of a batch's input file (before it
            // is checked).
            let forwarded: Vec<Value> = gw
                .upstream_requests()
                .await
                .into_iter()
                .filter(|r| {
                    let path = r["path"].as_str().unwrap_or_default();
                    !(r["method"] == "GET" && path.starts_with("/v1/files/"))
                })
                .collect();
            let should_forward = matches!(*want, 200 | 404);
            assert_eq!(
                !forwarded.is_empty(),
                should_forward,
                "{} {} as the {who} key: forwarded {forwarded:?}",
                call.method,
                call.path
            );
            if matches!(*want, 403) {
                assert_eq!(body["error"]["type"], "permission_error", "{body}");
            }
        }
    }
    gw.stop().await;
}
