//! Log output: JSON lines (default) or text, filtered by `TOLLGATE_LOG`.
//!
//! Lines are written by a background thread, never by the request path: a request formats its
//! line into a bounded queue and goes on. When the queue is full (the log's reader is slower
//! than the traffic), the line is dropped and counted (`tollgate_log_lines_dropped_total`)
//! rather than stalling requests behind a write.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines the queue holds before new ones are dropped (~1 s of heavy traffic).
const QUEUED_LINES: usize = 32_768;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the log writer running; dropping it flushes what is queued. Held by the command
/// for as long as it runs.
#[must_use = "logs stop being written when the guard is dropped"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber. Logs go to stderr, leaving stdout to command output
/// (`tollgate keys create --json` must print only JSON).
pub fn init(config: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("tollgate-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init in one process (tests) keeps the first subscriber and its writer.
    if installed.is_err() {
        return LogGuard { _writer: None };
    }
    let _ = DROPPED.set(dropped);
    LogGuard {
        _writer: Some(guard),
    }
}

/// Lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}
