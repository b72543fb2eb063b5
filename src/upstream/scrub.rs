//! Upstream keys never come back to a caller, even when an upstream quotes one.
//!
//! OpenAI's own errors mask keys, but an OpenAI-compatible server or a proxy in front of one
//! may echo the `Authorization` it received into an error body or a header. Every relayed
//! upstream error body and every header value copied from an upstream answer passes through
//! [`KeyScrubber::scrub`], which replaces each configured upstream key with `[REDACTED]`.

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};

/// What replaces a key.
const REDACTED: &[u8] = b"[REDACTED]";

/// Every configured upstream key, to be cut out of what upstreams send back.
#[derive(Debug, Default)]
pub struct KeyScrubber {
    keys: Vec<SecretString>,
    shortest: usize,
}

impl KeyScrubber {
    /// A scrubber for `keys`; empty keys are ignored.
    pub fn new(keys: impl IntoIterator<Item = SecretString>) -> Self {
        let keys: Vec<SecretString> = keys
            .into_iter()
            .filter(|k| !k.expose_secret().is_empty())
            .collect();
        let shortest = keys
            .iter()
            .map(|k| k.expose_secret().len())
            .min()
            .unwrap_or(usize::MAX);
        Self { keys, shortest }
    }

    /// `bytes` with every key replaced; the same allocation when there is none.
    pub fn scrub(&self, bytes: Bytes) -> Bytes {
        if bytes.len() < self.shortest || !self.keys.iter().any(|k| contains(&bytes, k)) {
            return bytes;
        }
        let mut out = bytes.to_vec();
        for key in &self.keys {
            out = replace_all(&out, key.expose_secret().as_bytes());
        }
        Bytes::from(out)
    }

    /// Whether `value` holds a key (a header value to drop rather than relay).
    pub fn leaks(&self, value: &[u8]) -> bool {
        value.len() >= self.shortest && self.keys.iter().any(|k| contains(value, k))
    }
}

fn contains(haystack: &[u8], key: &SecretString) -> bool {
    let needle = key.expose_secret().as_bytes();
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn replace_all(haystack: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut index = 0;
    while index < haystack.len() {
        if haystack[index..].starts_with(needle) {
            out.extend_from_slice(REDACTED);
            index += needle.len();
        } else {
            out.push(haystack[index]);
            index += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_cut_out_wherever_it_appears() {
        let scrubber = KeyScrubber::new([
            SecretString::from("sk-main-0123456789"),
            SecretString::from("sk-backup-abcdef"),
            SecretString::from(""),
        ]);
        let body = Bytes::from_static(
            br#"{"error":{"message":"bad key sk-main-0123456789 (also sk-backup-abcdef, sk-main-0123456789)"}}"#,
        );
        let scrubbed = scrubber.scrub(body);
        let text = std::str::from_utf8(&scrubbed).unwrap();
        assert!(
            !text.contains("sk-main") && !text.contains("sk-backup"),
            "{text}"
        );
        assert_eq!(text.matches("[REDACTED]").count(), 3, "{text}");
        assert!(scrubber.leaks(b"Bearer sk-backup-abcdef"));
        assert!(!scrubber.leaks(b"application/json"));
        let clean = Bytes::from_static(b"{\"error\":{\"message\":\"nothing here\"}}");
        assert_eq!(scrubber.scrub(clean.clone()), clean);
    }
}
