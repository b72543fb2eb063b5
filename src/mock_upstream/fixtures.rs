//! The mock's answers, shaped after OpenAI's published schemas (`CreateChatCompletionResponse`,
//! `CreateChatCompletionStreamResponse`, `CreateEmbeddingResponse`, `ImagesResponse`,
//! `CreateModerationResponse`, `Response`, `ListModelsResponse`), with usage consistent with
//! the text: one token per whitespace-separated word, plus OpenAI's per-message overhead.

use base64::Engine;
use serde_json::{Value, json};

/// The models the mock knows; any other model whose name contains `nonexistent` is a 404.
pub const MODELS: [(&str, &str); 12] = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("gpt-4.1", "openai"),
    ("gpt-4.1-mini", "openai"),
    ("o3-mini", "openai"),
    ("text-embedding-3-small", "openai"),
    ("text-embedding-3-large", "openai"),
    ("text-embedding-ada-002", "openai-internal"),
    ("dall-e-2", "system"),
    ("dall-e-3", "system"),
    ("gpt-image-1", "system"),
    ("omni-moderation-latest", "system"),
];

/// A 1×1 transparent PNG, for `b64_json` images.
const PIXEL_PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// Whitespace-separated words: the mock's token count.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// A unique-enough id with OpenAI's prefix.
pub fn id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Text of a message's `content` (a string, or an array of text parts).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Prompt tokens of a chat request: words of every message + 3 per message + 3 to prime the reply.
pub fn chat_prompt_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| count_tokens(&content_text(m.get("content").unwrap_or(&Value::Null))) + 3)
        .sum::<u64>()
        + 3
}

/// The reply: `echo: TEXT` in the last message is echoed, anything else gets a fixed sentence.
/// Cut to `max_tokens` words, reporting whether it was cut.
pub fn reply_words(last_message: &str, max_tokens: Option<u64>) -> (Vec<String>, bool) {
    let text = match last_message.split_once("echo:") {
        Some((_, rest)) => rest.trim().to_owned(),
        None => "Hello! This is a mock reply from the Tollgate test upstream. It is deterministic, so tests can count on it.".to_owned(),
    };
    let mut words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let truncated = max_tokens.is_some_and(|max| words.len() as u64 > max);
    if let Some(max) = max_tokens {
        words.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    }
    (words, truncated)
}

/// The last message's text.
pub fn last_message_text(messages: &[Value]) -> String {
    messages
        .last()
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// Chat usage with detail objects, as current models report it.
pub fn chat_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 },
    })
}

/// `chat.completion` with `n` identical choices.
pub fn chat_completion(
    model: &str,
    words: &[String],
    truncated: bool,
    n: u64,
    prompt_tokens: u64,
) -> Value {
    let content = words.join(" ");
    let choices: Vec<Value> = (0..n)
        .map(|index| {
            json!({
                "index": index,
                "message": { "role": "assistant", "content": content, "refusal": null, "annotations": [] },
                "logprobs": null,
                "finish_reason": if truncated { "length" } else { "stop" },
            })
        })
        .collect();
    json!({
        "id": id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": choices,
        "usage": chat_usage(prompt_tokens, words.len() as u64 * n),
        "service_tier": "default",
        "system_fingerprint": "fp_tollgate_mock",
    })
}

/// The `data:` payloads of a chat stream, in order (without `[DONE]`).
pub fn chat_stream_chunks(
    model: &str,
    words: &[String],
    truncated: bool,
    prompt_tokens: u64,
    include_usage: bool,
) -> Vec<Value> {
    let id = id("chatcmpl");
    let created = now();
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_tollgate_mock",
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut chunks = vec![chunk(
        json!({ "role": "assistant", "content": "", "refusal": null }),
        Value::Null,
    )];
    for (i, word) in words.iter().enumerate() {
        let text = if i == 0 {
            word.clone()
        } else {
            format!(" {word}")
        };
        chunks.push(chunk(json!({ "content": text }), Value::Null));
    }
    chunks.push(chunk(
        json!({}),
        json!(if truncated { "length" } else { "stop" }),
    ));
    if include_usage {
        chunks.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_tollgate_mock",
            "choices": [],
            "usage": chat_usage(prompt_tokens, words.len() as u64),
        }));
    }
    chunks
}

/// The embedding inputs as texts (token arrays count one token per number).
pub fn embedding_inputs(input: &Value) -> Vec<(String, u64)> {
    let one = |item: &Value| match item {
        Value::String(s) => (s.clone(), count_tokens(s)),
        Value::Array(tokens) => (format!("{tokens:?}"), tokens.len() as u64),
        other => (other.to_string(), 1),
    };
    match input {
        Value::Array(items) if items.iter().all(Value::is_u64) => vec![one(input)],
        Value::Array(items) => items.iter().map(one).collect(),
        other => vec![one(other)],
    }
}

/// A deterministic unit-ish vector for `text`.
fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    // FNV-1a seeds a xorshift generator: same text, same vector.
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `CreateEmbeddingResponse`.
pub fn embeddings(model: &str, inputs: &[(String, u64)], dimensions: usize, base64: bool) -> Value {
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, (text, _))| {
            let values = vector(text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(values)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|(_, t)| t).sum();
    json!({ "object": "list", "data": data, "model": model, "usage": { "prompt_tokens": tokens, "total_tokens": tokens } })
}

/// The model's native embedding size.
pub fn default_dimensions(model: &str) -> usize {
    if model.contains("large") { 3072 } else { 1536 }
}

