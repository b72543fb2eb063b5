//! `[cache]`: which answers the response cache keeps, for how long, and how much memory.

use std::time::Duration;

use super::source::Sources;

/// When a chat completion may be answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatCachePolicy {
    /// Only requests that ask for a deterministic answer (`temperature: 0`).
    Deterministic,
    /// Every non-streaming chat request.
    Always,
    Off,
}

/// The response cache's policy and size.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `cache.chat`: `deterministic` (default), `always` or `off`.
    pub chat: ChatCachePolicy,
    /// `cache.embeddings`: `on` (default) or `off`.
    pub embeddings: bool,
    /// `cache.max_bytes`: the in-memory engine's bound on stored bodies and keys.
    pub max_bytes: u64,
    /// `cache.max_entry_bytes`: larger answers (big embeddings batches) are not stored.
    pub max_entry_bytes: usize,
    /// `AI_CACHE_TTL` (seconds): how long an answer stays.
    pub ttl: Duration,
}

impl CacheConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let chat = match s
            .get("cache.chat", None, "deterministic".to_owned())
            .as_str()
        {
            "deterministic" => ChatCachePolicy::Deterministic,
            "always" => ChatCachePolicy::Always,
            "off" => ChatCachePolicy::Off,
            other => {
                s.invalid(
                    "cache.chat",
                    None,
                    format!("expected deterministic, always or off, got {other:?}"),
                );
                ChatCachePolicy::Deterministic
            }
        };
        // `"on"`/`"off"` as DESIGN writes it, or a TOML boolean.
        let embeddings = match s.raw("cache.embeddings") {
            None => true,
            Some(toml::Value::Boolean(on)) => on,
            Some(toml::Value::String(text)) if text == "on" => true,
            Some(toml::Value::String(text)) if text == "off" => false,
            Some(other) => {
                s.invalid_in_file(
                    "cache.embeddings",
                    format!("expected on or off, got {other}"),
                );
                true
            }
        };
        let max_bytes = s.get("cache.max_bytes", None, 268_435_456u64);
        let max_entry_bytes = s.get("cache.max_entry_bytes", None, 1_048_576usize);
        let ttl_seconds = s.get("cache.ttl_seconds", Some("AI_CACHE_TTL"), 3600u64);
        if ttl_seconds == 0 || ttl_seconds > 30 * 86_400 {
            s.invalid(
                "cache.ttl_seconds",
                Some("AI_CACHE_TTL"),
                "must be from 1 to 2592000 seconds (30 days)",
            );
        }
        Self {
            chat,
            embeddings,
            max_bytes,
            max_entry_bytes,
            ttl: Duration::from_secs(ttl_seconds.max(1)),
        }
    }
}
