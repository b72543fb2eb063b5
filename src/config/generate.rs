//! `[generate]`: defaults of the seeds' simple prompt API, `POST /api/ai/generate`.

use super::source::Sources;

/// What `/api/ai/generate` sends when the caller leaves a field out.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Model used when the request names none.
    pub default_model: String,
    /// `max_tokens` when `maxTokens` is absent (the seeds' 1000).
    pub default_max_tokens: u32,
    /// `temperature` when absent (the seeds' 0.1; an explicit 0 stays 0).
    pub default_temperature: f64,
}

impl GenerateConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let default_model = s.get("generate.default_model", None, "gpt-4o-mini".to_owned());
        if default_model.trim().is_empty() {
            s.invalid("generate.default_model", None, "must not be empty");
        }
        let default_max_tokens = s.get("generate.default_max_tokens", None, 1000u32);
        if !(1..=4000).contains(&default_max_tokens) {
            s.invalid(
                "generate.default_max_tokens",
                None,
                "expected 1 to 4000, as the route accepts",
            );
        }
        let default_temperature = s.get("generate.default_temperature", None, 0.1f64);
        if !(0.0..=2.0).contains(&default_temperature) {
            s.invalid("generate.default_temperature", None, "expected 0 to 2");
        }
        Self {
            default_model,
            default_max_tokens,
            default_temperature,
        }
    }
}