/// `ImagesResponse`; GPT image models answer in base64 and report token usage: each image's
/// output tokens by quality and size as OpenAI documents them (`auto` as the dearest).
pub fn images(
    model: &str,
    prompt: &str,
    n: u64,
    b64: bool,
    quality: Option<&str>,
    size: Option<&str>,
) -> Value {
    let token_model = model.starts_with("gpt-image");
    let data: Vec<Value> = (0..n)
        .map(|_| {
            if b64 || token_model {
                json!({ "b64_json": PIXEL_PNG_BASE64, "revised_prompt": prompt })
            } else {
                json!({ "url": format!("https://images.mock.invalid/{}.png", id("img")), "revised_prompt": prompt })
            }
        })
        .collect();
    let mut body = json!({ "created": now(), "data": data });
    if token_model {
        let input = count_tokens(prompt);
        let output = crate::pricing::images::output_tokens(quality, size) * n;
        body["usage"] = json!({
            "input_tokens": input,
            "output_tokens": output,
            "total_tokens": input + output,
            "input_tokens_details": { "text_tokens": input, "image_tokens": 0 },
        });
    }
    body
}

/// `CreateModerationResponse`: flags any input containing `flag-me`.
pub fn moderation(model: &str, inputs: &[String]) -> Value {
    const CATEGORIES: [&str; 11] = [
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "illicit",
        "illicit/violent",
        "self-harm",
        "self-harm/instructions",
        "self-harm/intent",
        "sexual",
        "violence",
    ];
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let flagged = text.contains("flag-me");
            let categories: serde_json::Map<String, Value> = CATEGORIES
                .iter()
                .map(|c| ((*c).to_owned(), json!(flagged && *c == "violence")))
                .collect();
            let scores: serde_json::Map<String, Value> = CATEGORIES
                .iter()
                .map(|c| {
                    (
                        (*c).to_owned(),
                        json!(if flagged && *c == "violence" {
                            0.98
                        } else {
                            0.0001
                        }),
                    )
                })
                .collect();
            json!({ "flagged": flagged, "categories": categories, "category_scores": scores })
        })
        .collect();
    json!({ "id": id("modr"), "model": model, "results": results })
}

/// A `Response` object around `text`.
pub fn response_object(
    id: &str,
    model: &str,
    text: &str,
    status: &str,
    input_tokens: u64,
) -> Value {
    let output_tokens = count_tokens(text);
    let output = if status == "completed" {
        json!([{
            "type": "message",
            "id": format!("msg_{id}"),
            "status": "completed",
            "role": "assistant",
            "content": [{ "type": "output_text", "text": text, "annotations": [], "logprobs": [] }],
        }])
    } else {
        json!([])
    };
    let usage = if status == "completed" {
        json!({
            "input_tokens": input_tokens,
            "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": output_tokens,
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": input_tokens + output_tokens,
        })
    } else {
        Value::Null
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": now(),
        "status": status,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": { "effort": null, "summary": null },
        "store": true,
        "temperature": 1.0,
        "text": { "format": { "type": "text" } },
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    })
}

/// The input tokens of a Responses request (`input` as a string or a list of messages).
pub fn responses_input_tokens(input: &Value) -> (u64, String) {
    match input {
        Value::String(s) => (count_tokens(s) + 3, s.clone()),
        Value::Array(items) => {
            let last = items
                .last()
                .and_then(|m| m.get("content"))
                .map(content_text)
                .unwrap_or_default();
            (chat_prompt_tokens(items), last)
        }
        _ => (3, String::new()),
    }
}

/// The events of a Responses stream, as `(event type, data)`.
pub fn response_stream_events(
    response_id: &str,
    model: &str,
    words: &[String],
    input_tokens: u64,
) -> Vec<(String, Value)> {
    let text = words.join(" ");
    let message_id = format!("msg_{response_id}");
    let mut events = vec![
        (
            "response.created".to_owned(),
            json!({ "response": response_object(response_id, model, "", "in_progress", input_tokens) }),
        ),
        (
            "response.in_progress".to_owned(),
            json!({ "response": response_object(response_id, model, "", "in_progress", input_tokens) }),
        ),
        (
            "response.output_item.added".to_owned(),
            json!({ "output_index": 0, "item": { "type": "message", "id": message_id, "status": "in_progress", "role": "assistant", "content": [] } }),
        ),
        (
            "response.content_part.added".to_owned(),
            json!({ "item_id": message_id, "output_index": 0, "content_index": 0, "part": { "type": "output_text", "text": "", "annotations": [] } }),
        ),
    ];
    for (i, word) in words.iter().enumerate() {
        let delta = if i == 0 {
            word.clone()
        } else {
            format!(" {word}")
        };
        events.push(("response.output_text.delta".to_owned(), json!({ "item_id": message_id, "output_index": 0, "content_index": 0, "delta": delta, "logprobs": [] })));
    }
    events.push(("response.output_text.done".to_owned(), json!({ "item_id": message_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": [] })));
    events.push(("response.content_part.done".to_owned(), json!({ "item_id": message_id, "output_index": 0, "content_index": 0, "part": { "type": "output_text", "text": text, "annotations": [] } })));
    events.push(("response.output_item.done".to_owned(), json!({ "output_index": 0, "item": { "type": "message", "id": message_id, "status": "completed", "role": "assistant", "content": [{ "type": "output_text", "text": text, "annotations": [] }] } })));
    events.push(("response.completed".to_owned(), json!({ "response": response_object(response_id, model, &text, "completed", input_tokens) })));
    for (sequence, (kind, data)) in events.iter_mut().enumerate() {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(sequence);
    }
    events
}

/// A `Model` object.
pub fn model_object(id: &str, owner: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": owner })
}

/// `ListModelsResponse`.
pub fn model_list() -> Value {
    json!({ "object": "list", "data": MODELS.iter().map(|(id, owner)| model_object(id, owner)).collect::<Vec<_>>() })
}

/// OpenAI's error envelope.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}
