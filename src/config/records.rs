//! `[records]`: the audit log's writer, retention and spill file.

use std::path::PathBuf;
use std::time::Duration;

use super::source::{Millis, Sources};

/// How audit records are kept.
#[derive(Debug, Clone)]
pub struct RecordsConfig {
    /// `records.enabled`: off writes no records (benchmarks compare with it).
    pub enabled: bool,
    /// Records older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u32,
    /// Store prompt and completion text in records (off: only their lengths).
    pub store_text: bool,
    /// The writer flushes at least this often.
    pub flush_interval: Duration,
    /// Records per database write, at most.
    pub batch_size: usize,
    /// Records waiting for the writer, at most; a full queue makes requests wait (never drops).
    pub queue_capacity: usize,
    /// Bytes of records queued or being written, at most (the same waiting when full), so a
    /// slow database bounds memory, not only the count of records.
    pub queue_bytes: usize,
    /// `TOLLGATE_DATA_DIR`: where the spill file lives while the database is down.
    pub data_dir: PathBuf,
    /// How often batches created through Tollgate are looked up, to record their output once
    /// they end.
    pub batch_poll_interval: Duration,
}

impl RecordsConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let enabled = s.get("records.enabled", None, true);
        let retention_days = s.get("records.retention_days", None, 90u32);
        let store_text = s.get("records.store_text", None, false);
        let Millis(flush_interval) =
            s.get("records.flush_ms", None, Millis(Duration::from_millis(50)));
        if flush_interval.is_zero() || flush_interval > Duration::from_secs(60) {
            s.invalid("records.flush_ms", None, "must be from 1 to 60000");
        }
        // Small, frequent batches: a write of a few hundred rows takes a millisecond or two of
        // the same CPU that serves requests, where thousands would hold them up for longer
        // (docs/BENCHMARKS.md, issue #12).
        let batch_size = s.get("records.batch_size", None, 256usize);
        if !(1..=10_000).contains(&batch_size) {
            s.invalid("records.batch_size", None, "must be from 1 to 10000");
        }
        let queue_capacity = s.get("records.queue_capacity", None, 65_536usize);
        if queue_capacity < batch_size {
            s.invalid(
                "records.queue_capacity",
                None,
                "must be at least records.batch_size",
            );
        }
        let queue_bytes = s.get("records.queue_bytes", None, 16usize << 20);
        if !((1 << 20)..=(1 << 30)).contains(&queue_bytes) {
            s.invalid(
                "records.queue_bytes",
                None,
                "must be from 1048576 (1 MiB) to 1073741824 (1 GiB)",
            );
        }
        let data_dir = PathBuf::from(s.get(
            "records.data_dir",
            Some("TOLLGATE_DATA_DIR"),
            ".".to_owned(),
        ));
        let Millis(batch_poll_interval) = s.get(
            "records.batch_poll_ms",
            None,
            Millis(Duration::from_secs(60)),
        );
        if batch_poll_interval < Duration::from_millis(100)
            || batch_poll_interval > Duration::from_secs(86_400)
        {
            s.invalid(
                "records.batch_poll_ms",
                None,
                "must be from 100 to 86400000",
            );
        }
        Self {
            batch_poll_interval,
            enabled,
            retention_days,
            store_text,
            flush_interval,
            batch_size,
            queue_capacity,
            queue_bytes,
            data_dir,
        }
    }

    /// The append-only file that holds batches the database could not take.
    pub fn spill_path(&self) -> PathBuf {
        self.data_dir.join("tollgate-records.spill")
    }
}
