//! `tollgate mock-upstream`: a fake OpenAI for tests, benchmarks and the demo.
//!
//! It answers chat (JSON and SSE, usage in the last chunk when asked), embeddings (float and
//! base64), images (generations, edits, variations), audio (speech, transcriptions,
//! translations), moderations, responses (JSON and SSE), models and Realtime sessions
//! (WebSocket, [`realtime`]), at `/v1/...` and without the prefix, with bodies shaped after OpenAI's schemas ([`fixtures`]). Control routes:
//! `POST /_mock/faults` scripts misbehaviour for the next answers ([`faults`]),
//! `GET /_mock/requests` returns what it received (method, path, query, headers, body) so a
//! test can assert what Tollgate sent upstream, and `DELETE` on either clears it. What it
//! served is billed in a [`ledger`], read through OpenAI's organization Costs and Usage APIs
//! with an admin key, so reconciliation can be tested against it.

mod answers;
mod audio;
pub mod azure;
mod batches;
pub mod faults;
pub mod fixtures;
mod ledger;
mod limits;
mod realtime;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use answers::{
    Streaming, chat, embeddings, error, fault_response, images, json_answer, model_not_found,
    moderations, responses,
};
use faults::{Fault, FaultQueue, FaultsBody};

/// How the mock behaves when no fault is scripted.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Added to every answer (the benchmark's upstream latency).
    pub latency: Duration,
    /// Pause between stream events.
    pub stream_interval: Duration,
    /// When set, requests must carry `Authorization: Bearer` this key (401 otherwise).
    pub api_key: Option<String>,
    /// How many received requests `/_mock/requests` keeps (oldest dropped).
    pub record_limit: usize,
    /// Speak Azure OpenAI's dialect instead of OpenAI's.
    pub azure: Option<azure::AzureMock>,
    /// Answer like an OpenAI account limited to this many requests a minute.
    pub requests_per_minute: Option<u64>,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            stream_interval: Duration::ZERO,
            api_key: None,
            record_limit: 1000,
            azure: None,
            requests_per_minute: None,
        }
    }
}

/// What the mock shares between requests.
struct MockState {
    options: MockOptions,
    faults: FaultQueue,
    requests: Mutex<VecDeque<Value>>,
    streams: Arc<StreamCounters>,
    ledger: ledger::Ledger,
    files: batches::Store,
    window: Option<limits::Window>,
}

/// How the streams the mock sent ended: a test proves cancellation with `cancelled`.
#[derive(Debug, Default)]
struct StreamCounters {
    started: AtomicU64,
    completed: AtomicU64,
    /// The reader went away before the last event (the gateway dropped the connection).
    cancelled: AtomicU64,
    /// Plain (non-stream) calls whose caller went away before the answer was ready.
    calls_cancelled: AtomicU64,
}

