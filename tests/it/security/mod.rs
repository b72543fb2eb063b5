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
//! - Budgets and model lists hold where cost or model is hidden in a request.

mod connections;
mod governance;
mod hidden;
mod key_leaks;

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

/// A batch input file of one gpt-4o-mini chat request, uploaded with the gateway's key: its
/// id, for a batch body to name.
async fn batch_input(gw: &TestGateway) -> String {
    let line = json!({ "custom_id": "one", "method": "POST", "url": "/v1/chat/completions",
                       "body": { "model": "gpt-4o-mini", "max_tokens": 5,
                                 "messages": [{ "role": "user", "content": "hi" }] } });
    gw.upload_batch_file(&gw.key, &format!("{line}\n")).await
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
