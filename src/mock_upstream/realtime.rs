//! The mock's Realtime endpoint (`GET /v1/realtime?model=…`, a WebSocket): enough of OpenAI's
//! Realtime API to test a gateway in front of it.
//!
//! It sends `session.created` (a dated snapshot of the model asked for), answers
//! `session.update` with `session.updated`, and each `response.create` with a response in
//! OpenAI's event order (`response.created`, text deltas, `response.done` with usage split by
//! class, cached tokens apart). A response's `metadata` scripts it: `mock_usage` (a JSON usage
//! object) replaces the default usage, `mock_delay_ms` holds the response open before its end,
//! `mock_delta_bytes` makes its text one delta of that many bytes (a large answer). The event
//! `mock.echo_authorization` is answered with an `error` event quoting the `Authorization` the
//! session was opened with, as a careless provider might.
//! Every event received is kept with the handshake's headers in `/_mock/requests`
//! (`method: "WS"`), so a test can see what the gateway sent on and what it held back.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::MockState;
use super::answers::error;
use crate::realtime::handshake::Handshake;

/// What each response uses unless scripted: 789 tokens in (640 cached), 32 out, split by class
/// as OpenAI reports it ($0.005044 on `gpt-realtime`).
pub const DEFAULT_USAGE: &str = r#"{"total_tokens":821,"input_tokens":789,"output_tokens":32,"input_token_details":{"text_tokens":313,"audio_tokens":476,"image_tokens":0,"cached_tokens":640,"cached_tokens_details":{"text_tokens":256,"audio_tokens":384,"image_tokens":0}},"output_token_details":{"text_tokens":9,"audio_tokens":23}}"#;

/// The route: checks the key, then serves the session on its own task.
pub(super) async fn open(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    state.record(&parts, b"");
    if let Some(refusal) = state.refuse_key(&parts.headers) {
        return refusal;
    }
    let model = url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "model")
        .map(|(_, value)| value.into_owned());
    let Some(model) = model else {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'model'.",
            "invalid_request_error",
            Some("missing_required_parameter"),
        );
    };
    let handshake = match Handshake::accept(&mut parts) {
        Ok(handshake) => handshake,
        Err(refusal) => return refusal.into_response(),
    };
    let response = handshake.switching();
    let headers = parts.headers.clone();
    // The mock's sessions end with their sockets: no shutdown waits on them.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        if let Ok(upgraded) = handshake.upgrade.await {
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            serve(&state, socket, &model, &headers).await;
        }
    });
    response
}

/// One session: `session.created`, then an answer to each event until the caller closes.
async fn serve(
    state: &MockState,
    socket: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    model: &str,
    headers: &axum::http::HeaderMap,
) {
    let (mut sink, mut stream) = socket.split();
    let snapshot = format!("{model}-2025-08-28");
    let session = json!({
        "object": "realtime.session",
        "id": format!("sess_mock{}", uuid::Uuid::new_v4().simple()),
        "type": "realtime",
        "model": snapshot,
        "output_modalities": ["audio"],
        "instructions": "",
    });
    let mut ids = 0u64;
    let mut next_id = |prefix: &str| {
        ids += 1;
        format!("{prefix}_mock{ids}")
    };
    let created =
        json!({"type": "session.created", "event_id": next_id("event"), "session": session});
    if sink.send(Message::text(created.to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let event: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        state.record_event(headers, &event);
        let kind = event["type"].as_str().unwrap_or_default();
        let answers = match kind {
            "session.update" => {
                let mut updated = session.clone();
                if let (Some(fields), Some(into)) =
                    (event["session"].as_object(), updated.as_object_mut())
                {
                    into.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                vec![
                    json!({"type": "session.updated", "event_id": next_id("event"), "session": updated}),
                ]
            }
            "response.create" => {
                let metadata = &event["response"]["metadata"];
                let delay = metadata["mock_delay_ms"]
                    .as_str()
                    .and_then(|ms| ms.parse().ok())
                    .map_or(Duration::ZERO, Duration::from_millis);
                let usage: Value = metadata["mock_usage"]
                    .as_str()
                    .and_then(|usage| serde_json::from_str(usage).ok())
                    .unwrap_or_else(|| serde_json::from_str(DEFAULT_USAGE).unwrap_or(Value::Null));
                let big_delta = metadata["mock_delta_bytes"]
                    .as_str()
                    .and_then(|bytes| bytes.parse::<usize>().ok())
                    .map(|bytes| "a".repeat(bytes.min(8 << 20)));
                let response_id = next_id("resp");
                let item_id = next_id("item");
                let response = |status: &str, usage: Value| {
                    json!({"object": "realtime.response", "id": response_id, "status": status,
                           "output": [], "conversation_id": "conv_mock", "output_modalities": ["text"],
                           "metadata": metadata, "usage": usage})
                };
                let opening = [
                    json!({"type": "response.created", "event_id": next_id("event"), "response": response("in_progress", Value::Null)}),
                    json!({"type": "response.output_text.delta", "event_id": next_id("event"), "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0, "delta": big_delta.as_deref().unwrap_or("Hello from ")}),
                    json!({"type": "response.output_text.delta", "event_id": next_id("event"), "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0, "delta": "the mock."}),
                ];
                for event in opening {
                    if sink.send(Message::text(event.to_string())).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(delay).await;
                vec![
                    json!({"type": "response.output_text.done", "event_id": next_id("event"), "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0, "text": "Hello from the mock."}),
                    json!({"type": "response.done", "event_id": next_id("event"), "response": response("completed", usage)}),
                ]
            }
            "conversation.item.create" => {
                vec![
                    json!({"type": "conversation.item.added", "event_id": next_id("event"), "item": event["item"]}),
                ]
            }
            "input_audio_buffer.append" | "response.cancel" => Vec::new(),
            // A provider that quotes what it was sent: the gateway must not relay its key.
            "mock.echo_authorization" => {
                let sent = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                    .unwrap_or_default();
                vec![
                    json!({"type": "error", "event_id": next_id("event"), "error": {
                    "type": "invalid_request_error", "code": null,
                    "message": format!("Rejected (received Authorization: {sent})"),
                    "param": null, "event_id": event["event_id"]}}),
                ]
            }
            _ => vec![
                json!({"type": "error", "event_id": next_id("event"), "error": {
                "type": "invalid_request_error", "code": "invalid_value",
                "message": format!("Invalid value: '{kind}'. Supported values are the client events."),
                "param": "type", "event_id": event["event_id"]}}),
            ],
        };
        for answer in answers {
            if sink.send(Message::text(answer.to_string())).await.is_err() {
                return;
            }
        }
    }
}
