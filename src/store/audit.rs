//! The audit log as stored: a [`Record`] per answered request, the queries over them, and the
//! [`RecordStore`] both engines implement (beside `KeyStore`). The queue and the batch writer
//! that feed it are in `records`.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::record_rows::db_int;
use crate::openai::usage::Usage;
use crate::pricing::Nanos;

/// One request as the audit log keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's own id (UUID v7): unique even when callers reuse request ids, and what
    /// makes replaying a spill file idempotent.
    pub id: String,
    /// When the request arrived, Unix milliseconds.
    pub created_at_ms: i64,
    pub request_id: String,
    pub key_id: Option<String>,
    /// The end user: `x-user-id` or the body's `user` for key callers, the JWT subject, or the
    /// anonymous caller's `x-user-id`.
    pub user_id: Option<String>,
    /// `key`, `jwt`, `anonymous`, or `none` (refused before authentication finished).
    pub caller: String,
    pub method: String,
    /// The matched route (`/v1/chat/completions`), never the raw path with its query.
    pub route: String,
    pub model_requested: Option<String>,
    pub model_used: Option<String>,
    /// Which upstream answered (`default` until model routing names others).
    pub upstream: Option<String>,
    pub status: u16,
    /// `ok`, `refused` (4xx from Tollgate), `upstream_error`, `stream_broken`,
    /// `client_left`, or `error` (5xx from Tollgate).
    pub outcome: String,
    pub error_kind: Option<String>,
    pub stream: bool,
    pub usage: Usage,
    pub images: u64,
    pub image_size: Option<String>,
    pub image_quality: Option<String>,
    /// `None`: unpriced model, or no usage known.
    pub cost_nanos: Option<Nanos>,
    /// Usage counted by Tollgate's tokenizer because the upstream's was not seen.
    pub estimated: bool,
    /// `HIT`, `MISS`, `BYPASS` once the cache exists; `None` when not consulted.
    pub cache_status: Option<String>,
    pub latency_ms: i64,
    /// Time spent waiting for the upstream, when it was called.
    pub upstream_ms: Option<i64>,
    pub prompt_chars: Option<i64>,
    pub completion_chars: Option<i64>,
    /// Content rules that fired (names only, never the text).
    pub rules_fired: Vec<String>,
    pub client_ip: Option<String>,
    /// Only with `records.store_text = true`.
    pub prompt_text: Option<String>,
    pub completion_text: Option<String>,
    /// The price table that priced the cost (`PriceTable::version`); `None` when unpriced.
    pub price_version: Option<String>,
    /// The processing tier the answer reports (`default`, `flex`, `priority`, `batch`, ...).
    pub service_tier: Option<String>,
}

impl Record {
    /// About how much memory the record holds (its own size and its text), for the audit
    /// queue's byte bound.
    pub fn approx_bytes(&self) -> usize {
        let text = |value: &Option<String>| value.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + self.id.len()
            + self.request_id.len()
            + self.caller.len()
            + self.method.len()
            + self.route.len()
            + self.outcome.len()
            + [
                &self.key_id,
                &self.user_id,
                &self.model_requested,
                &self.model_used,
                &self.upstream,
                &self.error_kind,
                &self.image_size,
                &self.image_quality,
                &self.cache_status,
                &self.client_ip,
                &self.prompt_text,
                &self.completion_text,
                &self.price_version,
                &self.service_tier,
            ]
            .into_iter()
            .map(text)
            .sum::<usize>()
            + self.rules_fired.iter().map(String::len).sum::<usize>()
    }
}

/// Where records are stored. Implemented by both database engines with the same schema.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync {
    /// Stores `records` in one transaction, skipping ids already stored, and adds the newly
    /// stored ones to the hourly usage rollup. Returns how many were new.
    async fn insert(&self, records: &[Record]) -> Result<u64, StoreError>;
    /// Deletes records (and rollup hours) older than `cutoff_ms`; returns records deleted.
    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, StoreError>;
    /// How many records there are (tests and the admin API's totals).
    async fn count(&self) -> Result<u64, StoreError>;
    /// Records matching `query`, newest first.
    async fn recent(&self, query: &RecentQuery) -> Result<Vec<Record>, StoreError>;
    /// Total cost of `scope`'s records since `since_ms` (from the hourly rollup, so
    /// `since_ms` should be on an hour boundary).
    async fn spend(&self, scope: &SpendScope, since_ms: i64) -> Result<Nanos, StoreError>;
    /// Usage between two instants, grouped (from the hourly rollup: `from_ms` and `to_ms` are
    /// rounded down to the hour).
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError>;
}

/// What to group usage by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Key,
    User,
    Model,
    Day,
    /// The UTC hour (`2026-12-04T13:00Z`): charts of the last day or two. Read from the hourly
    /// rollup alone.
    Hour,
}

