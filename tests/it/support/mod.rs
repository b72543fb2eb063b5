//! The test harness: a real gateway and a real mock upstream, each on `127.0.0.1:0`.
//!
//! `TestGateway::builder().toml("...").env("K", "V").database(Database::Postgres).start()`
//! starts both in-process (the gateway through `server::run`, exactly as `tollgate serve`
//! does), creates a key, and hands back URLs and a client. Each test gets its own SQLite file
//! or its own PostgreSQL schema, so tests run in parallel.

pub mod binary;
pub mod chaos_proxy;
pub mod engines;
pub mod otlp_receiver;
pub mod pg_cluster;
pub mod redis_server;
pub mod redis_topologies;
pub mod tls_front;

use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tollgate::config::{Config, Env};
use tollgate::keys::{self, NewKey};
use tollgate::mock_upstream::{self, MockOptions};
use tollgate::state::AppState;
use tollgate::store::KeyStore;

pub use engines::{Database, TestDatabase};

/// The upstream key the mock requires; tests grep for it to prove it never leaks.
pub const UPSTREAM_KEY: &str = "sk-upstream-secret-0123456789";

/// Builds a [`TestGateway`].
pub struct Builder {
    toml: String,
    env: Vec<(String, String)>,
    database: Database,
    mock: MockOptions,
}

/// A running gateway + mock pair.
pub struct TestGateway {
    /// `http://127.0.0.1:PORT` of the gateway.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the mock (control routes live here).
    pub mock_base: String,
    /// A fresh key allowed every model.
    pub key: String,
    /// The key store the gateway uses, to create or revoke keys directly.
    pub store: std::sync::Arc<dyn KeyStore>,
    pub client: reqwest::Client,
    /// The gateway's state (its configuration, task tracker, backends).
    pub state: AppState,
    stop_gateway: Option<oneshot::Sender<()>>,
    stop_mock: Option<oneshot::Sender<()>>,
    tasks: TaskTracker,
    database: TestDatabase,
    /// `TOLLGATE_DATA_DIR` (the audit spill file), removed with the gateway.
    _data_dir: tempfile::TempDir,
}

impl TestGateway {
    pub fn builder() -> Builder {
        Builder {
            toml: String::new(),
            env: Vec::new(),
            database: Database::Sqlite,
            mock: MockOptions {
                api_key: Some(UPSTREAM_KEY.to_owned()),
                ..MockOptions::default()
            },
        }
    }

    /// A gateway with defaults (SQLite).
    pub async fn start() -> Self {
        Self::builder()
            .start()
            .await
            .expect("SQLite needs no service")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST `body` as JSON to `path` with the test key.
    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
    }

