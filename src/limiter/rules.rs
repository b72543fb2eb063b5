//! Limit rules: who is limited (scope), on what (route), by how much, per how long.
//!
//! ```toml
//! [[limits.rules]]
//! scope = "user"      # ip | key | user
//! route = "chat"      # chat | embeddings | images | responses | audio | files | batches
//!                     # | moderations | completions | realtime | *
//! requests = 100      # or: tokens = 40000
//! per = "1m"          # 1s | 1m | 1h | 1d, or a number with that unit: "10m"
//! ```
//!
//! The same shape is accepted from the TOML file, from `[jwt]`/`[anonymous]`, and as a key's
//! own rules (stored as JSON with the key; written on the CLI as
//! `scope=user,route=chat,requests=100,per=1m`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::gcra::Quota;

/// Whose requests a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The client IP (after trusted proxies).
    Ip,
    /// The gateway key (all its users together).
    Key,
    /// The end user: within a key, a JWT `sub`, or an anonymous caller's `x-user-id`.
    User,
}

/// Which routes a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteClass {
    #[serde(rename = "chat")]
    Chat,
    #[serde(rename = "embeddings")]
    Embeddings,
    #[serde(rename = "images")]
    Images,
    #[serde(rename = "responses")]
    Responses,
    /// `/v1/audio/*` (speech, transcriptions, translations).
    #[serde(rename = "audio")]
    Audio,
    /// `/v1/files/*` and `/v1/uploads/*`.
    #[serde(rename = "files")]
    Files,
    /// `/v1/batches/*`.
    #[serde(rename = "batches")]
    Batches,
    /// `/v1/moderations`.
    #[serde(rename = "moderations")]
    Moderations,
    /// `/v1/completions` (the legacy completions API).
    #[serde(rename = "completions")]
    Completions,
    /// `/v1/realtime` sessions and the Realtime API's other routes.
    #[serde(rename = "realtime")]
    Realtime,
    /// Every route.
    #[serde(rename = "*")]
    Any,
}

/// What a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Requests,
    Tokens,
}

/// One rule, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    pub scope: Scope,
    pub route: RouteClass,
    pub unit: Unit,
    pub limit: u64,
    pub per: Duration,
}

/// The largest limit a new rule may set (requests or tokens per window).
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

impl RuleSpec {
    /// A new rule (admin API, CLI) in the form the admin API's schema states: a limit up to
    /// [`MAX_LIMIT`], a period of 1 to 999999 units without a leading zero or spaces.
    pub fn validate_new(&self) -> Result<Rule, String> {
        let limit = self.requests.or(self.tokens).unwrap_or(0);
        if limit > MAX_LIMIT {
            return Err(format!("the limit must be from 1 to {MAX_LIMIT}"));
        }
        let last = self.per.char_indices().last().map_or(0, |(at, _)| at);
        let count = &self.per[..last];
        let canonical = count.len() <= 6
            && count.bytes().all(|b| b.is_ascii_digit())
            && !count.starts_with('0');
        if !canonical {
            return Err(format!(
                "bad period {:?}: expected a count from 1 to 999999 (or none) and a unit, e.g. 1m or 10m",
                self.per
            ));
        }
        self.validate()
    }
}

/// A rule as written (TOML, JSON, CLI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub scope: Scope,
    pub route: RouteClass,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::strict_json::some_u64"
    )]
    pub requests: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::strict_json::some_u64"
    )]
    pub tokens: Option<u64>,
    pub per: String,
}

impl RuleSpec {
    /// Checks the spec and builds the rule. Lenient as earlier versions were, since stored
    /// keys and configuration files hold rules they accepted (`" 1h"`, `"2592000s"`): a rule
    /// that stops validating would silently stop limiting. New rules from the admin API and
    /// the CLI pass [`RuleSpec::validate_new`] first.
    pub fn validate(&self) -> Result<Rule, String> {
        let (unit, limit) = match (self.requests, self.tokens) {
            (Some(n), None) => (Unit::Requests, n),
            (None, Some(n)) => (Unit::Tokens, n),
            (Some(_), Some(_)) => return Err("give requests or tokens, not both".to_owned()),
            (None, None) => return Err("give requests = N or tokens = N".to_owned()),
        };
        if limit == 0 {
            return Err("the limit must be at least 1".to_owned());
        }
        let per = parse_period(&self.per)?;
        Ok(Rule {
            scope: self.scope,
            route: self.route,
            unit,
            limit,
            per,
        })
    }

