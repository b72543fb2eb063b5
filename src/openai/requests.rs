//! Request fields the gateway reads, with the range checks OpenAI documents. Unknown fields
//! are ignored here (and forwarded untouched by the pipeline).

use serde::Deserialize;

use crate::error::GatewayError;

/// What the pipeline needs to know of any model request, whatever its route.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// The model asked for, when the body names one.
    pub model: Option<String>,
    /// Whether the caller asked for SSE.
    pub stream: bool,
    /// Whether the caller itself asked for the final usage chunk of a chat stream.
    pub include_usage: bool,
    /// The body's `user`, validated (the end user, for key callers without `x-user-id`).
    pub user: Option<String>,
    /// An images request: how many, what size and quality (to price per-image models).
    pub images: Option<crate::pricing::ImageRequest>,
    /// A speech or transcription request: its text or its upload's size (to price audio).
    pub audio: Option<crate::pricing::AudioRequest>,
    /// A chat request that asks for a deterministic answer (`temperature: 0`), which the
    /// cache keeps under its default policy.
    pub deterministic: bool,
    /// Models named inside the request besides `model` (a Responses `image_generation` tool's
    /// `model`): they run too, so a model list applies to them.
    pub tool_models: Vec<String>,
}

/// `stream_options` of a chat request.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One chat message; only the role is checked here.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub user: Option<String>,
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
}

/// `POST /v1/embeddings`; `input` is checked for shape, not read.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingsRequest {
    #[serde(default)]
    pub user: Option<String>,
    pub model: String,
    pub input: serde_json::Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
}

/// `POST /v1/images/generations`.
#[derive(Debug, Clone, Deserialize)]
pub struct ImagesRequest {
    #[serde(default)]
    pub user: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub quality: Option<String>,
    /// GPT image models stream partial images and a final event with the usage.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// `POST /v1/responses`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    #[serde(default)]
    pub user: Option<String>,
    pub model: String,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<ToolModel>>,
}

/// A Responses tool, read for the model it may name (`image_generation`).
#[derive(Debug, Clone, Deserialize)]
pub struct ToolModel {
    #[serde(default)]
    pub model: Option<serde_json::Value>,
}

/// Any other JSON body: the model, if it names one, and whether it streams.
#[derive(Debug, Clone, Deserialize)]
pub struct PassthroughRequest {
    #[serde(default)]
    pub user: Option<serde_json::Value>,
    #[serde(default)]
    pub model: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: Option<serde_json::Value>,
}

/// `body` (a JSON object) with `field` set to `value` (JSON text); every other value is kept as
/// the caller's raw text. Used where Tollgate must change one field: a chat stream's
/// `stream_options`, an alias's `model`.
pub fn with_field(body: &[u8], field: &str, value: &str) -> Result<bytes::Bytes, GatewayError> {
    let mut fields: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        crate::extract::decode(body)?;
    let value = serde_json::value::RawValue::from_string(value.to_owned())
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    fields.insert(field.to_owned(), value);
    serde_json::to_vec(&fields)
        .map(bytes::Bytes::from)
        .map_err(|e| GatewayError::Internal(e.to_string()))
}

/// The body's `user`, when present, must name an end user as `x-user-id` does.
fn check_user(user: Option<&String>) -> Result<Option<String>, GatewayError> {
    match user {
        Some(user) if !crate::identity::is_valid_user(user) => Err(GatewayError::invalid(
            "'user' must be 1 to 128 characters of letters, digits and . _ : @ + -",
            Some("user".to_owned()),
        )),
        other => Ok(other.cloned()),
    }
}

fn check_model(model: &str) -> Result<(), GatewayError> {
    if model.trim().is_empty() {
        return Err(GatewayError::invalid(
            "'model' must not be empty.",
            Some("model".to_owned()),
        ));
    }
    if model.len() > 256 || model.chars().any(char::is_control) {
        return Err(GatewayError::invalid(
            "'model' is not a valid model name.",
            Some("model".to_owned()),
        ));
    }
    Ok(())
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: Option<T>,
    min: T,
    max: T,
) -> Result<(), GatewayError> {
    match value {
        Some(v) if v < min || v > max => Err(GatewayError::invalid(
            format!("Invalid value for '{field}': {v} is not between {min} and {max}."),
            Some(field.to_owned()),
        )),
        _ => Ok(()),
    }
}