impl GroupBy {
    /// The rollup's column (or expression) for this grouping, given the rollup's time column;
    /// a closed set, so safe in SQL.
    pub fn column(self, time_column: &str) -> String {
        match self {
            Self::Key => "key_id".to_owned(),
            Self::User => "user_id".to_owned(),
            Self::Model => "model".to_owned(),
            Self::Day => format!("({time_column} / 86400000)"),
            Self::Hour => format!("({time_column} / 3600000)"),
        }
    }

    /// Parses `key`, `user`, `model` or `day`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::exactly(text.trim())
    }

    /// The name as written, without trimming (the admin API's `group_by`, whose schema says so).
    pub fn exactly(text: &str) -> Option<Self> {
        match text {
            "key" => Some(Self::Key),
            "user" => Some(Self::User),
            "model" => Some(Self::Model),
            "day" => Some(Self::Day),
            "hour" => Some(Self::Hour),
            _ => None,
        }
    }
}

/// `GET /admin/usage` and `tollgate usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub group_by: Vec<GroupBy>,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// One group's totals. Grouping fields not asked for are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `YYYY-MM-DD` (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<String>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// The ten counters every usage total has, named in the rollups by [`Self::COLUMNS`]: one
/// rollup row, one usage row, one sum.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageTotals {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub images: i64,
    pub cost_nanos: i64,
    /// Answered requests whose model has no price: their cost is not in `cost_nanos`.
    pub unpriced: i64,
    pub estimated: i64,
}

impl UsageTotals {
    /// The counters' columns in the rollups, in [`Self::values`] order.
    pub const COLUMNS: [&'static str; 10] = [
        "requests",
        "errors",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "images",
        "cost_nanos",
        "unpriced",
        "estimated",
    ];

    /// The counters in column order.
    pub fn values(&self) -> [i64; 10] {
        [
            self.requests,
            self.errors,
            self.prompt_tokens,
            self.cached_tokens,
            self.completion_tokens,
            self.reasoning_tokens,
            self.images,
            self.cost_nanos,
            self.unpriced,
            self.estimated,
        ]
    }

    /// The counters from their values in column order.
    pub fn from_values(
        [
            requests,
            errors,
            prompt_tokens,
            cached_tokens,
            completion_tokens,
            reasoning_tokens,
            images,
            cost_nanos,
            unpriced,
            estimated,
        ]: [i64; 10],
    ) -> Self {
        Self {
            requests,
            errors,
            prompt_tokens,
            cached_tokens,
            completion_tokens,
            reasoning_tokens,
            images,
            cost_nanos,
            unpriced,
            estimated,
        }
    }

    /// Adds `other`'s counters to these.
    pub fn add(&mut self, other: &Self) {
        let mut sum = self.values();
        for (into, value) in sum.iter_mut().zip(other.values()) {
            *into += value;
        }
        *self = Self::from_values(sum);
    }

    /// Counts one record in.
    pub fn count(&mut self, record: &Record) {
        self.requests += 1;
        self.errors += i64::from(record.status >= 400);
        self.prompt_tokens += db_int(record.usage.prompt_tokens);
        self.cached_tokens += db_int(record.usage.cached_tokens);
        self.completion_tokens += db_int(record.usage.completion_tokens);
        self.reasoning_tokens += db_int(record.usage.reasoning_tokens);
        self.images += db_int(record.images);
        match record.cost_nanos {
            Some(cost) => self.cost_nanos += cost,
            // Refusals cost nothing and are not "unpriced"; an answered request without a
            // price is.
            None if record.status < 400 => self.unpriced += 1,
            None => {}
        }
        self.estimated += i64::from(record.estimated);
    }
}

/// Whose spend a budget counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpendScope {
    /// Every request made with a key.
    Key(String),
    /// One end user's requests with a key.
    KeyUser(String, String),
    /// A JWT user (the token's subject).
    Jwt(String),
    /// An anonymous caller's `x-user-id`.
    Anonymous(String),
}

impl SpendScope {
    /// The scope's name in budget counters, with the Redis hash tag that keeps a key's lines
    /// on one Cluster slot (`{b:key:ID}`, `{b:key:ID}:u:USER`, `{b:jwt:SUB}`, `{b:anon:USER}`).
    pub fn tag(&self) -> String {
        match self {
            Self::Key(key) => format!("{{b:key:{key}}}"),
            Self::KeyUser(key, user) => format!("{{b:key:{key}}}:u:{user}"),
            Self::Jwt(subject) => format!("{{b:jwt:{subject}}}"),
            Self::Anonymous(user) => format!("{{b:anon:{user}}}"),
        }
    }
}

/// A filter over recent records (`GET /admin/requests`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentQuery {
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub status: Option<u16>,
    /// Only records after this one in newest-first order: `(created_at_ms, id)` of the
    /// previous page's last record (ids break ties between records of the same millisecond).
    pub before: Option<(i64, String)>,
    pub limit: u32,
}