    /// Parses the CLI form `scope=user,route=chat,requests=100,per=1m`.
    pub fn parse_cli(text: &str) -> Result<Self, String> {
        let mut object = serde_json::Map::new();
        for pair in text.split(',') {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("expected name=value, got {pair:?}"))?;
            let value = match name.trim() {
                "requests" | "tokens" => serde_json::Value::from(
                    value
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{name} must be a whole number"))?,
                ),
                _ => serde_json::Value::from(value.trim()),
            };
            object.insert(name.trim().to_owned(), value);
        }
        let spec: Self =
            serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| e.to_string())?;
        spec.validate()?;
        Ok(spec)
    }
}

/// `1s`, `1m`, `1h`, `1d`, or a whole number with one of those units (`10m`, `2h`).
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // At the last character's boundary: a multi-byte last character must not split a byte.
    let last = text.char_indices().last().map_or(0, |(at, _)| at);
    let (number, unit) = text.split_at(last);
    let count: u64 = if number.is_empty() {
        1
    } else {
        number
            .parse()
            .map_err(|_| format!("bad period {text:?}: expected e.g. 1m or 10m"))?
    };
    if count == 0 {
        return Err(format!("bad period {text:?}: must be longer than 0"));
    }
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "bad period {text:?}: the unit must be s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(count.saturating_mul(seconds)))
}

impl Rule {
    /// The bucket's size and refill period.
    pub fn quota(&self) -> Quota {
        Quota {
            limit: self.limit,
            period_us: u64::try_from(self.per.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Whether the rule counts requests to `route`.
    pub fn covers(&self, route: RouteClass) -> bool {
        self.route == RouteClass::Any || self.route == route
    }

    /// A stable name, the same on every replica with the same rule (part of bucket keys).
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}/{}s",
            self.scope.as_str(),
            self.route.as_str(),
            self.unit.as_str(),
            self.limit,
            self.per.as_secs()
        )
    }

    /// The spec this rule was built from (for storage and display).
    pub fn to_spec(&self) -> RuleSpec {
        let (requests, tokens) = match self.unit {
            Unit::Requests => (Some(self.limit), None),
            Unit::Tokens => (None, Some(self.limit)),
        };
        RuleSpec {
            scope: self.scope,
            route: self.route,
            requests,
            tokens,
            per: format_period(self.per),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} per {} for each {} on {}",
            self.limit,
            self.unit.as_str(),
            format_period(self.per),
            self.scope.as_str(),
            self.route.as_str()
        )
    }
}

/// The shortest way to write a period (`3600 s` → `1h`).
pub fn format_period(period: Duration) -> String {
    let seconds = period.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds.is_multiple_of(size) && seconds >= size {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Key => "key",
            Self::User => "user",
        }
    }
}

impl RouteClass {
    /// The class limit rules name for one of Tollgate's model routes; passthrough calls are
    /// classed by their operation's family instead.
    pub fn of_route(route: crate::openai::ModelRoute) -> Self {
        use crate::openai::ModelRoute;
        match route {
            ModelRoute::Chat => Self::Chat,
            ModelRoute::Embeddings => Self::Embeddings,
            ModelRoute::Images => Self::Images,
            ModelRoute::Responses => Self::Responses,
            ModelRoute::Realtime => Self::Realtime,
            ModelRoute::Passthrough => Self::Any,
        }
    }