impl ChatRequest {
    /// Range checks on what we read; the rest is the upstream's to judge.
    pub fn validate(&self) -> Result<RequestFacts, GatewayError> {
        check_model(&self.model)?;
        if self.messages.is_empty() {
            return Err(GatewayError::invalid(
                "'messages' must contain at least one message.",
                Some("messages".to_owned()),
            ));
        }
        for (i, message) in self.messages.iter().enumerate() {
            if message.role.trim().is_empty() {
                return Err(GatewayError::invalid(
                    "Each message needs a 'role'.",
                    Some(format!("messages[{i}].role")),
                ));
            }
        }
        check_range("max_tokens", self.max_tokens, 1, u32::MAX)?;
        check_range(
            "max_completion_tokens",
            self.max_completion_tokens,
            1,
            u32::MAX,
        )?;
        check_range("n", self.n, 1, 128)?;
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(GatewayError::invalid(
                "'stream_options' is only allowed when 'stream' is true.",
                Some("stream_options".to_owned()),
            ));
        }
        Ok(RequestFacts {
            model: Some(self.model.clone()),
            stream,
            deterministic: self.temperature == Some(0.0),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            user: check_user(self.user.as_ref())?,
            images: None,
            audio: None,
            tool_models: Vec::new(),
        })
    }
}

impl EmbeddingsRequest {
    /// `input` must be a non-empty string, or a non-empty array of strings or token arrays.
    pub fn validate(&self) -> Result<RequestFacts, GatewayError> {
        check_model(&self.model)?;
        let bad = |message: &str| GatewayError::invalid(message, Some("input".to_owned()));
        match &self.input {
            serde_json::Value::String(s) if s.is_empty() => {
                return Err(bad("'input' must not be empty."));
            }
            serde_json::Value::String(_) => {}
            serde_json::Value::Array(items) if items.is_empty() => {
                return Err(bad("'input' must not be an empty array."));
            }
            serde_json::Value::Array(items) if items.len() > 2048 => {
                return Err(bad("'input' may hold at most 2048 items."));
            }
            serde_json::Value::Array(items) => {
                let valid = items.iter().all(|item| match item {
                    serde_json::Value::String(_) => true,
                    serde_json::Value::Number(n) => n.is_u64(),
                    serde_json::Value::Array(tokens) => {
                        tokens.iter().all(serde_json::Value::is_u64)
                    }
                    _ => false,
                });
                if !valid {
                    return Err(bad(
                        "'input' must be a string, an array of strings, or an array of token arrays.",
                    ));
                }
            }
            _ => return Err(bad("'input' must be a string or an array.")),
        }
        if let Some(format) = &self.encoding_format
            && !matches!(format.as_str(), "float" | "base64")
        {
            return Err(GatewayError::invalid(
                "'encoding_format' must be 'float' or 'base64'.",
                Some("encoding_format".to_owned()),
            ));
        }
        Ok(RequestFacts {
            model: Some(self.model.clone()),
            stream: false,
            include_usage: false,
            user: check_user(self.user.as_ref())?,
            images: None,
            audio: None,
            deterministic: false,
            tool_models: Vec::new(),
        })
    }
}

/// An images request's count, size and quality, `n` checked to OpenAI's range (1 to 10) from
/// its text (a form field or a JSON number's text).
pub fn image_request(
    n: Option<&str>,
    size: Option<String>,
    quality: Option<String>,
) -> Result<crate::pricing::ImageRequest, GatewayError> {
    let count = match n {
        None => 1,
        Some(n) => n
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=10).contains(n))
            .ok_or_else(|| {
                GatewayError::invalid("'n' must be an integer from 1 to 10.", Some("n".to_owned()))
            })?,
    };
    Ok(crate::pricing::ImageRequest {
        count,
        size,
        quality,
    })
}

/// The priced fields of a JSON body to an OpenAI operation: `/audio/speech`'s text (and its
/// `stream_format: "sse"`, a stream), `/images/edits`' images. Other operations have none.
pub fn add_operation_facts(
    template: &str,
    body: &[u8],
    facts: &mut RequestFacts,
) -> Result<(), GatewayError> {
    match template {
        "/audio/speech" => {
            let speech: SpeechRequest = crate::extract::decode(body)?;
            let text = [Some(&speech.input), speech.instructions.as_ref()];
            let text = text.iter().flatten();
            facts.audio = Some(crate::pricing::AudioRequest::Speech {
                characters: text.clone().map(|t| t.chars().count() as u64).sum(),
                text_bytes: text.map(|t| t.len() as u64).sum(),
            });
            facts.stream = speech.stream_format.as_deref() == Some("sse");
        }
        "/images/edits" => {
            let edit: ImageOptions = crate::extract::decode(body)?;
            check_range("n", edit.n, 1, 10)?;
            facts.images = Some(crate::pricing::ImageRequest {
                count: u64::from(edit.n.unwrap_or(1)),
                size: edit.size,
                quality: edit.quality,
            });
        }
        _ => {}
    }
    Ok(())
}

/// `POST /v1/audio/speech`, read for its price: the characters to speak.
#[derive(Debug, Clone, Deserialize)]
struct SpeechRequest {
    input: String,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    stream_format: Option<String>,
}