    /// GET `path` with the test key.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&self.key)
    }

    /// Creates another key with these allowed models (empty: all).
    pub async fn create_key(&self, models: &[&str]) -> (String, String) {
        self.create_key_with(NewKey {
            name: "test".into(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            ..NewKey::default()
        })
        .await
    }

    /// Creates a key as described: its id and secret.
    pub async fn create_key_with(&self, new: NewKey) -> (String, String) {
        let issued = keys::issue(new, keys::now_ms());
        self.store
            .insert(&issued.key, &issued.hash)
            .await
            .expect("insert key");
        (issued.key.id, issued.secret)
    }

    /// The database the gateway uses, for commands run beside it.
    /// Uploads `jsonl` through the gateway as a batch input file (`POST /v1/files`, a form),
    /// with `secret`; the file's id.
    pub async fn upload_batch_file(&self, secret: &str, jsonl: &str) -> String {
        let (content_type, body) = form_with_file(&[("purpose", "batch")], jsonl.as_bytes());
        let response = self
            .client
            .post(self.url("/v1/files"))
            .bearer_auth(secret)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status(), 200);
        let file: Value = response.json().await.expect("file object");
        file["id"].as_str().expect("file id").to_owned()
    }

    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// Queues faults on the mock.
    pub async fn fault(&self, faults: Value) {
        let response = self
            .client
            .post(format!("{}/_mock/faults", self.mock_base))
            .json(&faults)
            .send()
            .await
            .expect("mock");
        assert!(
            response.status().is_success(),
            "mock refused faults: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// What the mock received, oldest first.
    pub async fn upstream_requests(&self) -> Vec<Value> {
        let response = self
            .client
            .get(format!("{}/_mock/requests", self.mock_base))
            .send()
            .await
            .expect("mock");
        response.json::<Vec<Value>>().await.expect("mock json")
    }

    /// The mock's stream counters (`started`, `completed`, `cancelled`).
    pub async fn upstream_streams(&self) -> Value {
        self.client
            .get(format!("{}/_mock/streams", self.mock_base))
            .send()
            .await
            .expect("mock")
            .json()
            .await
            .expect("json")
    }

    /// The stored audit record of `request_id`, waiting up to 5 s for the writer.
    pub async fn record_of(&self, request_id: &str) -> tollgate::records::Record {
        for _ in 0..100 {
            let records = self
                .state
                .records
                .recent(&tollgate::records::RecentQuery {
                    limit: 500,
                    ..tollgate::records::RecentQuery::default()
                })
                .await
                .expect("records");
            if let Some(record) = records.into_iter().find(|r| r.request_id == request_id) {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no record for {request_id} after 5 s");
    }

    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Stops both servers (the gateway drains first) and drops the test's database.
    pub async fn stop(mut self) {
        self.shutdown().await;
        self.database.drop_schema().await;
    }

    /// Sends the gateway its shutdown signal without waiting for the drain.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop_gateway.take() {
            let _ = stop.send(());
        }
    }

    /// Stops both servers and waits for them.
    pub async fn shutdown(&mut self) {
        self.begin_shutdown();
        if let Some(stop) = self.stop_mock.take() {
            let _ = stop.send(());
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
    }
}

impl Builder {
    /// TOML configuration text.
    pub fn toml(mut self, toml: &str) -> Self {
        self.toml = toml.to_owned();
        self
    }

    /// An environment variable for the gateway's configuration.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn database(mut self, database: Database) -> Self {
        self.database = database;
        self
    }

    /// Adjusts the mock upstream.
    pub fn mock(mut self, adjust: impl FnOnce(&mut MockOptions)) -> Self {
        adjust(&mut self.mock);
        self
    }

    /// Starts the pair. `None` when the engine is not available (and not required).
    pub async fn start(self) -> Option<TestGateway> {
        let database = TestDatabase::create(self.database).await?;
        let tasks = TaskTracker::new();
        let data_dir = tempfile::tempdir().expect("data dir");

        let mock_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let mock_address = mock_listener.local_addr().expect("mock address");
        let (stop_mock, mock_stopped) = oneshot::channel::<()>();
        tasks.spawn(mock_upstream::serve(mock_listener, self.mock, async move {
            let _ = mock_stopped.await;
        }));

        let mut env: Env = [
            ("OPENAI_API_KEY".to_owned(), UPSTREAM_KEY.to_owned()),
            (
                "OPENAI_BASE_URL".to_owned(),
                format!("http://{mock_address}/v1"),
            ),
            // The organization APIs (reconciliation) are the mock's too.
            (
                "OPENAI_ADMIN_BASE_URL".to_owned(),
                format!("http://{mock_address}/v1"),
            ),
            ("DATABASE_URL".to_owned(), database.url.clone()),
            ("PORT".to_owned(), "0".to_owned()),
            // Tests should not wait a quarter second per retry.
            ("OPENAI_TIMEOUT".to_owned(), "10000".to_owned()),
            (
                "TOLLGATE_DATA_DIR".to_owned(),
                data_dir.path().display().to_string(),
            ),
        ]
        .into_iter()
        .collect();
        for (name, value) in &self.env {
            env.set(name, value);
        }
        let toml = if self.toml.contains("retry_base_delay_ms") {
            self.toml.clone()
        } else if self.toml.contains("[upstream]") {
            self.toml.replacen(
                "[upstream]",
                "[upstream]\nretry_base_delay_ms = 10\nretry_max_delay_ms = 50",
                1,
            )
        } else {
            format!(
                "{}\n[upstream]\nretry_base_delay_ms = 10\nretry_max_delay_ms = 50\n",
                self.toml
            )
        };
        let config = Config::from_toml_str("test.toml", &toml, &env).expect("valid test config");
        let stores = tollgate::store::connect(&config.database)
            .await
            .expect("open store");
        let state = AppState::new(config, stores.clone()).expect("state");
        let store = stores.keys;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let address = listener.local_addr().expect("address");
        let (stop_gateway, gateway_stopped) = oneshot::channel::<()>();
        let server_state = state.clone();
        tasks.spawn(async move {
            tollgate::server::run(listener, server_state, async move {
                let _ = gateway_stopped.await;
            })
            .await
        });

        let issued = keys::issue(
            NewKey {
                name: "test".into(),
                ..NewKey::default()
            },
            keys::now_ms(),
        );
        store
            .insert(&issued.key, &issued.hash)
            .await
            .expect("insert key");
        Some(TestGateway {
            base: format!("http://{address}"),
            mock_base: format!("http://{mock_address}"),
            key: issued.secret,
            store,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            state,
            stop_gateway: Some(stop_gateway),
            stop_mock: Some(stop_mock),
            tasks,
            database,
            _data_dir: data_dir,
        })
    }
}

/// The body of an error response, asserting OpenAI's envelope.
pub async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert!(
        response.headers().contains_key("x-request-id"),
        "every response carries x-request-id"
    );
    let body: Value = response.json().await.expect("error body is JSON");
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error envelope: {body}"));
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "envelope lacks {field}: {body}");
    }
    (status, error.clone())
}

