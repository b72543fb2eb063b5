//! Gateway keys: generation, hashing, and the stored description of a key.
//!
//! A key is `tg-` followed by 43 base62 characters drawn uniformly from the OS RNG (256 bits,
//! the entropy of 32 random bytes). Only its SHA-256 hash and an 8-character prefix are stored:
//! the hash is what lookups match on (so no secret is ever compared byte by byte in our code),
//! the prefix lets people tell keys apart. The secret is shown once, at creation.

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::BudgetSpec;
use crate::limiter::rules::{Rule, RuleSpec};

/// Every gateway key starts with this.
pub const KEY_PREFIX: &str = "tg-";
const SECRET_CHARS: usize = 43;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Stable identifier (`key_` + time-ordered UUID), used in records and the admin API.
    pub id: String,
    /// A human name for the key.
    pub name: String,
    /// The 8 characters after `tg-`, so people can recognise a key without its secret.
    pub prefix: String,
    /// Who the key belongs to (free text: a team, a service).
    pub owner: Option<String>,
    /// Models this key may use; empty means every model.
    pub models: Vec<String>,
    /// The key's own limit rules; they replace the defaults of the same scope and route.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Free-form JSON object for the operator.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Route families (`batches`, `fine_tuning`, ...) this key may use although their model
    /// or cost cannot be checked before forwarding; matters only for a key with a model list
    /// or a budget (`pipeline::authorize`).
    #[serde(default)]
    pub routes: Vec<String>,
    /// The key's budgets: for the key as a whole, and for each of its end users.
    #[serde(default)]
    pub budgets: KeyBudgets,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// After this instant the key no longer authenticates.
    pub expires_at_ms: Option<i64>,
    /// Set when revoked; a revoked key never authenticates again.
    pub revoked_at_ms: Option<i64>,
}

impl ApiKey {
    /// Whether the key may authenticate at `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    /// Whether requests on this key count tokens before they are forwarded (it has a budget or
    /// a token rule of its own), so the tokenizer must be ready for them.
    pub fn counts_tokens(&self) -> bool {
        self.budgets.key.is_some()
            || self.budgets.user.is_some()
            || self
                .own_rules()
                .iter()
                .any(|rule| rule.unit == crate::limiter::rules::Unit::Tokens)
    }

    /// The key's own rules, validated (stored rules were validated when written; a rule that no
    /// longer validates is skipped, never applied half-read).
    pub fn own_rules(&self) -> Vec<Rule> {
        self.rules
            .iter()
            .filter_map(|spec| {
                spec.validate()
                    .inspect_err(|why| {
                        tracing::warn!(key.id = %self.id, %why, "a stored limit rule of this key is skipped");
                    })
                    .ok()
            })
            .collect()
    }
}

/// A key's spending limits (DESIGN "Money"); both optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBudgets {
    /// Spend of every request made with the key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::strict_json::option_object"
    )]
    pub key: Option<BudgetSpec>,
    /// Spend of each end user (`x-user-id` or the body's `user`) of the key, separately.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::strict_json::option_object"
    )]
    pub user: Option<BudgetSpec>,
}

impl KeyBudgets {
    /// Checks both budgets' ranges.
    pub fn validate(&self) -> Result<(), String> {
        [&self.key, &self.user]
            .into_iter()
            .flatten()
            .try_for_each(BudgetSpec::validate)
    }
}

/// What an operator asks for when creating a key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default, deserialize_with = "crate::strict_json::objects")]
    pub rules: Vec<RuleSpec>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default, deserialize_with = "crate::strict_json::object")]
    pub budgets: KeyBudgets,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default, deserialize_with = "crate::strict_json::option_i64")]
    pub expires_at_ms: Option<i64>,
}

