//! Hostile input against the real `tollgate` binary: at least 50 malformed, oversized or
//! malicious requests, each answered with its documented status (in OpenAI's envelope when the
//! request got as far as the application), none a panic or a hang, and the upstream key in no
//! response and no log line. Requests are raw bytes over TCP, so they can break HTTP itself.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{MockServer, UPSTREAM_KEY, binary};

/// What a case expects.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// Whether the body must be OpenAI's envelope. Requests that are not HTTP (a garbage request
    /// line, oversized headers) are refused by the HTTP parser before the application, with a
    /// bare status and a closed connection.
    envelope: bool,
}

pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

/// A raw HTTP/1.1 request, byte for byte as given (`Connection: close`).
pub(crate) fn http(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends raw bytes and reads the whole answer (10 s at most).
pub(crate) async fn send(address: &str, request: &[u8]) -> Result<RawResponse, String> {
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        // The server may answer and close before reading everything (413): ignore write errors.
        let _ = socket.write_all(request).await;
        let mut received = Vec::new();
        let _ = socket.read_to_end(&mut received).await;
        Ok::<_, String>(received)
    };
    let received = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "hung".to_owned())??;
    let split = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no response head: {:?}",
                String::from_utf8_lossy(&received[..received.len().min(200)])
            )
        })?;
    let head = String::from_utf8_lossy(&received[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let mut body = received[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(RawResponse { status, head, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end]).unwrap_or("0").trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

fn cases(key: &str) -> Vec<Case> {
    let auth = format!("Bearer {key}");
    let json = |body: &[u8]| {
        http(
            "POST",
            "/v1/chat/completions",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    let on = |path: &str, body: &[u8]| {
        http(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    let with_auth = |value: &str| {
        http(
            "POST",
            "/v1/chat/completions",
            &[
                ("Authorization", value),
                ("Content-Type", "application/json"),
            ],
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        )
    };
    let valid = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let case = |name, request, status| Case {
        name,
        request,
        status,
        envelope: true,
    };
    let bare = |name, request, status| Case {
        name,
        request,
        status,
        envelope: false,
    };
    let deep = format!(
        "{{\"model\":\"m\",\"messages\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let mut utf8 = br#"{"model":""#.to_vec();
    utf8.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    utf8.extend_from_slice(br#"","messages":[{"role":"user"}]}"#);
    let mut raw_nul = br#"{"model":"a"#.to_vec();
    raw_nul.push(0);
    raw_nul.extend_from_slice(br#"b","messages":[{"role":"user"}]}"#);
    let mut bom = vec![0xef, 0xbb, 0xbf];
    bom.extend_from_slice(valid);
    let mut chunked_bad = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    chunked_bad.extend_from_slice(b"zz\r\n{}\r\n0\r\n\r\n");
    let mut oversized = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n"
    )
    .into_bytes();
    oversized.extend_from_slice(&[b'x'; 4096]);
    let many_headers: Vec<(String, String)> = (0..200)
        .map(|i| (format!("X-H{i}"), "v".to_owned()))
        .collect();
    let many_headers: Vec<(&str, &str)> = many_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let huge_header = "h".repeat(1024 * 1024);
    let long_key = format!("Bearer tg-{}", "a".repeat(10_000));
    let long_id = "i".repeat(10_000);
    let long_prompt = format!("{{\"prompt\":\"{}\"}}", "p".repeat(10_001));

    vec![
        // Malformed and truncated JSON.
        case("truncated object", json(b"{"), 400),
        case("truncated value", json(br#"{"model":"#), 400),
        case("array body", json(b"[]"), 400),
        case("string body", json(br#""hello""#), 400),
        case("null body", json(b"null"), 400),
        case("number body", json(b"123"), 400),
        case("trailing garbage", json(&[valid.as_slice(), b" trailing"].concat()), 400),
        case("byte order mark", json(&bom), 400),
        case("empty body", json(b""), 400),
        case("deep nesting", json(deep.as_bytes()), 400),
        case("duplicate field", json(br#"{"model":"a","model":"b","messages":[{"role":"user"}]}"#), 400),
        // Wrong types and ranges.
        case("null model", json(br#"{"model":null,"messages":[{"role":"user"}]}"#), 400),
        case("numeric model", json(br#"{"model":7,"messages":[{"role":"user"}]}"#), 400),
        case("messages as string", json(br#"{"model":"m","messages":"hi"}"#), 400),
        case("message as number", json(br#"{"model":"m","messages":[1]}"#), 400),
        case("numeric role", json(br#"{"model":"m","messages":[{"role":5}]}"#), 400),
        case("stream as string", json(br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#), 400),
        case("n overflowing f64", json(br#"{"model":"m","messages":[{"role":"user"}],"n":1e400}"#), 400),
        case("fractional max_tokens", json(br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":1.5}"#), 400),
        case("negative max_tokens", json(br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-5}"#), 400),
        case("temperature as string", json(br#"{"model":"m","messages":[{"role":"user"}],"temperature":"hot"}"#), 400),
        case("top_p above 1", json(br#"{"model":"m","messages":[{"role":"user"}],"top_p":1.5}"#), 400),
        case("stream_options without stream", json(br#"{"model":"m","messages":[{"role":"user"}],"stream_options":{}}"#), 400),
        case("model of 300 characters", json(format!("{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\"}}]}}", "m".repeat(300)).as_bytes()), 400),
        // Bad bytes.
        case("invalid utf-8 in a string", json(&utf8), 400),
        case("raw NUL in a string", json(&raw_nul), 400),
        case("escaped NUL in the model", json(br#"{"model":"a\u0000b","messages":[{"role":"user"}]}"#), 400),
        case("lone surrogate escape", json(br#"{"model":"\ud800","messages":[{"role":"user"}]}"#), 400),
        // Other routes' bodies.
        case("embeddings input object", on("/v1/embeddings", br#"{"model":"e","input":{}}"#), 400),
        case("embeddings empty input", on("/v1/embeddings", br#"{"model":"e","input":[]}"#), 400),
        case("images empty prompt", on("/v1/images/generations", br#"{"prompt":""}"#), 400),
        case("images n of 100", on("/v1/images/generations", br#"{"prompt":"x","n":100}"#), 400),
        case("responses without model", on("/v1/responses", br#"{"input":"x"}"#), 400),
        case("generate prompt too long", on("/api/ai/generate", long_prompt.as_bytes()), 400),
        case("generate maxTokens as string", on("/api/ai/generate", br#"{"prompt":"x","maxTokens":"lots"}"#), 400),
        case("passthrough model as number", on("/v1/moderations", br#"{"model":5,"input":"x"}"#), 400),
        // Sizes.
        case("declared body over the limit", oversized, 413),
        case("chunked body with a bad chunk size", chunked_bad, 400),
        // Content types.
        case("no content type", http("POST", "/v1/chat/completions", &[("Authorization", &auth)], valid), 415),
        case("text/plain", http("POST", "/v1/chat/completions", &[("Authorization", &auth), ("Content-Type", "text/plain")], valid), 415),
        case("application/xml", http("POST", "/v1/chat/completions", &[("Authorization", &auth), ("Content-Type", "application/xml")], valid), 415),
        case("json-patch", http("POST", "/v1/chat/completions", &[("Authorization", &auth), ("Content-Type", "application/json-patch+json")], valid), 415),
        case("multipart to chat", http("POST", "/v1/chat/completions", &[("Authorization", &auth), ("Content-Type", "multipart/form-data; boundary=x")], valid), 415),
        // Keys with odd characters.
        case("no authorization", http("POST", "/v1/chat/completions", &[("Content-Type", "application/json")], valid), 401),
        case("empty bearer", with_auth("Bearer "), 401),
        case("no scheme", with_auth(key), 401),
        case("basic auth", with_auth("Basic YWRtaW46YWRtaW4="), 401),
        case("sql injection key", with_auth("Bearer tg-' OR 1=1 --"), 401),
        case("key with inner spaces", with_auth("Bearer tg-abc def"), 401),
        case("key of 10 KB", with_auth(&long_key), 401),
        case("key with non-ascii bytes", with_auth("Bearer tg-\u{00fc}\u{00e9}"), 401),
        case("key one character short", with_auth(&auth[..auth.len() - 1]), 401),
        // Routes and methods.
        case("unknown route", http("GET", "/does/not/exist", &[], b""), 404),
        case("path traversal", http("GET", "/../../etc/passwd", &[], b""), 404),
        case("query with markup", http("GET", "/nope?x=%3Cscript%3E", &[], b""), 404),
        case("PUT on chat", http("PUT", "/v1/chat/completions", &[("Authorization", &auth)], b""), 405),
        case("PUT on embeddings", http("PUT", "/v1/embeddings", &[("Authorization", &auth), ("Content-Type", "application/json")], b"{}"), 405),
        case("DELETE on health", http("DELETE", "/health", &[], b""), 405),
        case("encoded traversal in a model id", http("GET", "/v1/models/..%2F..%2Fadmin", &[("Authorization", &auth)], b""), 404),
        // Headers.
        case("header injection attempt", http("GET", "/health", &[("X-Request-Id", "abc\r\nX-Injected: 1")], b""), 200),
        case("request id of 10 KB", http("GET", "/health", &[("X-Request-Id", &long_id)], b""), 200),
        case("HTTP/1.0 without host", b"GET /health HTTP/1.0\r\n\r\n".to_vec(), 200),
        bare("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        bare("header of 1 MiB", http("GET", "/health", &[("X-Big", &huge_header)], b""), 431),
        bare("200 headers", http("GET", "/health", &many_headers, b""), 431),
        // RFC 9112: Transfer-Encoding overrides Content-Length, so this is an empty chunked body.
        case("both content-length and chunked", format!("POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n").into_bytes(), 400),
        bare("NUL in a header value", b"GET /health HTTP/1.1\r\nHost: g\r\nX-Nul: a\0b\r\nConnection: close\r\n\r\n".to_vec(), 400),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_documented_status_and_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("hostile.db").display());
    let mock = MockServer::start().await;

    let key = binary::create_key(&database, dir.path()).await;
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database.clone()),
        ("TOLLGATE_LOG", "debug".to_owned()),
    ];
    let server = binary::serve(&env, dir.path()).await;
    let address = server.address.clone();

    let cases = cases(&key);
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        match send(&address, &case.request).await {
            Err(problem) => failures.push(format!("{}: {problem}", case.name)),
            Ok(response) => {
                if response.status != case.status {
                    failures.push(format!(
                        "{}: status {} (expected {}): {}",
                        case.name,
                        response.status,
                        case.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
                if case.envelope && case.status >= 400 {
                    let body: Result<serde_json::Value, _> = serde_json::from_slice(&response.body);
                    let error = body.as_ref().ok().and_then(|b| b.get("error"));
                    let in_envelope = error
                        .is_some_and(|e| e.get("message").is_some() && e.get("type").is_some())
                        || body.as_ref().is_ok_and(|b| b["success"] == false);
                    if !in_envelope {
                        failures.push(format!(
                            "{}: not an error envelope: {:?}",
                            case.name,
                            String::from_utf8_lossy(&response.body)
                        ));
                    }
                }
                let everything = format!(
                    "{}{}",
                    response.head,
                    String::from_utf8_lossy(&response.body)
                );
                if everything.contains(UPSTREAM_KEY) {
                    failures.push(format!(
                        "{}: the upstream key leaked in the response",
                        case.name
                    ));
                }
                if everything.to_ascii_lowercase().contains("x-injected") {
                    failures.push(format!("{}: a header was injected", case.name));
                }
            }
        }
    }
    // A well-formed request still works after all that, and reaches the upstream with our key.
    let ok = send(
        &address,
        &http(
            "POST",
            "/v1/chat/completions",
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("Content-Type", "application/json"),
            ],
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);

    let log = server.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        log.contains("\"http.status\":415"),
        "the log was captured: {}",
        &log[..log.len().min(500)]
    );
    assert!(
        !log.contains(UPSTREAM_KEY),
        "the upstream key appeared in the log"
    );
    assert!(!log.contains(&key), "a gateway key appeared in the log");
    assert!(!log.contains("panicked"), "a handler panicked");
}