/// Polls `check` until it returns true or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A multipart form: these text fields, then a file of `file_bytes` bytes (as the Python SDK
/// sends them). Returns the content type and the body.
pub fn form(fields: &[(&str, &str)], file_bytes: usize) -> (String, Vec<u8>) {
    form_with_file(fields, &vec![b'x'; file_bytes])
}

/// A multipart form: these text fields, then `file`. Returns the content type and the body.
pub fn form_with_file(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "tollgate-test-form";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

/// A mock upstream on its own, for tests that run the real binary.
pub struct MockServer {
    address: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl MockServer {
    /// Starts a mock that requires [`UPSTREAM_KEY`].
    pub async fn start() -> Self {
        Self::with(MockOptions {
            api_key: Some(UPSTREAM_KEY.to_owned()),
            ..MockOptions::default()
        })
        .await
    }

    /// Starts a mock with `options`; it stops when dropped.
    pub async fn with(options: MockOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let address = listener.local_addr().expect("mock address");
        let (stop, stopped) = oneshot::channel::<()>();
        TaskTracker::new().spawn(mock_upstream::serve(listener, options, async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            _stop: stop,
        }
    }

    /// The base URL to give `OPENAI_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// A control route (`/_mock/requests`, `/_mock/faults`) of this mock.
    pub fn control(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// What this mock received, oldest first.
    pub async fn requests(&self, client: &reqwest::Client) -> Vec<Value> {
        let response = client.get(self.control("/_mock/requests")).send().await;
        response.expect("mock").json().await.expect("mock json")
    }

    /// Forgets what this mock received.
    pub async fn forget(&self, client: &reqwest::Client) {
        let response = client.delete(self.control("/_mock/requests")).send().await;
        assert!(response.expect("mock").status().is_success());
    }

    /// Queues `faults` on this mock.
    pub async fn fault(&self, client: &reqwest::Client, faults: Value) {
        let response = client
            .post(self.control("/_mock/faults"))
            .json(&faults)
            .send()
            .await;
        assert!(
            response.expect("mock").status().is_success(),
            "mock refused faults"
        );
    }
}
