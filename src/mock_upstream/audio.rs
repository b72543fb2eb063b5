//! The mock's audio and form answers: speech (audio bytes, or SSE with the usage at its end),
//! transcriptions and translations (JSON with duration or token usage, plain text, or SSE),
//! and multipart forms read into the JSON the other answers take.
//!
//! The figures follow OpenAI's shapes with round, predictable sizes, so a test can compute
//! what an answer costs: an upload's audio lasts one second per 16,000 bytes (MP3 at 128
//! kbit/s), a second of input audio is 17 audio tokens, and speech makes 6 audio tokens per
//! input token.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::answers::{Streaming, error, json_answer, required_model, sse_answer};
use super::fixtures;

/// Bytes of upload per second of audio.
const UPLOAD_BYTES_PER_SECOND: u64 = 16_000;
/// Audio tokens per second of input audio.
const AUDIO_TOKENS_PER_SECOND: u64 = 17;
/// Audio tokens of speech per input token.
const SPEECH_TOKENS_PER_INPUT_TOKEN: u64 = 6;

/// A multipart form as JSON: each text field by name (whole numbers and booleans as such), and
/// `_file_bytes`, the size of its files; with the first file's content. `None` when the body
/// is not a readable form.
pub(super) fn form_fields(content_type: &str, body: &[u8]) -> Option<(Value, Bytes)> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut fields = Map::new();
    let mut file_bytes = 0u64;
    let mut first_file = None;
    let mut rest = body;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let part_end = find(rest, delimiter.as_bytes()).unwrap_or(rest.len());
        let part = rest[..part_end]
            .strip_prefix(b"\r\n")
            .unwrap_or(&rest[..part_end]);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let split = find(part, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&part[..split]).to_ascii_lowercase();
        let value = &part[split + 4..];
        let name = headers
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| n.trim_matches('"').to_owned())?;
        if headers.contains("filename=") {
            file_bytes += value.len() as u64;
            first_file.get_or_insert_with(|| Bytes::copy_from_slice(value));
            continue;
        }
        let value = String::from_utf8_lossy(value).into_owned();
        let value = match value.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            number if number.parse::<u64>().is_ok() => json!(number.parse::<u64>().ok()),
            _ => Value::String(value),
        };
        fields.insert(name, value);
    }
    fields.insert("_file_bytes".to_owned(), json!(file_bytes));
    Some((Value::Object(fields), first_file.unwrap_or_default()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `POST /audio/speech`: audio bytes (`response_format`, MP3 by default), or with
/// `stream_format: "sse"` (not for `tts-1`) delta events and a `speech.audio.done` carrying
/// the usage.
pub(super) fn speech(body: &Value, stream: &Streaming) -> Response {
    let model = match required_model(body) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let input = body
        .get("input")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let instructions = body
        .get("instructions")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let audio: Vec<u8> = input.bytes().cycle().take(input.len() * 40).collect();
    if body.get("stream_format").and_then(Value::as_str) == Some("sse") {
        if model.starts_with("tts-1") {
            return error(
                StatusCode::BAD_REQUEST,
                "stream_format 'sse' is not supported for tts-1 or tts-1-hd.",
                "invalid_request_error",
                None,
            );
        }
        let input_tokens = fixtures::count_tokens(input) + fixtures::count_tokens(instructions);
        let output_tokens = input_tokens * SPEECH_TOKENS_PER_INPUT_TOKEN;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&audio);
        let mut usage = json!({ "input_tokens": input_tokens, "output_tokens": output_tokens,
                                "total_tokens": input_tokens + output_tokens });
        if let Some(scripted) = &stream.usage {
            usage = scripted.clone();
        }
        let mut events = vec![(
            None,
            json!({ "type": "speech.audio.delta", "audio": encoded }).to_string(),
        )];
        if !stream.no_usage {
            events.push((
                None,
                json!({ "type": "speech.audio.done", "usage": usage }).to_string(),
            ));
        }
        return sse_answer(events, stream);
    }
    let media = match body.get("response_format").and_then(Value::as_str) {
        Some("wav") => "audio/wav",
        Some("opus") => "audio/ogg",
        Some("aac") => "audio/aac",
        Some("flac") => "audio/flac",
        Some("pcm") => "audio/pcm",
        _ => "audio/mpeg",
    };
    let mut response = Response::new(Body::from(Bytes::from(audio)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
}

/// `POST /audio/transcriptions` and `/audio/translations` (a form): the text, with usage by
/// duration for `whisper-1` and by tokens for the transcribe models; `response_format: text`
/// answers plain text, `stream: true` (transcribe models) delta events and a done event.
pub(super) fn transcription(form: &Value, stream: &Streaming) -> Response {
    let model = match required_model(form) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let bytes = form.get("_file_bytes").and_then(Value::as_u64).unwrap_or(0);
    let text = "The beach was a popular spot on a hot summer day.";
    let millis = bytes * 1_000 / UPLOAD_BYTES_PER_SECOND;
    let usage = if model == "whisper-1" {
        json!({ "type": "duration", "seconds": millis as f64 / 1000.0 })
    } else {
        let audio = (millis * AUDIO_TOKENS_PER_SECOND).div_ceil(1_000);
        let output = fixtures::count_tokens(text);
        json!({ "type": "tokens", "input_tokens": audio,
                "input_token_details": { "text_tokens": 0, "audio_tokens": audio },
                "output_tokens": output, "total_tokens": audio + output })
    };
    let usage = stream.usage.clone().unwrap_or(usage);
    if form.get("stream").and_then(Value::as_bool) == Some(true) && model != "whisper-1" {
        let mut events = vec![(
            None,
            json!({ "type": "transcript.text.delta", "delta": text }).to_string(),
        )];
        if !stream.no_usage {
            events.push((
                None,
                json!({ "type": "transcript.text.done", "text": text, "usage": usage }).to_string(),
            ));
        }
        return sse_answer(events, stream);
    }
    if form.get("response_format").and_then(Value::as_str) == Some("text") {
        let mut response = Response::new(Body::from(format!("{text}\n")));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return response;
    }
    json_answer(json!({ "text": text, "usage": usage }), stream)
}
