//! The mock's answers: OpenAI-shaped bodies for each route, delivered as JSON or SSE the way
//! the scripted faults say (slow, stalled, cut, malformed).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::Fault;
use super::fixtures;
use super::{StreamCounters, StreamGuard};

/// How a stream (or JSON body) should be delivered.
pub(super) struct Streaming {
    pub(super) interval: Duration,
    pub(super) stall: Option<Duration>,
    pub(super) cut_after: Option<usize>,
    pub(super) malformed: bool,
    pub(super) no_usage: bool,
    /// Reported instead of the answer's own usage (JSON answers).
    pub(super) usage: Option<Value>,
    /// Named as the model that answered (a snapshot, say) instead of the one asked for.
    pub(super) answer_model: Option<String>,
    pub(super) counters: Arc<StreamCounters>,
}

impl Streaming {
    /// An answer delivered whole, with nothing scripted.
    pub(super) fn plain() -> Self {
        Self {
            interval: Duration::ZERO,
            stall: None,
            cut_after: None,
            malformed: false,
            no_usage: false,
            usage: None,
            answer_model: None,
            counters: Arc::default(),
        }
    }
}

pub(super) fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        Json(fixtures::error_body(message, kind, None, code)),
    )
        .into_response()
}

pub(super) fn model_not_found(model: &str) -> Response {
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

pub(super) fn fault_response(status: u16, fault: &Fault) -> Response {
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
pub(super) fn json_answer(mut body: Value, stream: &Streaming) -> Response {
    if let Some(fields) = body.as_object_mut() {
        if stream.no_usage {
            fields.remove("usage");
        } else if let Some(usage) = &stream.usage {
            fields.insert("usage".to_owned(), usage.clone());
        }
    }
    let bytes = Bytes::from(body.to_string());
    let mut response = if stream.malformed {
        Response::new(Body::from(
            "{\"id\": \"chatcmpl-broken\", \"choices\": [tru",
        ))
    } else if stream.cut_after.is_some() {
        // Half the body goes out (the head with it), and the connection breaks a moment later,
        // as when an upstream dies mid-answer.
        let half = bytes.slice(..bytes.len() / 2);
        let chunks = futures_util::stream::unfold(Some(half), |next| async move {
            match next {
                Some(half) => Some((Ok(half), None)),
                None => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((Err(std::io::Error::other("mock cut the connection")), None))
                }
            }
        });
        Response::new(Body::from_stream(chunks))
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
pub(super) fn sse_answer(events: Vec<(Option<String>, String)>, stream: &Streaming) -> Response {
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

pub(super) fn required_model(body: &Value) -> Result<&str, Box<Response>> {
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

pub(super) fn chat(body: &Value, stream: &Streaming) -> Response {
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
    let model = stream.answer_model.as_deref().unwrap_or(model);
    let tier = served_tier(body);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let mut events: Vec<(Option<String>, String)> =
            fixtures::chat_stream_chunks(model, &words, truncated, prompt_tokens, include_usage)
                .into_iter()
                .map(|mut chunk| {
                    chunk["service_tier"] = json!(tier);
                    (None, chunk.to_string())
                })
                .collect();
        events.push((None, "[DONE]".to_owned()));
        return sse_answer(events, stream);
    }
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    let mut answer = fixtures::chat_completion(model, &words, truncated, n, prompt_tokens);
    answer["service_tier"] = json!(tier);
    json_answer(answer, stream)
}

pub(super) fn embeddings(body: &Value, stream: &Streaming) -> Response {
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

pub(super) fn images(body: &Value, stream: &Streaming) -> Response {
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
    let text = |field: &str| body.get(field).and_then(Value::as_str);
    let answer = fixtures::images(model, prompt, n, b64, text("quality"), text("size"));
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        // A GPT image stream: a partial image, then the final image with the usage.
        let image = answer
            .pointer("/data/0/b64_json")
            .cloned()
            .unwrap_or_default();
        let events = vec![
            (
                Some("image_generation.partial_image".to_owned()),
                json!({ "type": "image_generation.partial_image", "b64_json": image,
                        "partial_image_index": 0, "created_at": answer["created"] })
                .to_string(),
            ),
            (
                Some("image_generation.completed".to_owned()),
                json!({ "type": "image_generation.completed", "b64_json": image,
                        "created_at": answer["created"], "usage": answer["usage"] })
                .to_string(),
            ),
        ];
        return sse_answer(events, stream);
    }
    json_answer(answer, stream)
}

pub(super) fn moderations(body: &Value, stream: &Streaming) -> Response {
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

pub(super) fn responses(body: &Value, stream: &Streaming) -> Response {
    let model = match required_model(body) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let (input_tokens, last) =
        fixtures::responses_input_tokens(body.get("input").unwrap_or(&Value::Null));
    let max_tokens = body.get("max_output_tokens").and_then(Value::as_u64);
    let (words, _) = fixtures::reply_words(&last, max_tokens);
    let response_id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let model = stream.answer_model.as_deref().unwrap_or(model);
    let tier = served_tier(body);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let events = fixtures::response_stream_events(&response_id, model, &words, input_tokens)
            .into_iter()
            .map(|(kind, mut data)| {
                if let Some(response) = data.get_mut("response") {
                    response["service_tier"] = json!(tier);
                }
                (Some(kind), data.to_string())
            })
            .collect();
        return sse_answer(events, stream);
    }
    let mut answer = fixtures::response_object(
        &response_id,
        model,
        &words.join(" "),
        "completed",
        input_tokens,
    );
    answer["service_tier"] = json!(tier);
    json_answer(answer, stream)
}

/// The tier an answer reports: the one asked for when OpenAI offers it, else `default`.
fn served_tier(body: &Value) -> &'static str {
    match body.get("service_tier").and_then(Value::as_str) {
        Some("flex") => "flex",
        Some("priority") => "priority",
        _ => "default",
    }
}