/// The image options of an `/images/edits` JSON body.
#[derive(Debug, Clone, Deserialize)]
struct ImageOptions {
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    quality: Option<String>,
}

impl ImagesRequest {
    /// The prompt must be present; `n` within OpenAI's range.
    pub fn validate(&self) -> Result<RequestFacts, GatewayError> {
        if self.prompt.trim().is_empty() {
            return Err(GatewayError::invalid(
                "'prompt' must not be empty.",
                Some("prompt".to_owned()),
            ));
        }
        if let Some(model) = &self.model {
            check_model(model)?;
        }
        check_range("n", self.n, 1, 10)?;
        // OpenAI's default image model when none is named.
        let model = self.model.clone().unwrap_or_else(|| "dall-e-2".to_owned());
        Ok(RequestFacts {
            model: Some(model),
            stream: self.stream.unwrap_or(false),
            include_usage: false,
            user: check_user(self.user.as_ref())?,
            images: Some(crate::pricing::ImageRequest {
                count: u64::from(self.n.unwrap_or(1)),
                size: self.size.clone(),
                quality: self.quality.clone(),
            }),
            audio: None,
            deterministic: false,
            tool_models: Vec::new(),
        })
    }
}

impl ResponsesRequest {
    /// The model must be named; a tool's `model`, when present, must be a string.
    pub fn validate(&self) -> Result<RequestFacts, GatewayError> {
        check_model(&self.model)?;
        let mut tool_models = Vec::new();
        for tool in self.tools.iter().flatten() {
            match &tool.model {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(model)) => {
                    check_model(model)?;
                    tool_models.push(model.clone());
                }
                Some(_) => {
                    return Err(GatewayError::invalid(
                        "A tool's 'model' must be a string.",
                        Some("tools".to_owned()),
                    ));
                }
            }
        }
        Ok(RequestFacts {
            model: Some(self.model.clone()),
            stream: self.stream.unwrap_or(false),
            include_usage: false,
            user: check_user(self.user.as_ref())?,
            images: None,
            audio: None,
            deterministic: false,
            tool_models,
        })
    }
}

impl PassthroughRequest {
    /// A `model` that is present must be a string; `stream: true` is relayed as SSE.
    pub fn validate(&self) -> Result<RequestFacts, GatewayError> {
        let model = match &self.model {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(m)) => {
                check_model(m)?;
                Some(m.clone())
            }
            Some(_) => {
                return Err(GatewayError::invalid(
                    "'model' must be a string.",
                    Some("model".to_owned()),
                ));
            }
        };
        let stream = matches!(self.stream, Some(serde_json::Value::Bool(true)));
        let user = match &self.user {
            Some(serde_json::Value::String(user)) => check_user(Some(user))?,
            _ => None,
        };
        Ok(RequestFacts {
            model,
            stream,
            include_usage: false,
            user,
            images: None,
            audio: None,
            deterministic: false,
            tool_models: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::decode;

    fn chat(body: &str) -> Result<RequestFacts, GatewayError> {
        decode::<ChatRequest>(body.as_bytes())?.validate()
    }

    fn param(result: Result<RequestFacts, GatewayError>) -> Option<String> {
        match result {
            Err(GatewayError::InvalidRequest { param, .. }) => param,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn chat_checks_name_the_field() {
        assert_eq!(
            param(chat(r#"{"model":"m","messages":[]}"#)).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param(chat(r#"{"model":"","messages":[{"role":"user"}]}"#)).as_deref(),
            Some("model")
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user"}],"temperature":3}"#
            ))
            .as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param(chat(r#"{"model":"m","messages":[{"role":"user"}],"n":0}"#)).as_deref(),
            Some("n")
        );
        assert_eq!(
            param(chat(r#"{"model":"m","messages":[{"content":"x"}]}"#)).as_deref(),
            Some("messages[0]")
        );
    }

    #[test]
    fn chat_facts_follow_the_body() {
        let facts = chat(r#"{"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true},"new_param":1}"#).unwrap();
        assert!(facts.stream && facts.include_usage);
        assert_eq!(facts.model.as_deref(), Some("m"));
    }

    #[test]
    fn embeddings_input_shapes() {
        let ok = |b: &str| {
            decode::<EmbeddingsRequest>(b.as_bytes())
                .unwrap()
                .validate()
                .is_ok()
        };
        assert!(ok(r#"{"model":"e","input":"hi"}"#));
        assert!(ok(r#"{"model":"e","input":["a","b"]}"#));
        assert!(ok(r#"{"model":"e","input":[[1,2],[3]]}"#));
        assert!(!ok(r#"{"model":"e","input":""}"#));
        assert!(!ok(r#"{"model":"e","input":[{"a":1}]}"#));
        assert!(!ok(r#"{"model":"e","input":"a","encoding_format":"hex"}"#));
    }
}
