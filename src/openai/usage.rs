//! Token usage as the upstream reports it, normalised across routes.
//!
//! Chat and embeddings say `prompt_tokens`/`completion_tokens`; the Responses API says
//! `input_tokens`/`output_tokens`. Both carry cached and reasoning details. Later stages price
//! each class separately.

use serde::{Deserialize, Serialize};

/// Tokens by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Part of `prompt_tokens` served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Part of `completion_tokens` spent on hidden reasoning.
    pub reasoning_tokens: u64,
    /// Part of `prompt_tokens` that were images (GPT image models price them apart).
    pub image_input_tokens: u64,
    /// Part of `prompt_tokens` that were audio (audio models price them apart).
    pub audio_input_tokens: u64,
    /// Part of `completion_tokens` that were audio.
    pub audio_output_tokens: u64,
    /// Parts of `cached_tokens` that were audio and images, where the answer splits its cached
    /// tokens by class (Realtime's `cached_tokens_details`); then `audio_input_tokens` and
    /// `image_input_tokens` count only the uncached ones. Records do not keep them (the cost
    /// priced from them is kept), so they are not part of a record's answer either.
    #[serde(skip)]
    pub cached_audio_tokens: u64,
    #[serde(skip)]
    pub cached_image_tokens: u64,
    /// Input audio billed by its length (`whisper-1`: `usage.type = "duration"`), milliseconds.
    pub audio_millis: u64,
}

impl Usage {
    /// Prompt plus completion.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
    #[serde(default)]
    image_tokens: Option<u64>,
    #[serde(default)]
    audio_tokens: Option<u64>,
    /// Realtime: the cached tokens by class (`text_tokens`, `audio_tokens`, `image_tokens`).
    #[serde(default)]
    cached_tokens_details: Option<CachedDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct CachedDetails {
    #[serde(default)]
    audio_tokens: Option<u64>,
    #[serde(default)]
    image_tokens: Option<u64>,
}

/// The `usage` object in any of OpenAI's spellings.
#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    /// `input_token_details` (singular) is the transcription routes' spelling.
    #[serde(default, alias = "input_tokens_details", alias = "input_token_details")]
    prompt_tokens_details: Option<Details>,
    /// `output_token_details` (singular) is Realtime's spelling.
    #[serde(
        default,
        alias = "output_tokens_details",
        alias = "output_token_details"
    )]
    completion_tokens_details: Option<Details>,
    /// Seconds of input audio, when the usage is of `type: "duration"`.
    #[serde(default)]
    seconds: Option<f64>,
}

impl From<WireUsage> for Usage {
    fn from(wire: WireUsage) -> Self {
        let input = |read: fn(&Details) -> Option<u64>| {
            wire.prompt_tokens_details
                .as_ref()
                .and_then(read)
                .unwrap_or(0)
        };
        let output = |read: fn(&Details) -> Option<u64>| {
            wire.completion_tokens_details
                .as_ref()
                .and_then(read)
                .unwrap_or(0)
        };
        // Realtime counts its cached audio and images inside `audio_tokens` and
        // `image_tokens`; the uncached ones are what is left.
        let cached = wire
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens_details.as_ref());
        let cached_audio = cached.and_then(|c| c.audio_tokens).unwrap_or(0);
        let cached_image = cached.and_then(|c| c.image_tokens).unwrap_or(0);
        Self {
            prompt_tokens: wire.prompt_tokens.unwrap_or(0),
            completion_tokens: wire.completion_tokens.unwrap_or(0),
            cached_tokens: input(|d| d.cached_tokens),
            reasoning_tokens: output(|d| d.reasoning_tokens),
            image_input_tokens: input(|d| d.image_tokens).saturating_sub(cached_image),
            audio_input_tokens: input(|d| d.audio_tokens).saturating_sub(cached_audio),
            audio_output_tokens: output(|d| d.audio_tokens),
            cached_audio_tokens: cached_audio,
            cached_image_tokens: cached_image,
            audio_millis: wire.seconds.map_or(0, seconds_to_millis),
        }
    }
}

/// Seconds (a JSON number) to whole milliseconds, rounded up: a negative or non-finite value
/// is 0, a huge one saturates.
fn seconds_to_millis(seconds: f64) -> u64 {
    if !seconds.is_finite() || seconds <= 0.0 {
        return 0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "positive and finite; `as` saturates at u64::MAX"
    )]
    let millis = (seconds * 1000.0).ceil() as u64;
    millis
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    model: Option<String>,
    /// The processing tier that served the answer (`default`, `flex`, `priority`, ...).
    #[serde(default)]
    service_tier: Option<String>,
    #[serde(default)]
    data: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// A Responses API stream event carries the response, whose `usage` is the total.
    #[serde(default)]
    response: Option<Box<WithUsage>>,
}

/// The usage in a JSON body (a plain response or one stream event), if it has one.
pub fn from_json(body: &[u8]) -> Option<Usage> {
    summarize(body).usage
}

/// What accounting reads from a response body: the model that answered, its usage, and how
/// many items `data` holds (images generated).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseSummary {
    pub model: Option<String>,
    pub service_tier: Option<String>,
    pub usage: Option<Usage>,
    pub data_items: Option<u64>,
}

/// Reads a response body's [`ResponseSummary`]; an unreadable body gives an empty one.
pub fn summarize(body: &[u8]) -> ResponseSummary {
    let Ok(parsed) = serde_json::from_slice::<WithUsage>(body) else {
        return ResponseSummary::default();
    };
    let (usage, model, service_tier) = match parsed.response {
        Some(response) if parsed.usage.is_none() => {
            (response.usage, response.model, response.service_tier)
        }
        _ => (parsed.usage, parsed.model, parsed.service_tier),
    };
    ResponseSummary {
        model,
        service_tier,
        usage: usage.map(Usage::from),
        data_items: parsed.data.map(|items| items.len() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chat_and_responses_spellings() {
        let chat = br#"{"usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;
        assert_eq!(
            from_json(chat),
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 4,
                reasoning_tokens: 2,
                ..Usage::default()
            })
        );
        let responses = br#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":3}}}"#;
        assert_eq!(from_json(responses).map(|u| u.total_tokens()), Some(10));
        assert_eq!(from_json(br#"{"usage":null}"#), None);
    }

    #[test]
    fn reads_audio_classes_and_durations() {
        let chat = br#"{"usage":{"prompt_tokens":30,"completion_tokens":50,"prompt_tokens_details":{"audio_tokens":20},"completion_tokens_details":{"audio_tokens":40}}}"#;
        let usage = from_json(chat).unwrap();
        assert_eq!(
            (usage.audio_input_tokens, usage.audio_output_tokens),
            (20, 40)
        );
        let transcription = br#"{"text":"hi","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"text_tokens":4,"audio_tokens":10},"output_tokens":3,"total_tokens":17}}"#;
        let usage = from_json(transcription).unwrap();
        assert_eq!((usage.prompt_tokens, usage.audio_input_tokens), (14, 10));
        let whisper = br#"{"text":"hi","usage":{"type":"duration","seconds":8.4700002}}"#;
        assert_eq!(from_json(whisper).unwrap().audio_millis, 8_471);
        let hostile = br#"{"usage":{"type":"duration","seconds":-3}}"#;
        assert_eq!(from_json(hostile).unwrap().audio_millis, 0);
        let speech = br#"{"type":"speech.audio.done","usage":{"input_tokens":14,"output_tokens":101,"total_tokens":115}}"#;
        assert_eq!(from_json(speech).unwrap().total_tokens(), 115);
    }
}
