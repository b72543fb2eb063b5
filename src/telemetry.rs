//! Log output: JSON lines (default) or text, filtered by `TOLLGATE_LOG`.
//!
//! Lines never cost a request a system call: each line is appended to an in-memory buffer, and
//! one background thread writes the buffer out in one `write` every [`FLUSH_EVERY`] (sooner when
//! it passes [`FLUSH_AT`] bytes). When the buffer holds [`MAX_BUFFERED`] bytes (stderr's reader
//! is slower than the traffic), further lines are dropped and counted
//! (`tollgate_log_lines_dropped_total`) rather than stalling requests behind a write.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat};

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full is written at once.
const FLUSH_AT: usize = 256 << 10;
/// A buffer this full takes no more lines until it has been written.
const MAX_BUFFERED: usize = 8 << 20;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// What the request threads and the writer thread share.
#[derive(Default)]
struct Shared {
    state: Mutex<Buffer>,
    wake: Condvar,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    closing: bool,
}

/// The subscriber's writer: appends a formatted line to the shared buffer.
#[derive(Clone)]
struct BatchWriter(Arc<Shared>);

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if buffer.bytes.len() + line.len() > MAX_BUFFERED {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        buffer.bytes.extend_from_slice(line);
        if buffer.bytes.len() >= FLUSH_AT {
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Keeps the log writer running; dropping it writes out what is buffered. Held by the command
/// for as long as it runs.
#[must_use = "logs stop being written when the guard is dropped"]
pub struct LogGuard {
    writer: Option<(Arc<Shared>, JoinHandle<()>)>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some((shared, thread)) = self.writer.take() {
            shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .closing = true;
            shared.wake.notify_one();
            let _ = thread.join();
        }
    }
}

/// The writer thread: waits for a full buffer or the interval, swaps the buffer out, writes it
/// to stderr in one call.
fn write_out(shared: &Shared) {
    let mut spare = Vec::new();
    loop {
        let closing = {
            let buffer = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut buffer, _) = shared
                .wake
                .wait_timeout_while(buffer, FLUSH_EVERY, |b| {
                    !b.closing && b.bytes.len() < FLUSH_AT
                })
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut buffer.bytes, &mut spare);
            buffer.closing
        };
        if !spare.is_empty() {
            let _ = std::io::stderr().lock().write_all(&spare);
            spare.clear();
        }
        if closing {
            return;
        }
    }
}

/// Installs the global subscriber. Logs go to stderr, leaving stdout to command output
/// (`tollgate keys create --json` must print only JSON).
pub fn init(config: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let shared = Arc::new(Shared::default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BatchWriter(shared.clone()));
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
        return LogGuard { writer: None };
    }
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("tollgate-log".to_owned())
        .spawn(move || write_out(&thread_shared));
    LogGuard {
        writer: thread.ok().map(|thread| (shared, thread)),
    }
}

/// Lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}
