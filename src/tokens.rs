//! Token counting with the model's own tokenizer (tiktoken's rank tables, bundled in the
//! binary; nothing is fetched at run time). Used to reserve token-rule capacity before a
//! request is forwarded. The tables are built once per process, never per request: at start
//! ([`warm_up`]) when configured rules or budgets count tokens or a stored key has a budget or a
//! token rule, in the background ([`warm_up_soon`]) when such a key is first seen, else on first
//! use (they cost ~60 MB, which a deployment that never counts tokens should not pay).

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use crate::openai::ModelRoute;

/// Builds both encodings now, so the first request does not pay for it.
pub fn warm_up() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let began = std::time::Instant::now();
        let _ = tiktoken_rs::o200k_base_singleton();
        let _ = tiktoken_rs::cl100k_base_singleton();
        tracing::info!(
            took_ms = began.elapsed().as_millis() as u64,
            "tokenizer tables built"
        );
    });
}

/// Builds both encodings on a thread of their own, once per process: a key that counts tokens
/// was just seen, and the next requests should not wait ~200 ms for the tables.
pub fn warm_up_soon() {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !STARTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let _ = std::thread::Builder::new()
            .name("tokenizer-warm-up".to_owned())
            .spawn(warm_up);
    }
}

/// The encoding a model uses: `o200k_base` for the GPT-4o generation and later, `cl100k_base`
/// for GPT-4, GPT-3.5 and the embedding models.
fn encoding_for(model: &str) -> &'static CoreBPE {
    const O200K: [&str; 9] = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "o1",
        "o3",
        "o4",
        "chatgpt",
        "gpt-image",
    ];
    if O200K.iter().any(|prefix| model.starts_with(prefix)) {
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    }
}

/// Tokens in `text` for `model`.
pub fn count(model: &str, text: &str) -> u64 {
    encoding_for(model).encode_ordinary(text).len() as u64
}

/// The texts in a message `content` or Responses `input`: a string, or text parts (nested).
fn texts<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|item| texts(item, out)),
        Value::Object(object) => {
            for field in ["text", "content", "input_text"] {
                if let Some(inner) = object.get(field) {
                    texts(inner, out);
                }
            }
        }
        _ => {}
    }
}

/// Tokens in every text of `value`.
fn count_value(model: &str, value: &Value) -> u64 {
    let mut pieces = Vec::new();
    texts(value, &mut pieces);
    pieces.iter().map(|piece| count(model, piece)).sum()
}

/// A request's size before it is sent: its prompt counted with the model's tokenizer and the
/// completion it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub prompt_tokens: u64,
    /// `max_completion_tokens`, `max_tokens` or `max_output_tokens`, times `n`; `None` when the
    /// request sets no maximum.
    pub max_completion_tokens: Option<u64>,
    /// Choices asked for (`n`), at least 1.
    pub choices: u64,
    /// Audio in the prompt (chat `input_audio` parts), decoded bytes: audio models bill it as
    /// audio tokens, which the tokenizer does not count.
    pub prompt_audio_bytes: u64,
    /// Whether the answer may be audio (`modalities` names it).
    pub audio_output: bool,
}

impl Estimate {
    /// The most tokens the request can use, `default_completion` per choice standing in for
    /// a maximum it does not set.
    pub fn total(&self, default_completion: u64) -> u64 {
        self.prompt_tokens
            + self
                .max_completion_tokens
                .unwrap_or(default_completion * self.choices)
    }
}

/// A request's [`Estimate`] without the tokenizer: the prompt as a quarter of the body's
/// `bytes` (a rough count, for records of calls whose prompt was never counted), the output
/// limits as [`estimate_value`] reads them.
pub fn estimate_roughly(route: ModelRoute, request: &Value, bytes: usize) -> Estimate {
    let (max_completion_tokens, choices) = output_limits(route, request);
    Estimate {
        prompt_tokens: u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX),
        max_completion_tokens,
        choices,
        prompt_audio_bytes: prompt_audio_bytes(request),
        audio_output: asks_for_audio(request),
    }
}

/// The decoded size of every `input_audio` part of a chat request's messages (base64 carries
/// three bytes in four characters).
fn prompt_audio_bytes(request: &Value) -> u64 {
    let messages = request.get("messages").and_then(Value::as_array);
    messages
        .into_iter()
        .flatten()
        .filter_map(|message| message.get("content")?.as_array())
        .flatten()
        .filter_map(|part| part.get("input_audio")?.get("data")?.as_str())
        .map(|data| (data.len() as u64).div_ceil(4) * 3)
        .sum()
}