/// Counts a plain call as cancelled if its handler is dropped before it answers.
struct CallGuard {
    counters: Arc<StreamCounters>,
    answered: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.answered {
            self.counters
                .calls_cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts a stream's end when dropped: completed if every frame went out, else cancelled.
struct StreamGuard {
    counters: Arc<StreamCounters>,
    finished: bool,
}

impl StreamGuard {
    /// Every frame went out (or the scripted cut happened): not a cancellation.
    fn complete(mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.counters.completed
        } else {
            &self.counters.cancelled
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The mock's routes.
pub fn router(options: MockOptions) -> Router {
    let state = Arc::new(MockState {
        window: options.requests_per_minute.map(limits::Window::new),
        options,
        faults: FaultQueue::default(),
        requests: Mutex::new(VecDeque::new()),
        streams: Arc::default(),
        ledger: ledger::Ledger::default(),
        files: batches::Store::default(),
    });
    Router::new()
        .route(
            "/_mock/faults",
            post(push_faults).delete(clear_faults).get(count_faults),
        )
        .route("/_mock/streams", get(stream_counts))
        .route("/_mock/requests", get(list_requests).delete(clear_requests))
        .route("/_mock/ledger", post(add_to_ledger))
        .route("/v1/realtime", get(realtime::open))
        .route("/realtime", get(realtime::open))
        .fallback(answer)
        .with_state(state)
}

async fn push_faults(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultsBody>(&body) {
        Ok(FaultsBody::Many(list)) => state.faults.push(list),
        Ok(FaultsBody::One(fault)) => state.faults.push(vec![*fault]),
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": error.to_string() })),
            )
                .into_response();
        }
    }
    Json(json!({ "pending": state.faults.remaining() })).into_response()
}

async fn add_to_ledger(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let added = serde_json::from_slice::<ledger::ExtraLine>(&body)
        .map_err(|e| e.to_string())
        .and_then(|extra| state.ledger.add_extra(&extra));
    match added {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response(),
    }
}

async fn clear_faults(State(state): State<Arc<MockState>>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}

async fn count_faults(State(state): State<Arc<MockState>>) -> Json<Value> {
    Json(json!({ "pending": state.faults.remaining() }))
}

async fn stream_counts(State(state): State<Arc<MockState>>) -> Json<Value> {
    let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Json(json!({
        "started": read(&state.streams.started),
        "completed": read(&state.streams.completed),
        "cancelled": read(&state.streams.cancelled),
        "calls_cancelled": read(&state.streams.calls_cancelled),
    }))
}

async fn list_requests(State(state): State<Arc<MockState>>) -> Json<Value> {
    let requests = state
        .requests
        .lock()
        .map(|r| r.iter().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    Json(Value::Array(requests))
}

async fn clear_requests(State(state): State<Arc<MockState>>) -> StatusCode {
    if let Ok(mut requests) = state.requests.lock() {
        requests.clear();
    }
    StatusCode::NO_CONTENT
}

/// Every API route: record, authenticate, apply a fault, answer.
async fn answer(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let mut guard = CallGuard {
        counters: state.streams.clone(),
        answered: false,
    };
    let response = respond(&state, request).await;
    guard.answered = true;
    drop(guard);
    response
}

async fn respond(state: &MockState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "Could not read the body.",
            "invalid_request_error",
            None,
        );
    };
    let mut path = parts
        .uri
        .path()
        .strip_prefix("/v1")
        .unwrap_or(parts.uri.path())
        .to_owned();
    state.record(&parts, &body);

    if let Some(route) = path.strip_prefix("/organization/") {
        return organization(state, &parts, route);
    }
    let mut body = body;
    if let Some(azure) = &state.options.azure {
        let call = match azure.read(&parts) {
            Ok(call) => call,
            Err(refusal) => return refusal.into_response(),
        };
        let key = parts.headers.get("api-key").and_then(|v| v.to_str().ok());
        if state
            .options
            .api_key
            .as_deref()
            .is_some_and(|expected| key != Some(expected))
        {
            return azure::unauthorized();
        }
        path = call.path;
        if let Some(model) = call.model {
            body = with_model(body, &model);
        }
    } else if let Some(refusal) = state.refuse_key(&parts.headers) {
        return refusal;
    }
    let admission = state.window.as_ref().map(limits::Window::admit);
    if let Some(admission) = &admission
        && admission.refused
    {
        let message = format!(
            "Rate limit reached for requests. Please try again in {}ms.",
            admission.retry_after.as_millis()
        );
        let mut response = if state.options.azure.is_some() {
            azure::error(StatusCode::TOO_MANY_REQUESTS, "429", &message)
        } else {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                &message,
                "requests",
                Some("rate_limit_exceeded"),
            )
        };
        response.headers_mut().extend(admission.headers.clone());
        return response;
    }
    let mut fault = state.faults.take().unwrap_or_default();
    // The credential this dialect receives: Azure's `api-key`, OpenAI's `Authorization`.
    let credential = if state.options.azure.is_some() {
        "api-key"
    } else {
        "authorization"
    };
    let echoed = fault
        .echo_authorization
        .then(|| parts.headers.get(credential).cloned())
        .flatten();
    if let Some(value) = &echoed {
        let quoted = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let message = fault.message.take().unwrap_or_default();
        fault.message = Some(format!("{message} (received Authorization: {quoted})"));
    }
    let mut response = respond_with(state, &parts, &body, &path, &fault).await;
    if let (Some(status), Some(_)) = (fault.status, &state.options.azure) {
        let message = fault
            .message
            .clone()
            .unwrap_or_else(|| format!("Mock fault: status {status}"));
        let code = fault.code.clone().unwrap_or_else(|| status.to_string());
        let mut azure = azure::error(response.status(), &code, &message);
        azure.headers_mut().extend(
            response
                .headers()
                .iter()
                .filter(|(name, _)| name.as_str().starts_with("retry-after"))
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        response = azure;
    }
    if let Some(admission) = admission {
        response.headers_mut().extend(admission.headers);
    }
    let billable = fault.cut_after_events.is_none() && !fault.malformed;
    if billable && state.options.record_limit > 0 && response.status() == StatusCode::OK {
        response = bill(state, &path, response).await;
    }
    if let Some(value) = echoed {
        for name in ["x-request-id", "openai-version", "content-disposition"] {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// `body` with its JSON `model` set to `model` (an Azure deployment's model); other bodies as
/// they are.
fn with_model(body: Bytes, model: &str) -> Bytes {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut object)) => {
            object.insert("model".to_owned(), Value::String(model.to_owned()));
            Bytes::from(Value::Object(object).to_string())
        }
        _ => body,
    }
}

/// Counts a JSON answer's usage in the ledger, handing the same answer on.
async fn bill(state: &MockState, path: &str, response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    state
        .ledger
        .count(path, &crate::openai::usage::summarize(&bytes));
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// OpenAI's organization APIs (Costs, Usage): an admin key only, GET only.
fn organization(state: &MockState, parts: &axum::http::request::Parts, route: &str) -> Response {
    let admin = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer sk-admin"));
    if !admin {
        return error(
            StatusCode::UNAUTHORIZED,
            "The organization APIs need an admin key (sk-admin-…).",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    let query: std::collections::BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    match (
        parts.method == Method::GET,
        state.ledger.answer(route, &query),
    ) {
        (true, Some(page)) => Json(page).into_response(),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({} /v1/organization/{route})", parts.method),
            "invalid_request_error",
            None,
        ),
    }
}

/// The answer once the fault is known: the fault's own, or the route's.
async fn respond_with(
    state: &MockState,
    parts: &axum::http::request::Parts,
    body: &Bytes,
    path: &str,
    fault: &Fault,
) -> Response {
    let latency = state.options.latency + Duration::from_millis(fault.latency_ms.unwrap_or(0));
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = fault.status {
        return fault_response(status, fault);
    }

    let mut file = Bytes::new();
    let json: Value = if body.is_empty() {
        Value::Null
    } else if is_multipart(&parts.headers) {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (fields, content) = audio::form_fields(content_type, body).unwrap_or_default();
        file = content;
        fields
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(_) if parts.method == Method::POST && !is_multipart(&parts.headers) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                );
            }
            Err(_) => Value::Null,
        }
    };
    let interval = fault
        .stream_interval_ms
        .map_or(state.options.stream_interval, Duration::from_millis);
    let stream = Streaming {
        interval,
        stall: fault.stall_ms.map(Duration::from_millis),
        cut_after: fault.cut_after_events,
        malformed: fault.malformed,
        no_usage: fault.no_usage,
        usage: fault.usage.clone(),
        answer_model: fault.answer_model.clone(),
        counters: state.streams.clone(),
    };