    /// The class of a passthrough operation's family (`files`, `audio`, ...); families
    /// without a class of their own match only `*` rules.
    pub fn of_family(family: &str) -> Self {
        match family {
            "chat" => Self::Chat,
            "embeddings" => Self::Embeddings,
            "images" => Self::Images,
            "responses" => Self::Responses,
            "audio" => Self::Audio,
            "files" | "uploads" => Self::Files,
            "batches" => Self::Batches,
            "moderations" => Self::Moderations,
            "completions" => Self::Completions,
            "realtime" => Self::Realtime,
            _ => Self::Any,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Images => "images",
            Self::Responses => "responses",
            Self::Audio => "audio",
            Self::Files => "files",
            Self::Batches => "batches",
            Self::Moderations => "moderations",
            Self::Completions => "completions",
            Self::Realtime => "realtime",
            Self::Any => "*",
        }
    }
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// The seeds' numbers: 1000 requests/hour per IP; per user: chat 100/minute, images 50/hour,
/// embeddings 500/hour.
pub fn default_rules() -> Vec<Rule> {
    let rule = |scope, route, limit, seconds| Rule {
        scope,
        route,
        unit: Unit::Requests,
        limit,
        per: Duration::from_secs(seconds),
    };
    vec![
        rule(Scope::Ip, RouteClass::Any, 1000, 3600),
        rule(Scope::User, RouteClass::Chat, 100, 60),
        rule(Scope::User, RouteClass::Images, 50, 3600),
        rule(Scope::User, RouteClass::Embeddings, 500, 3600),
    ]
}

/// A key's own rules replace the defaults of the same scope and route, for that key.
pub fn merge(defaults: &[Rule], own: &[Rule]) -> Vec<Rule> {
    let mut merged: Vec<Rule> = defaults
        .iter()
        .filter(|d| !own.iter().any(|o| o.scope == d.scope && o.route == d.route))
        .copied()
        .collect();
    merged.extend_from_slice(own);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(parse_period("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_period("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_period("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_period("h").unwrap(), Duration::from_secs(3600));
        assert!(parse_period("0m").is_err());
        assert!(parse_period("1w").is_err());
        assert!(parse_period("soon").is_err());
        for refused in ["1é", "é", "", "0m"] {
            assert!(parse_period(refused).is_err(), "{refused:?}");
        }
        // What earlier versions stored still limits...
        for stored in [" 1h", "2592000s", "05m"] {
            assert!(parse_period(stored).is_ok(), "{stored:?}");
        }
        // ...but a new rule takes the form the admin API's schema states.
        let rule = |per: &str| RuleSpec {
            scope: Scope::Key,
            route: RouteClass::Chat,
            requests: Some(1),
            tokens: None,
            per: per.to_owned(),
        };
        for refused in ["01m", " 1m", "1m ", "1000000m", "1é"] {
            assert!(rule(refused).validate_new().is_err(), "{refused:?}");
            assert!(
                rule(refused).validate().is_ok() || refused == "1é",
                "{refused:?}"
            );
        }
        assert!(rule("999999s").validate_new().is_ok());
        assert_eq!(format_period(Duration::from_secs(7200)), "2h");
        assert_eq!(format_period(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn specs_need_exactly_one_amount() {
        let spec = |requests, tokens| RuleSpec {
            scope: Scope::User,
            route: RouteClass::Chat,
            requests,
            tokens,
            per: "1m".into(),
        };
        assert!(spec(Some(1), None).validate().is_ok());
        assert_eq!(spec(None, Some(5)).validate().unwrap().unit, Unit::Tokens);
        assert!(spec(Some(1), Some(1)).validate().is_err());
        assert!(spec(None, None).validate().is_err());
        assert!(spec(Some(0), None).validate().is_err());
    }

    #[test]
    fn cli_form_round_trips() {
        let spec = RuleSpec::parse_cli("scope=key,route=*,tokens=40000,per=1m").unwrap();
        let rule = spec.validate().unwrap();
        assert_eq!(
            (rule.scope, rule.route, rule.unit, rule.limit),
            (Scope::Key, RouteClass::Any, Unit::Tokens, 40_000)
        );
        assert_eq!(rule.to_spec(), spec);
        assert!(RuleSpec::parse_cli("scope=planet,route=chat,requests=1,per=1m").is_err());
        assert!(RuleSpec::parse_cli("scope=user,route=chat,requests=x,per=1m").is_err());
    }

    #[test]
    fn own_rules_replace_defaults_of_the_same_scope_and_route() {
        let own = RuleSpec::parse_cli("scope=user,route=chat,requests=5,per=1m")
            .unwrap()
            .validate()
            .unwrap();
        let merged = merge(&default_rules(), &[own]);
        assert_eq!(merged.len(), 4);
        let chat: Vec<_> = merged
            .iter()
            .filter(|r| r.scope == Scope::User && r.route == RouteClass::Chat)
            .collect();
        assert_eq!(chat, vec![&own]);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let rules = default_rules();
        assert_eq!(rules[1].id(), "user:chat:requests:100/60s");
        let mut ids: Vec<String> = rules.iter().map(Rule::id).collect();
        ids.dedup();
        assert_eq!(ids.len(), rules.len());
    }
}
