//! Token usage as the upstream reports it, normalised across routes.
//!
//! Chat and embeddings say `prompt_tokens`/`completion_tokens`; the Responses API says
//! `input_tokens`/`output_tokens`. Both carry cached and reasoning details. Later stages price
//! each class separately.

use serde::{Deserialize, Serialize};

/// Tokens by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Part of `prompt_tokens` served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Part of `completion_tokens` spent on hidden reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Prompt plus completion.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// The `usage` object in any of OpenAI's spellings.
#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<Details>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<Details>,
}

impl From<WireUsage> for Usage {
    fn from(wire: WireUsage) -> Self {
        Self {
            prompt_tokens: wire.prompt_tokens.unwrap_or(0),
            completion_tokens: wire.completion_tokens.unwrap_or(0),
            cached_tokens: wire
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            reasoning_tokens: wire
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
    /// A Responses API stream event carries the response, whose `usage` is the total.
    #[serde(default)]
    response: Option<Box<WithUsage>>,
}

/// The usage in a JSON body (a plain response or one stream event), if it has one.
pub fn from_json(body: &[u8]) -> Option<Usage> {
    let parsed: WithUsage = serde_json::from_slice(body).ok()?;
    parsed
        .usage
        .or_else(|| parsed.response.and_then(|r| r.usage))
        .map(Usage::from)
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
                reasoning_tokens: 2
            })
        );
        let responses = br#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":3}}}"#;
        assert_eq!(from_json(responses).map(|u| u.total_tokens()), Some(10));
        assert_eq!(from_json(br#"{"usage":null}"#), None);
    }
}
