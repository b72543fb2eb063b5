//! `[content]`: content rules, every one off unless named here.

use super::source::Sources;

/// A redaction detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    Email,
    Phone,
    /// Payment card numbers that pass the Luhn check.
    Card,
    /// Strings shaped like API keys and tokens (`sk-…`, `AKIA…`, `ghp_…`, `xox…-`).
    ApiKey,
}

impl Detector {
    /// The name used in config, in `[REDACTED:name]` and in the record's rules.
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Card => "card",
            Self::ApiKey => "api_key",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Email, Self::Phone, Self::Card, Self::ApiKey]
            .into_iter()
            .find(|d| d.name() == text)
    }
}

/// What the content stage checks.
#[derive(Debug, Clone, Default)]
pub struct ContentConfig {
    /// Regexes; a prompt matching any is refused (400 `content_policy_violation`).
    pub deny: Vec<String>,
    /// Detectors whose matches are replaced by `[REDACTED:kind]` before forwarding.
    pub redact: Vec<Detector>,
    /// Longest prompt text allowed, in characters; 0 = no limit.
    pub max_prompt_chars: usize,
    /// Ask the upstream's `/v1/moderations` first and refuse flagged input.
    pub moderation: bool,
}

impl ContentConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let deny = string_list(s, "content.deny");
        for (index, pattern) in deny.iter().enumerate() {
            if let Err(error) = regex::Regex::new(pattern) {
                let first_line = error.to_string();
                let first_line = first_line.lines().last().unwrap_or("invalid").trim();
                s.invalid_in_file(
                    &format!("content.deny[{index}]"),
                    format!("not a valid regex: {first_line}"),
                );
            }
        }
        let mut redact = Vec::new();
        for name in string_list(s, "content.redact") {
            match Detector::parse(&name) {
                Some(detector) if !redact.contains(&detector) => redact.push(detector),
                Some(_) => {}
                None => s.invalid_in_file(
                    "content.redact",
                    format!("unknown detector {name:?}; expected email, phone, card or api_key"),
                ),
            }
        }
        Self {
            deny,
            redact,
            max_prompt_chars: s.get("content.max_prompt_chars", None, 0usize),
            moderation: s.get("content.moderation", None, false),
        }
    }
}

fn string_list(s: &mut Sources<'_>, path: &str) -> Vec<String> {
    match s.raw(path) {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => {
            let strings: Vec<String> = items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect();
            if strings.len() != items.len() {
                s.invalid_in_file(path, "must be a list of strings");
            }
            strings
        }
        Some(_) => {
            s.invalid_in_file(path, "must be a list of strings");
            Vec::new()
        }
    }
}