/// Whether a request's `modalities` include audio.
fn asks_for_audio(request: &Value) -> bool {
    request
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|m| m.as_str() == Some("audio")))
}

/// The output a request allows (all choices together; `None` when it sets no maximum) and its
/// number of choices.
fn output_limits(route: ModelRoute, request: &Value) -> (Option<u64>, u64) {
    let number = |field: &str| request.get(field).and_then(Value::as_u64);
    let choices = number("n").unwrap_or(1).max(1);
    let limit = match route {
        ModelRoute::Chat => number("max_completion_tokens")
            .or(number("max_tokens"))
            .map(|c| c.saturating_mul(choices)),
        ModelRoute::Embeddings | ModelRoute::Images => Some(0),
        ModelRoute::Responses | ModelRoute::Passthrough | ModelRoute::Realtime => {
            number("max_output_tokens").or(number("max_tokens"))
        }
    };
    (limit, choices)
}

/// A request's [`Estimate`], from its body parsed into a tree (the pipeline parses a body once).
pub fn estimate_value(route: ModelRoute, request: &Value) -> Estimate {
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-4o");
    let input = request.get("input").unwrap_or(&Value::Null);
    let prompt_tokens = match route {
        ModelRoute::Chat => {
            let messages = request
                .get("messages")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            // OpenAI's accounting: 3 tokens per message and 3 to prime the reply.
            let text: u64 = messages
                .iter()
                .filter_map(|m| m.get("content"))
                .map(|content| count_value(model, content))
                .sum();
            text + 3 * messages.len() as u64 + 3
        }
        ModelRoute::Embeddings => match input {
            Value::Array(items) if items.iter().all(Value::is_u64) => items.len() as u64,
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::Array(ids) => ids.len() as u64,
                    other => count_value(model, other),
                })
                .sum(),
            other => count_value(model, other),
        },
        ModelRoute::Images => request
            .get("prompt")
            .and_then(Value::as_str)
            .map_or(0, |p| count(model, p)),
        ModelRoute::Responses | ModelRoute::Passthrough | ModelRoute::Realtime => {
            count_value(model, input) + 3
        }
    };
    let (max_completion_tokens, choices) = output_limits(route, request);
    Estimate {
        prompt_tokens,
        max_completion_tokens,
        choices,
        prompt_audio_bytes: prompt_audio_bytes(request),
        audio_output: asks_for_audio(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most tokens a request can use: its prompt counted with the model's tokenizer, plus the
    /// completion it allows (`max_completion_tokens`, `max_tokens`, `max_output_tokens`, or
    /// `default_completion` when it sets none) for each of its `n` choices.
    fn estimate(route: ModelRoute, body: &[u8], default_completion: u64) -> u64 {
        estimate_parts(route, body).total(default_completion)
    }

    /// The prompt and completion parts of [`estimate`].
    fn estimate_parts(route: ModelRoute, body: &[u8]) -> Estimate {
        estimate_value(route, &serde_json::from_slice(body).unwrap_or_default())
    }

    #[test]
    fn counts_match_the_reference_ids() {
        // "hello world" is [15339, 1917] in cl100k and [24912, 2375] in o200k.
        assert_eq!(count("gpt-4", "hello world"), 2);
        assert_eq!(count("gpt-4o", "hello world"), 2);
    }

    #[test]
    fn chat_estimates_prompt_plus_allowed_completion() {
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}],"max_tokens":50,"n":2}"#;
        assert_eq!(estimate(ModelRoute::Chat, body, 1024), 2 + 3 + 3 + 100);
        let parts = br#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"hello world"}]}]}"#;
        assert_eq!(estimate(ModelRoute::Chat, parts, 10), 2 + 3 + 3 + 10);
    }

    #[test]
    fn embeddings_count_inputs_and_token_arrays() {
        assert_eq!(
            estimate(
                ModelRoute::Embeddings,
                br#"{"model":"text-embedding-3-small","input":["hello world","hello"]}"#,
                99
            ),
            3
        );
        assert_eq!(
            estimate(
                ModelRoute::Embeddings,
                br#"{"model":"text-embedding-3-small","input":[[1,2,3],[4]]}"#,
                99
            ),
            4
        );
        assert_eq!(
            estimate(
                ModelRoute::Embeddings,
                br#"{"model":"text-embedding-3-small","input":[1,2,3]}"#,
                99
            ),
            3
        );
    }
}