/// Bounds on what an admin may store in a key: text is shown in the dashboard, the CLI and
/// logs, so it is short and free of control characters; lists and metadata are bounded.
pub mod bounds {
    /// Longest name or owner, in characters.
    pub const TEXT_CHARS: usize = 128;
    /// Most models in a key's list, and longest model name.
    pub const MODELS: usize = 1_000;
    pub const MODEL_CHARS: usize = 256;
    /// Most limit rules of a key.
    pub const RULES: usize = 100;
    /// Largest metadata object, as JSON, and most properties in it.
    pub const METADATA_BYTES: usize = 16 * 1024;
    pub const METADATA_PROPERTIES: usize = 64;
    /// Most route families a key may be allowed.
    pub const ROUTES: usize = 100;
    /// The latest expiry, Unix ms (the end of year 9999).
    pub const MAX_EXPIRES_AT_MS: i64 = 253_402_300_799_999;
}

/// Characters that must not appear in names shown to people: control characters and the
/// invisible ones that can disguise text (zero-width, bidirectional overrides, line and
/// paragraph separators, fillers, variation selectors, tags: Unicode's default-ignorable code
/// points). `admin/openapi.json` lists the same set.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{34f}'
                | '\u{61c}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

/// A field that failed its bounds: the field's name and why.
pub type Invalid = (&'static str, String);

fn check_text(param: &'static str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err((param, format!("'{param}' must not be empty.")));
    }
    if value.chars().count() > bounds::TEXT_CHARS || value.chars().any(is_unprintable) {
        return Err((
            param,
            format!(
                "'{param}' must be at most {} characters, without control or invisible characters.",
                bounds::TEXT_CHARS
            ),
        ));
    }
    Ok(())
}

fn check_fields(
    models: Option<&[String]>,
    rules: Option<&[RuleSpec]>,
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    budgets: Option<&KeyBudgets>,
    routes: Option<&[String]>,
    expires_at_ms: Option<i64>,
) -> Result<(), Invalid> {
    if let Some(models) = models {
        let bad = models.iter().any(|m| {
            m.trim().is_empty()
                || m.chars().count() > bounds::MODEL_CHARS
                || m.chars().any(is_unprintable)
        });
        if models.len() > bounds::MODELS || bad {
            return Err((
                "models",
                format!(
                    "'models' holds at most {} names of 1 to {} characters, without control or invisible characters.",
                    bounds::MODELS,
                    bounds::MODEL_CHARS
                ),
            ));
        }
    }
    if let Some(rules) = rules {
        if rules.len() > bounds::RULES {
            return Err(("rules", format!("at most {} rules.", bounds::RULES)));
        }
        for rule in rules {
            rule.validate_new().map_err(|e| ("rules", e.to_string()))?;
        }
    }
    if let Some(metadata) = metadata {
        let size = serde_json::to_vec(metadata).map_or(usize::MAX, |json| json.len());
        if size > bounds::METADATA_BYTES || metadata.len() > bounds::METADATA_PROPERTIES {
            return Err((
                "metadata",
                format!(
                    "'metadata' must be at most {} properties and {} bytes of JSON.",
                    bounds::METADATA_PROPERTIES,
                    bounds::METADATA_BYTES
                ),
            ));
        }
    }
    if let Some(budgets) = budgets {
        budgets.validate().map_err(|message| ("budgets", message))?;
    }
    if let Some(routes) = routes {
        if routes.len() > bounds::ROUTES {
            return Err((
                "routes",
                format!("at most {} route families.", bounds::ROUTES),
            ));
        }
        crate::openai::operations::check_families(routes).map_err(|message| ("routes", message))?;
    }
    if let Some(at) = expires_at_ms
        && !(0..=bounds::MAX_EXPIRES_AT_MS).contains(&at)
    {
        return Err((
            "expires_at_ms",
            format!(
                "'expires_at_ms' must be Unix milliseconds from 0 to {}.",
                bounds::MAX_EXPIRES_AT_MS
            ),
        ));
    }
    Ok(())
}

impl NewKey {
    /// Checks every field's bounds before the key is stored.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_text("name", &self.name)?;
        if let Some(owner) = &self.owner {
            check_text("owner", owner)?;
        }
        check_fields(
            Some(&self.models),
            Some(&self.rules),
            Some(&self.metadata),
            Some(&self.budgets),
            Some(&self.routes),
            self.expires_at_ms,
        )
    }
}

