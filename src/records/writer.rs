//! The one batch writer: drains the queue into the database, spilling when it cannot.
//!
//! Loop: take the first record, then whatever arrives within `flush_interval` up to
//! `batch_size`; write the batch. A write that fails or takes longer than `WRITE_TIMEOUT`
//! spills the batch to the file and opens a breaker: for `RETRY_AFTER` batches go straight to
//! the file (a dead database costs the request path nothing), then one write probes again.
//! After any successful write the spill file, if any, is replayed into the database. On
//! shutdown the queue is closed, drained and written (or spilled), and the task ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::spill::SpillFile;
use super::{QueueBytes, Record, RecordStore, Recorder, RecorderInner};
use crate::config::RecordsConfig;

/// A database write that takes longer is treated as failed and its batch spilled.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed write, batches are spilled without trying the database for this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long the drain waits for records of streams that are still ending.
const PENDING_GRACE: Duration = Duration::from_secs(5);
/// How often old records are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The running writer; [`RecordWriter::finish`] drains it.
pub struct RecordWriter {
    tasks: TaskTracker,
    pending: TaskTracker,
    stop: CancellationToken,
}

impl RecordWriter {
    /// Starts the writer for `store` and returns the request path's [`Recorder`] with it.
    /// With `records.enabled = false`, nothing is started and the recorder keeps nothing.
    pub fn start(
        config: &RecordsConfig,
        store: Arc<dyn RecordStore>,
    ) -> (Recorder, Option<RecordWriter>) {
        if !config.enabled {
            return (Recorder::disabled(), None);
        }
        let (sender, receiver) = mpsc::channel(config.queue_capacity);
        let spill = Arc::new(SpillFile::new(config.spill_path()));
        let stop = CancellationToken::new();
        let room = QueueBytes::new(config.queue_bytes);
        let worker = Worker {
            room: room.clone(),
            store: Arc::clone(&store),
            spill: Arc::clone(&spill),
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            failing_since: None,
            spilled_pending: spill.len() > 0,
        };
        let tasks = TaskTracker::new();
        tasks.spawn(worker.run(receiver, stop.clone()));
        if config.retention_days > 0 {
            let retention = i64::from(config.retention_days) * 86_400_000;
            tasks.spawn(delete_old_records(
                Arc::clone(&store),
                retention,
                stop.clone(),
            ));
        }
        tasks.close();
        let pending = TaskTracker::new();
        let recorder = Recorder {
            inner: Some(Arc::new(RecorderInner {
                sender,
                room,
                fallback: spill,
                store_text: config.store_text,
                pending: pending.clone(),
            })),
        };
        (
            recorder,
            Some(Self {
                tasks,
                pending,
                stop,
            }),
        )
    }

