//! `tollgate mock-upstream`: a fake OpenAI for tests, benchmarks and the demo.
//!
//! It answers chat (JSON and SSE, usage in the last chunk when asked), embeddings (float and
//! base64), images, moderations, responses (JSON and SSE) and models, at `/v1/...` and without
//! the prefix, with bodies shaped after OpenAI's schemas ([`fixtures`]). Control routes:
//! `POST /_mock/faults` scripts misbehaviour for the next answers ([`faults`]),
//! `GET /_mock/requests` returns what it received (method, path, query, headers, body) so a
//! test can assert what Tollgate sent upstream, and `DELETE` on either clears it.

pub mod faults;
pub mod fixtures;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

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
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            stream_interval: Duration::ZERO,
            api_key: None,
            record_limit: 1000,
        }
    }
}

/// What the mock shares between requests.
struct MockState {
    options: MockOptions,
    faults: FaultQueue,
    requests: Mutex<VecDeque<Value>>,
    streams: Arc<StreamCounters>,
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
        options,
        faults: FaultQueue::default(),
        requests: Mutex::new(VecDeque::new()),
        streams: Arc::default(),
    });
    Router::new()
        .route(
            "/_mock/faults",
            post(push_faults).delete(clear_faults).get(count_faults),
        )
        .route("/_mock/streams", get(stream_counts))
        .route("/_mock/requests", get(list_requests).delete(clear_requests))
        .fallback(answer)
        .with_state(state)
}

async fn push_faults(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultsBody>(&body) {
        Ok(FaultsBody::Many(list)) => state.faults.push(list),
        Ok(FaultsBody::One(fault)) => state.faults.push(vec![fault]),
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
    let path = parts
        .uri
        .path()
        .strip_prefix("/v1")
        .unwrap_or(parts.uri.path())
        .to_owned();
    state.record(&parts, &body);

    if let Some(expected) = &state.options.api_key {
        let sent = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {expected}").as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                "invalid_request_error",
                Some("invalid_api_key"),
            );
        }
    }
    let mut fault = state.faults.take().unwrap_or_default();
    let echoed = fault
        .echo_authorization
        .then(|| parts.headers.get(header::AUTHORIZATION).cloned())
        .flatten();
    if let Some(value) = &echoed {
        let quoted = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let message = fault.message.take().unwrap_or_default();
        fault.message = Some(format!("{message} (received Authorization: {quoted})"));
    }
    let mut response = respond_with(state, &parts, &body, &path, &fault).await;
    if let Some(value) = echoed {
        for name in ["x-request-id", "openai-version", "content-disposition"] {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
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

    let json: Value = if body.is_empty() {
        Value::Null
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
        counters: state.streams.clone(),
    };

    match (parts.method.clone(), path) {
        (Method::POST, "/chat/completions") => chat(&json, &stream),
        (Method::POST, "/embeddings") => embeddings(&json, &stream),
        (Method::POST, "/images/generations") => images(&json, &stream),
        (Method::POST, "/moderations") => moderations(&json, &stream),
        (Method::POST, "/responses") => responses(&json, &stream),
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

impl MockState {
    fn record(&self, parts: &axum::http::request::Parts, body: &[u8]) {
        if self.options.record_limit == 0 {
            // Benchmarks turn recording off: it costs the mock more than answering.
            return;
        }
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    json!(String::from_utf8_lossy(v.as_bytes())),
                )
            })
            .collect();
        let body = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(body)));
        let entry = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
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

/// How a stream (or JSON body) should be delivered.
struct Streaming {
    interval: Duration,
    stall: Option<Duration>,
    cut_after: Option<usize>,
    malformed: bool,
    no_usage: bool,
    counters: Arc<StreamCounters>,
}

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        Json(fixtures::error_body(message, kind, None, code)),
    )
        .into_response()
}

fn model_not_found(model: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(fixtures::error_body(
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model"),
            Some("model_not_found"),
        )),
    )
        .into_response()
}

fn fault_response(status: u16, fault: &Fault) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let default_kind = match status.as_u16() {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let message = fault
        .message
        .clone()
        .unwrap_or_else(|| format!("Mock fault: status {}", status.as_u16()));
    let mut response = (
        status,
        Json(fixtures::error_body(
            &message,
            fault.kind.as_deref().unwrap_or(default_kind),
            None,
            fault.code.as_deref(),
        )),
    )
        .into_response();
    if let Some(value) = fault
        .retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if let Some(ms) = fault.retry_after_ms {
        response
            .headers_mut()
            .insert("retry-after-ms", HeaderValue::from(ms));
    }
    response
}

/// A JSON answer, or half of one (cut), or garbage (malformed).
fn json_answer(mut body: Value, stream: &Streaming) -> Response {
    if stream.no_usage
        && let Some(fields) = body.as_object_mut()
    {
        fields.remove("usage");
    }
    let bytes = Bytes::from(body.to_string());
    let mut response = if stream.malformed {
        Response::new(Body::from(
            "{\"id\": \"chatcmpl-broken\", \"choices\": [tru",
        ))
    } else if stream.cut_after.is_some() {
        let half = bytes.slice(..bytes.len() / 2);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::other("mock cut the connection")),
        ];
        Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
    } else {
        Response::new(Body::from(bytes))
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_mock"));
    response
        .headers_mut()
        .insert("openai-processing-ms", HeaderValue::from_static("1"));
    response
}