/// A change to a key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::strict_json::option_objects")]
    pub rules: Option<Vec<RuleSpec>>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Replaces both budgets (`{}` removes them).
    #[serde(default, deserialize_with = "crate::strict_json::option_object")]
    pub budgets: Option<KeyBudgets>,
    pub routes: Option<Vec<String>>,
    /// `Some(None)` (JSON `null`) removes the expiry.
    #[serde(default, deserialize_with = "crate::strict_json::present_i64")]
    pub expires_at_ms: Option<Option<i64>>,
}

impl KeyPatch {
    /// Checks the bounds of every field the patch sets.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(name) = &self.name {
            check_text("name", name)?;
        }
        check_fields(
            self.models.as_deref(),
            self.rules.as_deref(),
            self.metadata.as_ref(),
            self.budgets.as_ref(),
            self.routes.as_deref(),
            self.expires_at_ms.flatten(),
        )
    }

    /// Whether the patch would change nothing (the CLI refuses such an update).
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.models.is_none()
            && self.rules.is_none()
            && self.metadata.is_none()
            && self.budgets.is_none()
            && self.routes.is_none()
            && self.expires_at_ms.is_none()
    }

    /// Applies the patch to `key`.
    pub fn apply(&self, key: &mut ApiKey) {
        if let Some(name) = &self.name {
            key.name.clone_from(name);
        }
        if let Some(models) = &self.models {
            key.models.clone_from(models);
        }
        if let Some(rules) = &self.rules {
            key.rules.clone_from(rules);
        }
        if let Some(metadata) = &self.metadata {
            key.metadata.clone_from(metadata);
        }
        if let Some(budgets) = &self.budgets {
            key.budgets.clone_from(budgets);
        }
        if let Some(routes) = &self.routes {
            key.routes.clone_from(routes);
        }
        if let Some(expires_at_ms) = self.expires_at_ms {
            key.expires_at_ms = expires_at_ms;
        }
    }
}

/// A freshly generated key: the secret (shown once) and what is stored.
#[derive(Debug)]
pub struct IssuedKey {
    pub secret: String,
    pub hash: String,
    pub key: ApiKey,
}

/// Generates a key for `new` at `now_ms`.
pub fn issue(new: NewKey, now_ms: i64) -> IssuedKey {
    let mut rng = rand::rng();
    let body: String = (0..SECRET_CHARS)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect();
    let secret = format!("{KEY_PREFIX}{body}");
    let key = ApiKey {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name: new.name,
        prefix: body[..8].to_owned(),
        owner: new.owner,
        models: new.models,
        rules: new.rules,
        metadata: new.metadata,
        budgets: new.budgets,
        routes: new.routes,
        created_at_ms: now_ms,
        expires_at_ms: new.expires_at_ms,
        revoked_at_ms: None,
    };
    IssuedKey {
        hash: hash_secret(&secret),
        secret,
        key,
    }
}

/// The stored form of a secret: lowercase hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    hex
}

/// Whether `candidate` has the shape of a gateway key. Cheap; lets us refuse garbage before any
/// hashing or lookup.
pub fn looks_like_key(candidate: &str) -> bool {
    candidate.len() == KEY_PREFIX.len() + SECRET_CHARS
        && candidate.starts_with(KEY_PREFIX)
        && candidate[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
    )
    .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_have_the_documented_shape_and_differ() {
        let a = issue(
            NewKey {
                name: "a".into(),
                ..NewKey::default()
            },
            0,
        );
        let b = issue(
            NewKey {
                name: "b".into(),
                ..NewKey::default()
            },
            0,
        );
        assert!(looks_like_key(&a.secret), "{}", a.secret);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.key.prefix, a.secret[3..11]);
        assert_eq!(a.hash, hash_secret(&a.secret));
        assert_eq!(a.hash.len(), 64);
    }

    #[test]
    fn hash_matches_a_known_vector() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn expiry_and_revocation_end_a_key() {
        let mut key = issue(
            NewKey {
                name: "k".into(),
                expires_at_ms: Some(10),
                ..NewKey::default()
            },
            0,
        )
        .key;
        assert!(key.is_active(9));
        assert!(!key.is_active(10));
        key.expires_at_ms = None;
        key.revoked_at_ms = Some(5);
        assert!(!key.is_active(1));
    }
}
