//! Audit records: one per answered request, queued off the request path, written in batches.
//!
//! ```text
//! audit layer ──► Recorder (bounded queue) ──► writer task ──► store::RecordStore (SQLite | PostgreSQL)
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

use tokio::sync::mpsc;

pub use crate::store::audit::{
    GroupBy, RecentQuery, Record, RecordStore, SpendScope, UsageQuery, UsageRow,
};
pub use facts::{Accounting, CallFacts, LeftBehind, PendingFacts, Unanswered};
pub use writer::RecordWriter;

/// The request path's handle on the queue. Cloning is cheap.
#[derive(Clone)]
pub struct Recorder {
    inner: Option<Arc<RecorderInner>>,
}

struct RecorderInner {
    sender: mpsc::Sender<Record>,
    /// Bytes of records the queue and the writer may hold ([`QueueBytes`]).
    room: QueueBytes,
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

    /// Queues `record`, waiting for room if the queue is full (in records or in bytes). Never
    /// drops it: if the writer is gone, the record is appended to the spill file here.
    pub async fn record(&self, record: Record) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner.room.take(&record).await;
        if let Err(mpsc::error::SendError(record)) = inner.sender.send(record).await {
            inner
                .room
                .give_back(inner.room.bytes_of(std::slice::from_ref(&record)));
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
    /// Queues `draft` once `facts` arrive (a stream's end, or what a call whose caller left
    /// learned), completed by `complete`. If the facts never come (the relay vanished, the call
    /// ended before it went upstream), the draft is recorded as it is.
    pub fn record_after<T: Send + 'static>(
        &self,
        draft: Record,
        facts: tokio::sync::oneshot::Receiver<T>,
        complete: impl FnOnce(Record, T) -> Record + Send + 'static,
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

/// The audit queue's bound in bytes: a request takes its record's size before queueing (waiting
/// while the queue and the batch being written hold `queue_bytes`), the writer gives it back
/// once the batch is stored or spilled.
#[derive(Clone)]
pub(crate) struct QueueBytes {
    permits: Arc<tokio::sync::Semaphore>,
    limit: usize,
}

impl QueueBytes {
    fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
        }
    }

    /// A record's share of the bound (a record larger than the whole bound takes all of it).
    fn share(&self, record: &Record) -> u32 {
        u32::try_from(record.approx_bytes().min(self.limit)).unwrap_or(u32::MAX)
    }

    async fn take(&self, record: &Record) {
        if let Ok(permit) = self.permits.acquire_many(self.share(record)).await {
            permit.forget();
        }
    }

    /// The shares `records` took.
    pub(crate) fn bytes_of(&self, records: &[Record]) -> usize {
        records.iter().map(|r| self.share(r) as usize).sum()
    }

    /// Gives back `bytes` of shares, once their records are written or spilled.
    pub(crate) fn give_back(&self, bytes: usize) {
        self.permits.add_permits(bytes);
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{QueueBytes, Record};

    fn record_of(bytes: usize) -> Record {
        Record {
            prompt_text: Some("x".repeat(bytes)),
            ..Record::default()
        }
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_and_waits_rather_than_drops() {
        let room = QueueBytes::new(1 << 20);
        let first = record_of(600 << 10);
        room.take(&first).await;
        let second = record_of(600 << 10);
        let waiting = tokio::time::timeout(Duration::from_millis(100), room.take(&second)).await;
        assert!(waiting.is_err(), "a second 600 KiB record fit in 1 MiB");
        room.give_back(room.bytes_of(std::slice::from_ref(&first)));
        tokio::time::timeout(Duration::from_secs(1), room.take(&second))
            .await
            .expect("room given back lets the next record in");
        // A record larger than the whole bound still goes (alone).
        room.give_back(room.bytes_of(std::slice::from_ref(&second)));
        tokio::time::timeout(Duration::from_secs(1), room.take(&record_of(2 << 20)))
            .await
            .expect("an oversized record takes the whole bound");
    }
}
