//! Audit records: one per answered request, queued off the request path, written in batches.
//!
//! ```text
//! audit layer ──► Recorder (bounded queue) ──► writer task ──► RecordStore (SQLite | PostgreSQL)
//!                                                   │  database down?
//!                                                   └──► spill file ──► replayed when it is back
//! ```
//!
//! The guarantees, and where each is kept:
//! - a record is queued before its response is handed to the client (the audit layer awaits
//!   [`Recorder::record`]); a full queue makes the request wait, it never drops a record;
//! - the writer spills a batch the database refuses (or does not take within
//!   `WRITE_TIMEOUT`) to an append-only file, fsynced, and replays it once a write succeeds;
//!   replay is idempotent (records carry their own id; the insert skips ids already stored);
//! - on shutdown the queue is drained before exit ([`RecordWriter::finish`]);
//! - a crash of the process loses what was queued and not yet written: at most one flush
//!   interval of records (docs/BENCHMARKS.md, "What a crash costs the audit log", has the
//!   measurement).

mod facts;
mod spill;
mod writer;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::openai::usage::Usage;
use crate::pricing::Micros;
pub use facts::{CallFacts, PendingFacts};
pub use writer::RecordWriter;

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
    pub cost_micros: Option<Micros>,
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
}

/// Where records are stored. Implemented by both database engines with the same schema.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync {
    /// Stores `records` in one transaction, skipping ids already stored, and adds the newly
    /// stored ones to the hourly usage rollup. Returns how many were new.
    async fn insert(&self, records: &[Record]) -> Result<u64, crate::store::StoreError>;
    /// Deletes records (and rollup hours) older than `cutoff_ms`; returns records deleted.
    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, crate::store::StoreError>;
    /// How many records there are (tests and the admin API's totals).
    async fn count(&self) -> Result<u64, crate::store::StoreError>;
    /// Records matching `query`, newest first.
    async fn recent(&self, query: &RecentQuery) -> Result<Vec<Record>, crate::store::StoreError>;
    /// Total cost of `scope`'s records since `since_ms` (from the hourly rollup, so
    /// `since_ms` should be on an hour boundary).
    async fn spend(
        &self,
        scope: &SpendScope,
        since_ms: i64,
    ) -> Result<Micros, crate::store::StoreError>;
    /// Usage between two instants, grouped (from the hourly rollup: `from_ms` and `to_ms` are
    /// rounded down to the hour).
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, crate::store::StoreError>;
}

/// What to group usage by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Key,
    User,
    Model,
    Day,
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
        }
    }

    /// Parses `key`, `user`, `model` or `day`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "key" => Some(Self::Key),
            "user" => Some(Self::User),
            "model" => Some(Self::Model),
            "day" => Some(Self::Day),
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
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub images: i64,
    pub cost_micros: i64,
    /// Answered requests whose model has no price: their cost is not in `cost_micros`.
    pub unpriced: i64,
    pub estimated: i64,
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

/// The request path's handle on the queue. Cloning is cheap.
#[derive(Clone)]
pub struct Recorder {
    inner: Option<Arc<RecorderInner>>,
}

struct RecorderInner {
    sender: mpsc::Sender<Record>,
    /// Where a record goes if the writer has already stopped (a request finishing during
    /// shutdown after the drain began): appended to the spill file directly.
    fallback: Arc<spill::SpillFile>,
    store_text: bool,
    /// Records waiting for their stream to end; the writer waits for them before it drains.
    pending: tokio_util::task::TaskTracker,
}

impl Recorder {
    /// A recorder that keeps nothing (`records.enabled = false`, and tests of single layers).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Whether records are kept at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether prompt and completion text may be stored.
    pub fn stores_text(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| inner.store_text)
    }

    /// Queues `record`, waiting for room if the queue is full. Never drops it: if the writer
    /// is gone, the record is appended to the spill file here.
    pub async fn record(&self, record: Record) {
        let Some(inner) = &self.inner else {
            return;
        };
        if let Err(mpsc::error::SendError(record)) = inner.sender.send(record).await {
            let fallback = Arc::clone(&inner.fallback);
            let result =
                tokio::task::spawn_blocking(move || fallback.append(std::slice::from_ref(&record)))
                    .await;
            if !matches!(result, Ok(Ok(()))) {
                tracing::error!("an audit record could not be queued nor spilled");
                crate::metrics::record_audit_failure("lost");
            }
        }
    }
}

impl Recorder {
    /// Queues `draft` once `facts` arrive (a stream's end), completed by `complete`. If the
    /// facts never come (the relay vanished), the draft is recorded as it is.
    pub fn record_after(
        &self,
        draft: Record,
        facts: tokio::sync::oneshot::Receiver<CallFacts>,
        complete: impl FnOnce(Record, CallFacts) -> Record + Send + 'static,
    ) {
        let Some(inner) = &self.inner else {
            return;
        };
        let recorder = self.clone();
        inner.pending.spawn(async move {
            let record = match facts.await {
                Ok(facts) => complete(draft, facts),
                Err(_) => draft,
            };
            recorder.record(record).await;
        });
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}