    match (parts.method.clone(), path) {
        (Method::POST, "/chat/completions") => chat(&json, &stream),
        (Method::POST, "/embeddings") => embeddings(&json, &stream),
        (Method::POST, "/images/generations" | "/images/edits" | "/images/variations") => {
            images(&json, &stream)
        }
        (Method::POST, "/audio/speech") => audio::speech(&json, &stream),
        (Method::POST, "/audio/transcriptions" | "/audio/translations") => {
            audio::transcription(&json, &stream)
        }
        (Method::POST, "/moderations") => moderations(&json, &stream),
        (Method::POST, "/responses") => responses(&json, &stream),
        (Method::POST, "/files") => state.files.upload(&json, file),
        (Method::GET, p) if p.starts_with("/files/") => {
            let rest = &p["/files/".len()..];
            match rest.strip_suffix("/content") {
                Some(id) => state.files.file(id, true),
                None => state.files.file(rest, false),
            }
        }
        (Method::POST, "/batches") => {
            let bill = |route: &str, answer: &Value| {
                let bytes = answer.to_string();
                state
                    .ledger
                    .count(route, &crate::openai::usage::summarize(bytes.as_bytes()));
            };
            state
                .files
                .create(&json, &stream, answer_batch_line, bill)
                .await
        }
        (Method::GET, p) if p.starts_with("/batches/") => {
            state.files.batch(&p["/batches/".len()..])
        }
        (Method::GET, "/models") => json_answer(fixtures::model_list(), &stream),
        (Method::GET, p) if p.starts_with("/models/") => {
            let id = &p["/models/".len()..];
            match fixtures::MODELS.iter().find(|(m, _)| *m == id) {
                Some((id, owner)) => json_answer(fixtures::model_object(id, owner), &stream),
                None => model_not_found(id),
            }
        }
        (method, path) => error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} /v1{path})"),
            "invalid_request_error",
            None,
        ),
    }
}

