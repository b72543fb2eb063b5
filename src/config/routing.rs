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
//! [[upstreams]]
//! name = "azure-east"
//! kind = "azure"                      # Azure OpenAI: api-key header, api-version, deployments
//! base_url = "https://example-east.openai.azure.com/openai"
//! api_key_env = "AZURE_EAST_KEY"
//! api_version = "2024-10-21"
//! deployments = { "gpt-4o-mini" = "prod-4o-mini" }   # model -> deployment (default: the same name)
//!
//! [models.fast]
//! target = "gpt-4o-mini"
//! upstream = "default"                # optional; "default" is OPENAI_BASE_URL
//! fallbacks = [{ target = "gpt-4o-mini", upstream = "backup" }]
//!
//! [models.gpt-4o-mini]                # a pool: one model over several deployments
//! strategy = "weighted"               # weighted | least_busy | headroom
//! cooldown_ms = 5000                  # a failure without Retry-After
//! allowed_fails = 2                   # 5xx, 401/403 in a minute before a deployment cools
//! pool = [
//!   { upstream = "default", weight = 3 },
//!   { upstream = "azure-east", weight = 1, requests_per_minute = 600 },
//! ]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

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
    /// How it is spoken to: OpenAI's API, or Azure OpenAI's.
    pub kind: UpstreamKind,
}

/// The API an upstream speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKind {
    /// OpenAI's API or a compatible one: `Authorization: Bearer`, paths as OpenAI's.
    OpenAi,
    /// Azure OpenAI: the `api-key` header, `api-version` in the query, and the model as a
    /// deployment in the path.
    Azure(AzureSettings),
}

/// What an Azure OpenAI resource needs besides its URL and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSettings {
    /// The `api-version` every call carries.
    pub api_version: String,
    /// Model name → deployment name; a model not listed is its own deployment name.
    pub deployments: BTreeMap<String, String>,
}

/// The `api-version` used when an Azure upstream names none (the newest GA version when this
/// was written).
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// How a pool picks the deployment that serves a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolStrategy {
    /// At random, in proportion to the weights.
    #[default]
    Weighted,
    /// The deployment with the fewest calls in flight for its weight.
    LeastBusy,
    /// Weights scaled by what each deployment's `x-ratelimit-remaining-*` answers said is left;
    /// one about to run dry is skipped until its limit resets.
    Headroom,
}

/// One deployment of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolMember {
    /// An `[[upstreams]]` name, or `default`.
    pub upstream: String,
    /// The model name sent there (the alias's own name when unset).
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
    /// This deployment's own limits, kept by the gateway (shared through Redis when set).
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

fn one() -> u32 {
    1
}

/// `pool = [...]` of a `[models.ALIAS]`: the first `members.len()` of the alias's targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPool {
    pub strategy: PoolStrategy,
    /// How long a deployment that failed (429, 5xx, unreachable) is skipped when its answer
    /// gave no `Retry-After`.
    pub cooldown: Duration,
    /// Failures a caller could provoke (5xx, 401/403) a deployment may have in a minute
    /// before it cools down; a 429 or an unreachable deployment cools at once.
    pub allowed_fails: u32,
    pub members: Vec<PoolMember>,
}

/// The failures a caller could provoke that a deployment is allowed in a minute by default.
pub const DEFAULT_ALLOWED_FAILS: u32 = 2;

/// The cooldown of a deployment whose failure named no `Retry-After`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);

/// The longest cooldown honoured: a `Retry-After` of an hour must not take a deployment out
/// for an hour on one answer.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);

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

