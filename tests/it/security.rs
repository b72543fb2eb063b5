//! The hostile suite of SECURITY.md: each test is one class of attack, tried as a caller would.
//!
//! - The upstream key never reaches another host: 40+ path spellings of another host or of a
//!   dot segment, over raw HTTP/1.1 and h2c, GET and POST, with each kind of credential; an
//!   attacker's listener must see no connection and the mock no request at all.
//! - Every route is governed or refused: restricted and budgeted callers on each route family.
//! - Nothing secret comes back: upstream errors and headers that quote the key are scrubbed;
//!   only allowlisted request headers go upstream.
//! - Connections cannot be held: slow bodies, slow uploads, idle HTTP/1.1 and HTTP/2
//!   connections, and too many connections from one address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tollgate::keys::{KeyBudgets, NewKey};

use crate::hostile::{http, send};
use crate::support::{TestGateway, UPSTREAM_KEY, error_of};

const JWT_SECRET: &str = "security-suite-jwt-secret-0123456789abcdef";

/// Limits roomy enough that no refusal below comes from a rate limit.
const ROOMY: &str =
    "[[limits.rules]]\nscope = \"ip\"\nroute = \"*\"\nrequests = 100000\nper = \"1h\"\n";

/// A listener standing in for a host the attacker controls: it records every connection.
struct Attacker {
    address: SocketAddr,
    connections: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Attacker {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let seen = connections.clone();
        let tasks = TaskTracker::new();
        tasks.clone().spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tasks.spawn(async move {
                    let mut received = vec![0u8; 4096];
                    let n =
                        tokio::time::timeout(Duration::from_secs(2), socket.read(&mut received))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .unwrap_or(0);
                    received.truncate(n);
                    seen.lock().unwrap().push(received);
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        Self {
            address,
            connections,
        }
    }

    fn connections(&self) -> Vec<String> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .collect()
    }
}

/// Paths that name another host or climb out of the base path, in every spelling we know.
fn spellings(attacker: SocketAddr) -> Vec<String> {
    let a = attacker.to_string();
    let port = attacker.port();
    vec![
        format!("/v1/http://{a}/x"),
        format!("/v1/HTTP://{a}/x"),
        format!("/v1/HtTp://{a}/x"),
        format!("/v1/https://{a}/x"),
        format!("/v1/http:/{a}/x"),
        format!("/v1/http:{a}/x"),
        format!("/v1//{a}/x"),
        format!("/v1///{a}/x"),
        format!("/v1/\\\\{a}/x"),
        format!("/v1/%5C%5C{a}/x"),
        format!("/v1/%5c%5c{a}/x"),
        format!("/v1/http:%2F%2F{a}/x"),
        format!("/v1/http%3A%2F%2F{a}/x"),
        format!("/v1/http%3a//{a}/x"),
        format!("/v1/http:\\\\{a}/x"),
        format!("/v1/http://user@{a}/x"),
        format!("/v1/http://user:pass@{a}/x"),
        format!("/v1/user@{a}/x"),
        format!("/v1/files@{a}/x"),
        format!("/v1/%40{a}/x"),
        format!("/v1/files/x@{a}"),
        format!("/v1/http://{a}#/files"),
        format!("/v1/http://{a}?/files"),
        format!("/v1/ftp://{a}/x"),
        "/v1/file:///etc/passwd".to_owned(),
        format!("/v1/http://[::ffff:127.0.0.1]:{port}/x"),
        format!("/v1/http://2130706433:{port}/x"),
        format!("/v1/http://0x7f.0.0.1:{port}/x"),
        format!("/v1/%09//{a}/x"),
        format!("/v1/%68ttp://{a}/x"),
        format!("/v1/models/http:%2F%2F{a}"),
        format!("/v1/models/%2F%2F{a}"),
        "/v1/../admin/keys".to_owned(),
        "/v1/files/../../admin/keys".to_owned(),
        "/v1/%2e%2e/admin/keys".to_owned(),
        "/v1/%2E%2E/admin/keys".to_owned(),
        "/v1/.%2e/admin/keys".to_owned(),
        "/v1/%2e./admin/keys".to_owned(),
        "/v1/files/%2e%2e/%2e%2e/admin".to_owned(),
        "/v1/./files".to_owned(),
        "/v1/%2e/files".to_owned(),
        "/v1/files/..%2fadmin".to_owned(),
        "/v1/files/..%2Fadmin".to_owned(),
        "/v1/files/..%5cadmin".to_owned(),
        "/v1/files/..\\admin".to_owned(),
        "/v1/files/%2e%2e%2fadmin".to_owned(),
        "/v1/files/..".to_owned(),
        "/v1/files/%2e%2e".to_owned(),
        "/v1/models/..".to_owned(),
        "/v1/models/%2e%2e".to_owned(),
        "/v1/models/..%2F..%2Fadmin".to_owned(),
        "/v1/files/a%00/content".to_owned(),
        "/v1/files/a%0d%0aHost:evil/content".to_owned(),
        "/v1/threads/RUNS".to_owned(),
        "/v1/threads/Runs/run_1/cancel".to_owned(),
        "/v1/organization/admin_api_keys".to_owned(),
        "/v1/projects/p1/roles".to_owned(),
    ]
}

fn sign_jwt(subject: &str) -> String {
    let claims = json!({ "sub": subject, "exp": tollgate::keys::now_ms() / 1000 + 600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// An h2c connection (HTTP/2 with prior knowledge) to the gateway.
async fn h2c(address: &str) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(address).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    TaskTracker::new().spawn(connection);
    sender
}

async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
) -> (u16, Vec<u8>) {
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("h2 answer in time")
        .expect("h2 answer");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

async fn gateway(toml: &str) -> TestGateway {
    TestGateway::builder()
        .toml(&format!("{ROOMY}\n{toml}"))
        .env("TOLLGATE_JWT_SECRET", JWT_SECRET)
        .start()
        .await
        .unwrap()
}

async fn clear_upstream_requests(gw: &TestGateway) {
    gw.client
        .delete(format!("{}/_mock/requests", gw.mock_base))
        .send()
        .await
        .unwrap();
}

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

/// A key with a monthly budget of `max_usd`: its id and secret.
async fn budgeted_key(gw: &TestGateway, max_usd: f64) -> (String, String) {
    let budgets = json!({ "key": { "max_usd": max_usd, "period": "month" } });
    gw.create_key_with(NewKey {
        name: "budgeted".into(),
        budgets: serde_json::from_value::<KeyBudgets>(budgets).unwrap(),
        ..NewKey::default()
    })
    .await
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
            [404, 403, 403, 403, 403],
        ),
        (
            call(
                Method::POST,
                "/v1/audio/transcriptions",
                Body::FileFirst(&[("model", "whisper-1")]),
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            call(
                Method::POST,
                "/v1/audio/transcriptions",
                Body::FileFirst(&[("model", "gpt-4o-mini")]),
            ),
            [404, 404, 404, 429, 404],
        ),
        (
            call(
                Method::POST,
                "/v1/audio/translations",
                Body::Multipart(&[("model", "gpt-4o-mini"), ("model", "whisper-1")]),
            ),
            [404, 403, 403, 403, 403],
        ),
        (
            call(
                Method::POST,
                "/v1/images/edits",
                Body::Multipart(&[("model", "gpt-image-1"), ("prompt", "p"), ("n", "2")]),
            ),
            [404, 403, 404, 429, 403],
        ),
        (
            json_post(
                "/v1/audio/speech",
                json!({ "model": "tts-1", "input": "hi", "voice": "alloy" }),
            ),
            [404, 403, 403, 403, 403],
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
            json_post(
                "/v1/batches",
                json!({ "input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h" }),
            ),
            [404, 403, 403, 403, 404],
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
            let forwarded = gw.upstream_requests().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_idle_connections_are_cut() {
    let gw = gateway(
        "[server]\nbody_read_timeout_ms = 400\nupload_min_bytes_per_sec = 100000\n\
         header_read_timeout_ms = 500\nidle_timeout_ms = 700\n",
    )
    .await;
    let address = gw.base.trim_start_matches("http://").to_owned();
    let token = format!("Bearer {}", gw.key);

    // A JSON body sent a few bytes at a time, never finished: 408, and the task is freed.
    let started = std::time::Instant::now();
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // An upload slower than the minimum pace: 408 from the gateway, not a hung upload.
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(
            format!(
                "POST /v1/files HTTP/1.1\r\nHost: g\r\nAuthorization: {token}\r\n\
                 Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000000\r\n\r\n--b\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let dribble = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if socket.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), dribble).await;
    let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // HTTP/1.1: a connection that never sends a request, and one idle after its request.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    let mut kept = TcpStream::connect(&address).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = kept.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut kept, Duration::from_secs(3)).await);

    // HTTP/2: a client that answers pings but sends nothing is closed too, before and after
    // its first request.
    for send_first in [false, true] {
        let stream = TcpStream::connect(&address).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let driver = TaskTracker::new().spawn(connection);
        if send_first {
            let request = hyper::Request::builder()
                .uri(format!("{}/health", gw.base))
                .body(Full::new(Bytes::new()))
                .unwrap();
            assert_eq!(h2_send(&mut sender, request).await.0, 200);
        }
        let ended = tokio::time::timeout(Duration::from_secs(4), driver).await;
        assert!(
            ended.is_ok(),
            "an idle h2 connection was kept (first request: {send_first})"
        );
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("tollgate_connections_closed_total{reason=\"idle\"}"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_connections_than_its_cap() {
    let gw = gateway("[server]\nmax_connections_per_ip = 3\n").await;
    let address = gw.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // The fourth is closed at once, without an answer.
    let mut fourth = TcpStream::connect(&address).await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await);
    // One given back makes room again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = send(
        &address,
        b"GET /health HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("tollgate_connections_closed_total{reason=\"per_ip_cap\"}"),
        "{metrics}"
    );
    drop(held);
    gw.stop().await;
}

/// Reads what the server sends until it closes (or `wait` passes).
async fn read_answer(socket: &mut TcpStream, wait: Duration) -> String {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(wait, socket.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// Whether the server closes `socket` within `wait` (reads end, or the socket is reset).
async fn closed_within(socket: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let closed = async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, closed).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_model_lists_hold_where_cost_or_model_is_hidden() {
    let gw = gateway(
        "[anonymous]\nenabled = true\nbudget = { max_usd = 10.0, period = \"month\" }\n\n\
         [models.cheap]\ntarget = \"gpt-4o-mini\"\nfallbacks = [{ target = \"mystery-model\" }]\n",
    )
    .await;
    let (_, restricted) = gw.create_key(&["gpt-4o-mini"]).await;
    let (budgeted_id, budgeted) = budgeted_key(&gw, 100.0).await;
    let chat = json!({ "model": "gpt-4o-mini", "max_tokens": 50, "messages": [{ "role": "user", "content": "hi" }] });
    let post = |secret: Option<&str>, path: &str, body: &Value| {
        let request = gw.client.post(gw.url(path)).json(body);
        match secret {
            Some(secret) => request.bearer_auth(secret),
            None => request,
        }
    };

    // An answer without usage is charged what was reserved, never nothing.
    gw.fault(json!({ "no_usage": true })).await;
    let response = post(Some(&budgeted), "/v1/chat/completions", &chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spec = tollgate::config::BudgetSpec {
        max_usd: 100.0,
        period: tollgate::config::BudgetPeriod::Month,
        alert_at: 1.0,
    };
    let line = tollgate::budget::BudgetLine::new(
        tollgate::records::SpendScope::Key(budgeted_id),
        &spec,
        tollgate::records::now_ms(),
    );
    let charged = crate::support::eventually(Duration::from_secs(5), || async {
        gw.state.budgets.spent(&line).await.unwrap() > 0
    })
    .await;
    assert!(charged, "an answer without usage was free");

    // A tool that runs its own model: the model list applies, and a budget cannot price it.
    let tooled = json!({ "model": "gpt-4o-mini", "input": "draw", "tools": [{ "type": "image_generation", "model": "gpt-image-1" }] });
    for (who, secret, want) in [
        ("free", &gw.key, 200),
        ("restricted", &restricted, 403),
        ("budgeted", &budgeted, 403),
    ] {
        let response = post(Some(secret), "/v1/responses", &tooled)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, want, "{who}: {}", response.text().await.unwrap());
    }

    // An alias whose fallback has no price cannot be held to a budget.
    let (status, error) = error_of(
        post(
            Some(&budgeted),
            "/v1/chat/completions",
            &json!({ "model": "cheap", "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        error["message"].as_str().unwrap().contains("mystery-model"),
        "{error}"
    );

    // Anonymous budgets are per end user: without one, nothing is served unbudgeted.
    let (status, _) = error_of(
        post(None, "/v1/chat/completions", &chat)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let batch = json!({ "input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h" });
    let (status, _) = error_of(post(None, "/v1/batches", &batch).send().await.unwrap()).await;
    assert_eq!(status, 403);
    let response = post(None, "/v1/chat/completions", &chat)
        .header("x-user-id", "ann")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_routes_allowances_and_the_unpriced_policy_follow_the_config() {
    let gw = gateway(
        "[jwt]\nmodels = [\"gpt-4o-mini\"]\nroutes = [\"batches\"]\n\n[budgets]\nunpriced = \"allow\"\n",
    )
    .await;
    let jwt = sign_jwt("user-1");
    let (_, budgeted) = budgeted_key(&gw, 100.0).await;
    let batch = json!({ "input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h" });
    let tune = json!({ "model": "gpt-4o-mini", "training_file": "file-1" });
    let speech = json!({ "model": "tts-1", "input": "hi", "voice": "alloy" });
    // `[jwt] routes` opens batches to JWT users (restricted by their model list), nothing else.
    for (secret, path, body, want) in [
        (&jwt, "/v1/batches", &batch, 404),
        (&jwt, "/v1/fine_tuning/jobs", &tune, 403),
        // `budgets.unpriced = "allow"`: an unpriced model is served to a budgeted key.
        (&budgeted, "/v1/audio/speech", &speech, 404),
    ] {
        clear_upstream_requests(&gw).await;
        let response = gw
            .client
            .post(gw.url(path))
            .bearer_auth(secret)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), want, "{path}");
        let forwarded = gw.upstream_requests().await;
        assert_eq!(!forwarded.is_empty(), want == 404, "{path}: {forwarded:?}");
    }
    gw.stop().await;
}