/// An SSE answer from `(event name, data)` pairs, paced and possibly broken as scripted.
fn sse_answer(events: Vec<(Option<String>, String)>, stream: &Streaming) -> Response {
    let mut frames: Vec<Bytes> = events
        .into_iter()
        .map(|(name, data)| match name {
            Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
            None => Bytes::from(format!("data: {data}\n\n")),
        })
        .collect();
    if stream.malformed {
        frames.insert(1, Bytes::from_static(b"data: {not json\n\n"));
    }
    let interval = stream.interval;
    let stall = stream.stall;
    let cut_after = stream.cut_after;
    stream.counters.started.fetch_add(1, Ordering::Relaxed);
    let guard = StreamGuard {
        counters: stream.counters.clone(),
        finished: false,
    };
    let body = futures_util::stream::unfold(
        (frames.into_iter().enumerate(), guard),
        move |(mut frames, mut guard)| async move {
            if guard.finished {
                return None;
            }
            let Some((index, frame)) = frames.next() else {
                guard.complete();
                return None;
            };
            if cut_after == Some(index) {
                // Let what was sent reach the reader first, as a real connection would.
                tokio::time::sleep(Duration::from_millis(50)).await;
                guard.finished = true;
                return Some((
                    Err(std::io::Error::other("mock cut the stream")),
                    (frames, guard),
                ));
            }
            if index == 1
                && let Some(stall) = stall
            {
                tokio::time::sleep(stall).await;
            } else if index > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            Some((Ok::<_, std::io::Error>(frame), (frames, guard)))
        },
    );
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_mock"));
    response
}

fn required_model(body: &Value) -> Result<&str, Box<Response>> {
    match body.get("model").and_then(Value::as_str) {
        Some(model) if model.contains("nonexistent") => Err(Box::new(model_not_found(model))),
        Some(model) => Ok(model),
        None => Err(Box::new(
            (
                StatusCode::BAD_REQUEST,
                Json(fixtures::error_body(
                    "You must provide a model parameter.",
                    "invalid_request_error",
                    Some("model"),
                    None,
                )),
            )
                .into_response(),
        )),
    }
}

fn chat(body: &Value, stream: &Streaming) -> Response {
    let model = match required_model(body) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(fixtures::error_body(
                "Missing required parameter: 'messages'.",
                "invalid_request_error",
                Some("messages"),
                Some("missing_required_parameter"),
            )),
        )
            .into_response();
    };
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64);
    let (words, truncated) =
        fixtures::reply_words(&fixtures::last_message_text(messages), max_tokens);
    let prompt_tokens = fixtures::chat_prompt_tokens(messages);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let mut events: Vec<(Option<String>, String)> =
            fixtures::chat_stream_chunks(model, &words, truncated, prompt_tokens, include_usage)
                .into_iter()
                .map(|chunk| (None, chunk.to_string()))
                .collect();
        events.push((None, "[DONE]".to_owned()));
        return sse_answer(events, stream);
    }
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    json_answer(
        fixtures::chat_completion(model, &words, truncated, n, prompt_tokens),
        stream,
    )
}

fn embeddings(body: &Value, stream: &Streaming) -> Response {
    let model = match required_model(body) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let inputs = fixtures::embedding_inputs(body.get("input").unwrap_or(&Value::Null));
    let dimensions = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or_else(|| fixtures::default_dimensions(model));
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    json_answer(
        fixtures::embeddings(model, &inputs, dimensions, base64),
        stream,
    )
}

fn images(body: &Value, stream: &Streaming) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("dall-e-2");
    let prompt = body
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    let b64 = body.get("response_format").and_then(Value::as_str) == Some("b64_json");
    json_answer(fixtures::images(model, prompt, n, b64), stream)
}

fn moderations(body: &Value, stream: &Streaming) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("omni-moderation-latest");
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).unwrap_or_else(|| {
                    i.get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                })
            })
            .collect(),
        _ => vec![String::new()],
    };
    json_answer(fixtures::moderation(model, &inputs), stream)
}

fn responses(body: &Value, stream: &Streaming) -> Response {
    let model = match required_model(body) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let (input_tokens, last) =
        fixtures::responses_input_tokens(body.get("input").unwrap_or(&Value::Null));
    let max_tokens = body.get("max_output_tokens").and_then(Value::as_u64);
    let (words, _) = fixtures::reply_words(&last, max_tokens);
    let response_id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let events = fixtures::response_stream_events(&response_id, model, &words, input_tokens)
            .into_iter()
            .map(|(kind, data)| (Some(kind), data.to_string()))
            .collect();
        return sse_answer(events, stream);
    }
    json_answer(
        fixtures::response_object(
            &response_id,
            model,
            &words.join(" "),
            "completed",
            input_tokens,
        ),
        stream,
    )
}

/// Serves the mock on `listener` until `shutdown` resolves (in-process use: tests, the demo).
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: MockOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(options))
        .with_graceful_shutdown(shutdown)
        .await
}
