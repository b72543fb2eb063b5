//! `[[upstreams]]` and `[models.ALIAS]`: more OpenAI-compatible providers, and public model
//! names that map to a target on an upstream with ordered fallbacks.
//!
//! ```toml
//! [[upstreams]]
//! name = "backup"
//! base_url = "http://10.0.0.7:8000/v1"
//! api_key_env = "BACKUP_API_KEY"      # optional: a local server may need no key
//! models = ["gpt-4o-mini", "gpt-4o"]  # models sent here when no alias says otherwise
//!
//! [models.fast]
//! target = "gpt-4o-mini"
//! upstream = "default"                # optional; "default" is OPENAI_BASE_URL
//! fallbacks = [{ target = "gpt-4o-mini", upstream = "backup" }]
//! ```

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use super::source::Sources;

/// The name of the upstream at `OPENAI_BASE_URL`.
pub const DEFAULT_UPSTREAM: &str = "default";

/// One extra provider.
#[derive(Debug, Clone)]
pub struct UpstreamEntry {
    pub name: String,
    /// Ends in `/` so joining keeps its path.
    pub base_url: Url,
    /// Read from the environment variable `api_key_env` names.
    pub api_key: Option<SecretString>,
    /// Models sent to this upstream when the request names them directly.
    pub models: Vec<String>,
}

/// Where an alias sends a request: a model name on an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    /// The model name sent upstream.
    pub target: String,
    /// An `[[upstreams]]` name, or `default`.
    #[serde(default = "default_upstream")]
    pub upstream: String,
}

fn default_upstream() -> String {
    DEFAULT_UPSTREAM.to_owned()
}

/// `[models.ALIAS]`: the primary target, then the fallbacks in order.
#[derive(Debug, Clone)]
pub struct ModelAlias {
    pub targets: Vec<AliasTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    name: String,
    base_url: String,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    models: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasFile {
    target: String,
    #[serde(default = "default_upstream")]
    upstream: String,
    #[serde(default)]
    fallbacks: Vec<AliasTarget>,
}

/// Reads `[[upstreams]]` and `[models]`, checking that every name an alias uses exists.
pub fn read(s: &mut Sources<'_>) -> (Vec<UpstreamEntry>, BTreeMap<String, ModelAlias>) {
    let upstreams = read_upstreams(s);
    let mut aliases = BTreeMap::new();
    let Some(value) = s.raw("models") else {
        return (upstreams, aliases);
    };
    let Some(table) = value.as_table() else {
        s.invalid_in_file("models", "must be a table of aliases ([models.NAME])");
        return (upstreams, aliases);
    };
    for (alias, entry) in table {
        let path = format!("models.{alias}");
        let parsed: AliasFile = match entry.clone().try_into() {
            Ok(parsed) => parsed,
            Err(error) => {
                s.invalid_in_file(&path, error.message().trim());
                continue;
            }
        };
        let mut targets = vec![AliasTarget {
            target: parsed.target,
            upstream: parsed.upstream,
        }];
        targets.extend(parsed.fallbacks);
        for target in &targets {
            let known = target.upstream == DEFAULT_UPSTREAM
                || upstreams.iter().any(|u| u.name == target.upstream);
            if !known {
                s.invalid_in_file(
                    &path,
                    format!(
                        "upstream {:?} is not defined in [[upstreams]]",
                        target.upstream
                    ),
                );
            }
            if target.target.trim().is_empty() {
                s.invalid_in_file(&path, "a target model name must not be empty");
            }
        }
        aliases.insert(alias.clone(), ModelAlias { targets });
    }
    (upstreams, aliases)
}

fn read_upstreams(s: &mut Sources<'_>) -> Vec<UpstreamEntry> {
    let Some(value) = s.raw("upstreams") else {
        return Vec::new();
    };
    let Some(list) = value.as_array() else {
        s.invalid_in_file("upstreams", "must be an array of tables ([[upstreams]])");
        return Vec::new();
    };
    let mut entries: Vec<UpstreamEntry> = Vec::new();
    for (index, item) in list.iter().enumerate() {
        let path = format!("upstreams[{index}]");
        let parsed: UpstreamFile = match item.clone().try_into() {
            Ok(parsed) => parsed,
            Err(error) => {
                s.invalid_in_file(&path, error.message().trim());
                continue;
            }
        };
        if parsed.name == DEFAULT_UPSTREAM || parsed.name.trim().is_empty() {
            s.invalid_in_file(&path, "name must be set and must not be \"default\"");
            continue;
        }
        if entries.iter().any(|e| e.name == parsed.name) {
            s.invalid_in_file(&path, format!("name {:?} is used twice", parsed.name));
            continue;
        }
        let mut base_url = match Url::parse(&parsed.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => {
                s.invalid_in_file(&path, "base_url must be an http(s) URL");
                continue;
            }
        };
        if !base_url.username().is_empty() || base_url.password().is_some() {
            s.invalid_in_file(
                &path,
                "base_url must not carry credentials; use api_key_env",
            );
            continue;
        }
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        let api_key = match &parsed.api_key_env {
            Some(variable) => {
                let key: Option<SecretString> = s.optional_env(variable);
                if key.is_none() {
                    s.invalid_in_file(
                        &path,
                        format!("api_key_env names {variable}, which is not set"),
                    );
                }
                key
            }
            None => None,
        };
        entries.push(UpstreamEntry {
            name: parsed.name,
            base_url,
            api_key,
            models: parsed.models,
        });
    }
    entries
}
