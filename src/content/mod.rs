//! Content rules: deny regexes, redaction detectors and a prompt-length cap, applied to the
//! prompt text of a request (moderation, which needs the upstream, is in the pipeline stage).
//!
//! Only the fields that carry prompt text are read ([`prompt`]): chat messages' `content`
//! (strings and text parts), embeddings' `input`, responses' `instructions` and `input`,
//! images' `prompt`. The body is rewritten only when a redaction fired. What fired is named
//! (`deny:0`, `redact:email`, `max_prompt_chars`): never the matched text.

mod detectors;
pub mod prompt;

use regex::Regex;

use crate::config::{ContentConfig, Detector};
use crate::error::GatewayError;
use crate::openai::ModelRoute;

/// The compiled rules.
pub struct ContentRules {
    deny: Vec<Regex>,
    redact: Vec<(Detector, detectors::Matcher)>,
    max_prompt_chars: usize,
    /// Whether the pipeline asks the upstream's moderation endpoint.
    pub moderation: bool,
}

/// What the rules did to a request that may go on.
#[derive(Debug, Default)]
pub struct Checked {
    /// Whether a redaction changed the body (which must then be sent as rewritten).
    pub redacted: bool,
    /// The prompt text after redaction, when moderation is on (what it is asked about).
    pub texts: Vec<String>,
    /// The rules that fired.
    pub fired: Vec<String>,
}

/// A refusal: which rule, and the error for the caller.
#[derive(Debug)]
pub struct Refused {
    pub fired: Vec<String>,
    pub error: GatewayError,
}

impl ContentRules {
    /// Compiles `config` (its regexes were checked when the configuration loaded).
    pub fn new(config: &ContentConfig) -> Self {
        Self {
            deny: config
                .deny
                .iter()
                .filter_map(|pattern| Regex::new(pattern).ok())
                .collect(),
            // A fixed order, whatever the config's: keys and cards before phone numbers, whose
            // pattern would otherwise take part of a card number.
            redact: detectors::ORDER
                .into_iter()
                .filter(|detector| config.redact.contains(detector))
                .map(|detector| (detector, detectors::Matcher::new(detector)))
                .collect(),
            max_prompt_chars: config.max_prompt_chars,
            moderation: config.moderation,
        }
    }

    /// Whether any rule is on; when none is, the stage costs nothing.
    pub fn enabled(&self) -> bool {
        !self.deny.is_empty()
            || !self.redact.is_empty()
            || self.max_prompt_chars > 0
            || self.moderation
    }

    /// Applies the length cap, the deny list and the redactions, in that order, to the JSON
    /// `body` of a `route` request; redactions change it in place.
    pub fn check(
        &self,
        route: ModelRoute,
        body: &mut serde_json::Value,
    ) -> Result<Checked, Refused> {
        let mut texts = prompt::texts_mut(route, body);
        if self.max_prompt_chars > 0 {
            let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
            if chars > self.max_prompt_chars {
                return Err(Refused {
                    fired: vec!["max_prompt_chars".to_owned()],
                    error: GatewayError::ContentPolicy {
                        message: format!(
                            "The prompt is {chars} characters long; this gateway accepts at most {}.",
                            self.max_prompt_chars
                        ),
                        param: Some(prompt::field(route).to_owned()),
                    },
                });
            }
        }
        for (index, rule) in self.deny.iter().enumerate() {
            if texts.iter().any(|text| rule.is_match(text)) {
                return Err(Refused {
                    fired: vec![format!("deny:{index}")],
                    error: GatewayError::ContentPolicy {
                        message: "The request was refused by this gateway's content policy."
                            .to_owned(),
                        param: Some(prompt::field(route).to_owned()),
                    },
                });
            }
        }
        let mut fired = Vec::new();
        for (detector, matcher) in &self.redact {
            let mut hit = false;
            for text in texts.iter_mut() {
                if let Some(redacted) = matcher.redact(text) {
                    **text = redacted;
                    hit = true;
                }
            }
            if hit {
                fired.push(format!("redact:{}", detector.name()));
            }
        }
        // Kept only for moderation, which asks about them once the cache has missed.
        let texts: Vec<String> = if self.moderation {
            texts.into_iter().map(|t| t.clone()).collect()
        } else {
            Vec::new()
        };
        Ok(Checked {
            redacted: !fired.is_empty(),
            texts,
            fired,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml: &str) -> ContentRules {
        let env: crate::config::Env = [("OPENAI_API_KEY".to_owned(), "k".to_owned())]
            .into_iter()
            .collect();
        let config = crate::config::Config::from_toml_str("t", toml, &env).unwrap();
        ContentRules::new(&config.content)
    }

    fn chat(content: &str) -> serde_json::Value {
        serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": content}],
        })
    }

    #[test]
    fn redaction_rewrites_only_prompt_text_and_names_the_detectors() {
        let rules = rules("[content]\nredact = [\"email\", \"card\", \"api_key\", \"phone\"]\n");
        let mut body = chat(
            "mail ann@example.com, card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnop1234, call +44 20 7946 0958",
        );
        let checked = rules.check(ModelRoute::Chat, &mut body).unwrap();
        assert!(checked.redacted);
        assert_eq!(
            body["messages"][0]["content"],
            "mail [REDACTED:email], card [REDACTED:card], key [REDACTED:api_key], call [REDACTED:phone]"
        );
        assert_eq!(body["model"], "m", "other fields are untouched");
        assert_eq!(
            checked.fired,
            [
                "redact:api_key",
                "redact:card",
                "redact:email",
                "redact:phone"
            ]
        );
    }

    #[test]
    fn a_clean_prompt_is_forwarded_as_sent() {
        let rules = rules("[content]\nredact = [\"email\", \"card\"]\n");
        // 16 digits that fail the Luhn check are not a card.
        let checked = rules
            .check(
                ModelRoute::Chat,
                &mut chat("order 1234 5678 9012 3456 shipped"),
            )
            .unwrap();
        assert!(!checked.redacted);
        assert!(checked.fired.is_empty());
    }

    #[test]
    fn deny_and_length_refuse_with_the_rule_named() {
        let rules = rules(
            "[content]\ndeny = [\"(?i)secret project\", \"forbidden\"]\nmax_prompt_chars = 40\n",
        );
        let refused = rules
            .check(
                ModelRoute::Chat,
                &mut chat("tell me about the Secret Project"),
            )
            .unwrap_err();
        assert_eq!(refused.fired, ["deny:0"]);
        assert_eq!(refused.error.status(), 400);
        let refused = rules
            .check(ModelRoute::Chat, &mut chat(&"x".repeat(41)))
            .unwrap_err();
        assert_eq!(refused.fired, ["max_prompt_chars"]);
        assert!(rules.check(ModelRoute::Chat, &mut chat("fine")).is_ok());
    }

    #[test]
    fn bad_rules_stop_the_configuration() {
        let env: crate::config::Env = [("OPENAI_API_KEY".to_owned(), "k".to_owned())]
            .into_iter()
            .collect();
        let error = crate::config::Config::from_toml_str(
            "t",
            "[content]\ndeny = [\"(unclosed\"]\nredact = [\"ssn\"]\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("content.deny[0]"), "{error}");
        assert!(error.contains("\"ssn\""), "{error}");
    }
}