/// One request of a batch, answered as its route answers it: the answer's JSON.
async fn answer_batch_line(route: String, body: Value) -> Option<Value> {
    let plain = Streaming::plain();
    let response = match route.as_str() {
        "/chat/completions" => chat(&body, &plain),
        "/embeddings" => embeddings(&body, &plain),
        "/responses" => responses(&body, &plain),
        _ => return None,
    };
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl MockState {
    /// OpenAI's 401 when a key is required and `headers` do not carry it as a bearer token.
    fn refuse_key(&self, headers: &axum::http::HeaderMap) -> Option<Response> {
        let expected = self.options.api_key.as_ref()?;
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        (sent != Some(format!("Bearer {expected}").as_str())).then(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                "invalid_request_error",
                Some("invalid_api_key"),
            )
        })
    }

    fn record(&self, parts: &axum::http::request::Parts, body: &[u8]) {
        let body = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(body)));
        self.keep(
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
            body,
        );
    }

    /// Keeps a Realtime event the mock received (`method: "WS"`), with its session's headers.
    fn record_event(&self, headers: &axum::http::HeaderMap, event: &Value) {
        self.keep("WS", "/v1/realtime", None, headers, event.clone());
    }

    fn keep(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &axum::http::HeaderMap,
        body: Value,
    ) {
        if self.options.record_limit == 0 {
            // Benchmarks turn recording off: it costs the mock more than answering.
            return;
        }
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    json!(String::from_utf8_lossy(v.as_bytes())),
                )
            })
            .collect();
        let entry = json!({
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "body": body,
        });
        if let Ok(mut requests) = self.requests.lock() {
            if requests.len() >= self.options.record_limit {
                requests.pop_front();
            }
            requests.push_back(entry);
        }
    }
}

fn is_multipart(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"))
}

/// Serves the mock on `listener` until `shutdown` resolves (in-process use: tests, the demo).
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: MockOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Events leave at once, as a provider's do (Nagle would hold a Realtime answer's small
    // frames for the peer's delayed acknowledgement, 40 ms).
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router(options))
        .with_graceful_shutdown(shutdown)
        .await
}