/// `[models.ALIAS]`: the primary target (or the pool's members), then the fallbacks in order.
#[derive(Debug, Clone)]
pub struct ModelAlias {
    pub targets: Vec<AliasTarget>,
    /// Set when the alias is served by a pool: its members are the first targets.
    pub pool: Option<ModelPool>,
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
    #[serde(default)]
    kind: KindFile,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    deployments: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum KindFile {
    #[default]
    Openai,
    Azure,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasFile {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    pool: Option<Vec<PoolMember>>,
    #[serde(default)]
    strategy: PoolStrategy,
    #[serde(default)]
    cooldown_ms: Option<u64>,
    #[serde(default)]
    allowed_fails: Option<u32>,
    #[serde(default)]
    fallbacks: Vec<AliasTarget>,
}

/// The most deployments one pool may have.
pub const MAX_POOL_MEMBERS: usize = 64;

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
        let (mut targets, pool) = match alias_targets(
            alias,
            parsed.target,
            parsed.upstream,
            parsed.pool,
            parsed.strategy,
            parsed.cooldown_ms,
            parsed.allowed_fails,
        ) {
            Ok(read) => read,
            Err(message) => {
                s.invalid_in_file(&path, message);
                continue;
            }
        };
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
        aliases.insert(alias.clone(), ModelAlias { targets, pool });
    }
    (upstreams, aliases)
}