    /// Stops taking records, writes (or spills) every queued one, and waits for that.
    pub async fn finish(self) {
        // Streams still running past the server's grace period deliver later, to the spill
        // file (the queue is gone by then); they do not hold up the drain.
        self.pending.close();
        let _ = tokio::time::timeout(PENDING_GRACE, self.pending.wait()).await;
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

struct Worker {
    /// Given back as each batch is stored or spilled.
    room: QueueBytes,
    store: Arc<dyn RecordStore>,
    spill: Arc<SpillFile>,
    batch_size: usize,
    flush_interval: Duration,
    /// Set while the database is failing: when the last write failed.
    failing_since: Option<Instant>,
    /// Whether the spill file may hold records to replay.
    spilled_pending: bool,
}

impl Worker {
    async fn run(mut self, mut receiver: mpsc::Receiver<Record>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(self.batch_size);
        if self.spilled_pending {
            self.replay().await;
        }
        loop {
            // The first record of a batch, or the end.
            let first = tokio::select! {
                record = receiver.recv() => record,
                () = stop.cancelled(), if !receiver.is_closed() => {
                    receiver.close();
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            let deadline = Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                let room = self.batch_size - batch.len();
                let closing = receiver.is_closed();
                tokio::select! {
                    taken = receiver.recv_many(&mut batch, room) => if taken == 0 { break },
                    () = tokio::time::sleep_until(deadline), if !closing => break,
                    () = stop.cancelled(), if !closing => receiver.close(),
                }
            }
            crate::metrics::set_audit_queue_depth(receiver.len());
            let bytes = self.room.bytes_of(&batch);
            self.write(std::mem::take(&mut batch)).await;
            self.room.give_back(bytes);
        }
        if self.spilled_pending && self.failing_since.is_none() {
            self.replay().await;
        }
        tracing::info!("audit records drained");
    }

    /// Writes one batch, or spills it.
    async fn write(&mut self, batch: Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        let breaker_open = self
            .failing_since
            .is_some_and(|since| since.elapsed() < RETRY_AFTER);
        if !breaker_open {
            match tokio::time::timeout(WRITE_TIMEOUT, self.store.insert(&batch)).await {
                Ok(Ok(_new)) => {
                    crate::metrics::record_audit_written(batch.len());
                    if self.failing_since.take().is_some() {
                        tracing::info!("the database takes audit records again");
                    }
                    if self.spilled_pending {
                        self.replay().await;
                    }
                    return;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, records = batch.len(), "audit write failed; spilling");
                }
                Err(_elapsed) => {
                    tracing::warn!(records = batch.len(), "audit write timed out; spilling");
                }
            }
            crate::metrics::record_audit_failure("write");
            self.failing_since = Some(Instant::now());
        }
        self.spill(batch).await;
    }

    async fn spill(&mut self, batch: Vec<Record>) {
        let spill = Arc::clone(&self.spill);
        let count = batch.len();
        let result = tokio::task::spawn_blocking(move || spill.append(&batch)).await;
        match result {
            Ok(Ok(())) => {
                self.spilled_pending = true;
                crate::metrics::record_audit_spilled(count, self.spill.len());
            }
            Ok(Err(error)) => {
                tracing::error!(%error, records = count, "audit records could be neither written nor spilled");
                crate::metrics::record_audit_failure("lost");
            }
            Err(error) => {
                tracing::error!(%error, records = count, "the spill task failed");
                crate::metrics::record_audit_failure("lost");
            }
        }
    }

    /// Moves the spill file's records into the database; keeps the file if any write fails.
    async fn replay(&mut self) {
        let mut offset = 0;
        let mut replayed = 0u64;
        loop {
            let spill = Arc::clone(&self.spill);
            let batch_size = self.batch_size;
            let chunk =
                match tokio::task::spawn_blocking(move || spill.read_chunk(offset, batch_size))
                    .await
                {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(error)) => {
                        tracing::error!(%error, "reading the audit spill file failed");
                        return;
                    }
                    Err(_) => return,
                };
            if chunk.skipped > 0 {
                tracing::warn!(
                    lines = chunk.skipped,
                    "unreadable lines in the audit spill file skipped"
                );
            }
            if !chunk.records.is_empty() {
                match tokio::time::timeout(WRITE_TIMEOUT, self.store.insert(&chunk.records)).await {
                    Ok(Ok(_)) => replayed += chunk.records.len() as u64,
                    _ => {
                        tracing::warn!("replaying spilled audit records failed; will retry");
                        self.failing_since = Some(Instant::now());
                        return;
                    }
                }
            }
            offset = chunk.next_offset;
            if chunk.at_end {
                break;
            }
        }
        let spill = Arc::clone(&self.spill);
        match tokio::task::spawn_blocking(move || spill.remove()).await {
            Ok(Ok(())) => {
                self.spilled_pending = false;
                crate::metrics::record_audit_spilled(0, 0);
                if replayed > 0 {
                    tracing::info!(records = replayed, "spilled audit records replayed");
                }
            }
            _ => tracing::error!("the replayed audit spill file could not be removed"),
        }
    }
}

/// Deletes records older than the retention period, at start and then hourly, on its own task
/// so a long delete never holds up the writer.
async fn delete_old_records(
    store: Arc<dyn RecordStore>,
    retention_ms: i64,
    stop: CancellationToken,
) {
    loop {
        let cutoff = super::now_ms() - retention_ms;
        match store.delete_before(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "old audit records deleted"),
            Err(error) => tracing::warn!(%error, "deleting old audit records failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(RETENTION_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