/// An alias's first targets: its one `target` on an `upstream`, or its pool's members.
fn alias_targets(
    alias: &str,
    target: Option<String>,
    upstream: Option<String>,
    pool: Option<Vec<PoolMember>>,
    strategy: PoolStrategy,
    cooldown_ms: Option<u64>,
    allowed_fails: Option<u32>,
) -> Result<(Vec<AliasTarget>, Option<ModelPool>), String> {
    let Some(members) = pool else {
        let Some(target) = target else {
            return Err("needs a `target` (or a `pool`)".to_owned());
        };
        if cooldown_ms.is_some() || allowed_fails.is_some() || strategy != PoolStrategy::default() {
            return Err(
                "`strategy`, `cooldown_ms` and `allowed_fails` apply to a `pool` only".to_owned(),
            );
        }
        let upstream = upstream.unwrap_or_else(default_upstream);
        return Ok((vec![AliasTarget { target, upstream }], None));
    };
    if target.is_some() || upstream.is_some() {
        return Err(
            "has a `pool`: its members name their upstream and target, not the alias".to_owned(),
        );
    }
    if members.is_empty() || members.len() > MAX_POOL_MEMBERS {
        return Err(format!("a pool needs 1 to {MAX_POOL_MEMBERS} members"));
    }
    if members
        .iter()
        .any(|m| m.weight == 0 || m.weight > 1_000_000)
    {
        return Err("a pool member's weight must be 1 to 1000000".to_owned());
    }
    if members
        .iter()
        .any(|m| m.requests_per_minute == Some(0) || m.tokens_per_minute == Some(0))
    {
        return Err(
            "a pool member's per-minute limits must be at least 1 (leave one out for no limit)"
                .to_owned(),
        );
    }
    let cooldown = match cooldown_ms {
        None => DEFAULT_COOLDOWN,
        Some(ms) if Duration::from_millis(ms) <= MAX_COOLDOWN => Duration::from_millis(ms),
        Some(_) => {
            return Err(format!(
                "cooldown_ms must be at most {}",
                MAX_COOLDOWN.as_millis()
            ));
        }
    };
    let targets: Vec<AliasTarget> = members
        .iter()
        .map(|m| AliasTarget {
            target: m.target.clone().unwrap_or_else(|| alias.to_owned()),
            upstream: m.upstream.clone(),
        })
        .collect();
    for (index, target) in targets.iter().enumerate() {
        if targets[..index].contains(target) {
            return Err(format!(
                "the pool names {:?} on {:?} twice",
                target.target, target.upstream
            ));
        }
    }
    Ok((
        targets,
        Some(ModelPool {
            strategy,
            cooldown,
            allowed_fails: allowed_fails.unwrap_or(DEFAULT_ALLOWED_FAILS),
            members,
        }),
    ))
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
        let kind = match parsed.kind {
            KindFile::Openai => {
                if parsed.api_version.is_some() || !parsed.deployments.is_empty() {
                    s.invalid_in_file(
                        &path,
                        "api_version and deployments apply to kind = \"azure\" only",
                    );
                    continue;
                }
                UpstreamKind::OpenAi
            }
            KindFile::Azure => {
                let api_version = parsed
                    .api_version
                    .unwrap_or_else(|| AZURE_API_VERSION.to_owned());
                let unsafe_name = |name: &str| {
                    name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                };
                if unsafe_name(&api_version)
                    || parsed
                        .deployments
                        .values()
                        .any(|d| unsafe_name(d) || d == "." || d == "..")
                {
                    s.invalid_in_file(
                        &path,
                        "api_version and deployment names may hold only letters, digits, '-', '_' and '.'",
                    );
                    continue;
                }
                if parsed.api_key_env.is_none() {
                    s.invalid_in_file(&path, "an Azure upstream needs api_key_env");
                    continue;
                }
                let loopback = super::upstream::is_loopback(&base_url);
                if base_url.scheme() != "https" && !loopback {
                    s.invalid_in_file(
                        &path,
                        "an Azure upstream's base_url must be https (its api-key would travel in clear)",
                    );
                    continue;
                }
                UpstreamKind::Azure(AzureSettings {
                    api_version,
                    deployments: parsed.deployments,
                })
            }
        };
        entries.push(UpstreamEntry {
            name: parsed.name,
            base_url,
            api_key,
            models: parsed.models,
            kind,
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Env, PoolStrategy};

    fn load(models: &str) -> Result<Config, String> {
        let mut env = Env::default();
        env.set("OPENAI_API_KEY", "sk-test");
        env.set("B_KEY", "sk-b");
        let text = format!(
            "[[upstreams]]\nname = \"b\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"B_KEY\"\n\n{models}"
        );
        Config::from_toml_str("t.toml", &text, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn a_pool_reads_into_its_members_then_the_fallbacks() {
        let config = load(
            "[models.m]\nstrategy = \"least_busy\"\ncooldown_ms = 2500\npool = [{ upstream = \"default\", weight = 3 }, { upstream = \"b\", target = \"gpt-4o\", requests_per_minute = 60 }]\nfallbacks = [{ target = \"gpt-4o-mini\" }]\n",
        )
        .unwrap();
        let alias = &config.models["m"];
        let pool = alias.pool.as_ref().unwrap();
        assert_eq!(pool.strategy, PoolStrategy::LeastBusy);
        assert_eq!(pool.cooldown.as_millis(), 2500);
        let targets: Vec<(&str, &str)> = alias
            .targets
            .iter()
            .map(|t| (t.upstream.as_str(), t.target.as_str()))
            .collect();
        assert_eq!(
            targets,
            [
                ("default", "m"),
                ("b", "gpt-4o"),
                ("default", "gpt-4o-mini")
            ]
        );
    }

    #[test]
    fn a_pool_that_cannot_work_as_written_is_refused() {
        for (bad, says) in [
            ("pool = []", "1 to 64 members"),
            ("pool = [{ upstream = \"nowhere\" }]", "not defined"),
            ("pool = [{ upstream = \"b\", weight = 0 }]", "weight"),
            (
                "pool = [{ upstream = \"b\", requests_per_minute = 0 }]",
                "at least 1",
            ),
            (
                "pool = [{ upstream = \"b\" }, { upstream = \"b\" }]",
                "twice",
            ),
            (
                "target = \"x\"\npool = [{ upstream = \"b\" }]",
                "has a `pool`",
            ),
            (
                "target = \"x\"\nstrategy = \"headroom\"",
                "apply to a `pool` only",
            ),
            (
                "pool = [{ upstream = \"b\" }]\ncooldown_ms = 900000",
                "cooldown_ms",
            ),
            (
                "pool = [{ upstream = \"b\" }]\nstrategy = \"fastest\"",
                "expected one of `weighted`",
            ),
            ("pool = [{ upstream = \"b\", region = \"eu\" }]", "region"),
            ("fallbacks = []", "needs a `target`"),
        ] {
            let error = load(&format!("[models.m]\n{bad}\n")).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
            assert!(error.contains("models.m"), "{bad}: {error}");
        }
    }
}
