//! Log output: JSON lines (default) or text, filtered by `TOLLGATE_LOG`.
//!
//! Lines never cost a request a system call: each line is appended to an in-memory buffer, and
//! one background thread writes the buffer out in one `write` every [`FLUSH_EVERY`] (sooner when
//! it passes [`FLUSH_AT`] bytes). When the buffer holds [`MAX_BUFFERED`] bytes (stderr's reader
//! is slower than the traffic), further lines are dropped and counted
//! (`tollgate_log_lines_dropped_total`) rather than stalling requests behind a write.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
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

/// The writer of JSON lines, once [`init`] installed it: [`access`] writes to it directly.
static JSON_LINES: OnceLock<BatchWriter> = OnceLock::new();

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
        // Colours only for a person at a terminal: a file or a log collector gets plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    // A second init in one process (tests) keeps the first subscriber and its writer.
    if installed.is_err() {
        return LogGuard { writer: None };
    }
    if config.format == LogFormat::Json {
        let _ = JSON_LINES.set(BatchWriter(shared.clone()));
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

/// What the access line of one request says (see `middleware::access_log`).
#[derive(Debug)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The matched route, never the raw path and query.
    pub path: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub key_id: Option<&'a str>,
    pub model: Option<&'a str>,
    pub error_kind: Option<&'a str>,
}

/// The target of the access line, the access log's module, as tracing names it.
const ACCESS_TARGET: &str = "tollgate::middleware::access_log";

/// Writes a request's access line when logs are JSON, formatted here, field by field, into the
/// shape tracing's JSON formatter gives (which cost ~20,000 instructions a line, a tenth of a
/// request). False when logs are text: the caller then logs a tracing event.
pub fn write_json_access(line: &AccessLine<'_>) -> bool {
    let Some(writer) = JSON_LINES.get() else {
        return false;
    };
    let _ = writer
        .clone()
        .write(&json_access_line(line, time::OffsetDateTime::now_utc()));
    true
}

/// The access line as one JSON object and a newline.
fn json_access_line(line: &AccessLine<'_>, now: time::OffsetDateTime) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(320);
    let _ = write!(
        text,
        "{{\"timestamp\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\",\"level\":\"INFO\",\
         \"message\":\"request\"",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    );
    let mut field = |name: &str, value: &str| {
        text.push_str(",\"");
        text.push_str(name);
        text.push_str("\":");
        // Infallible for a string; it escapes what a caller could put in a model name.
        let _ = serde_json::to_string(value).map(|quoted| text.push_str(&quoted));
    };
    field("request.id", line.request_id);
    field("http.method", line.method);
    field("http.path", line.path);
    let optional = [
        ("key.id", line.key_id),
        ("model", line.model),
        ("error.kind", line.error_kind),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            field(name, value);
        }
    }
    let _ = write!(
        text,
        ",\"http.status\":{},\"duration_ms\":{},\"target\":\"",
        line.status,
        line.duration.as_secs_f64() * 1000.0
    );
    text.push_str(ACCESS_TARGET);
    text.push_str("\"}\n");
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_line_is_one_json_object_with_every_field_escaped() {
        let line = AccessLine {
            request_id: "req-1",
            method: "POST",
            path: "/v1/chat/completions",
            status: 200,
            duration: Duration::from_micros(1_250),
            key_id: Some("key_1"),
            model: Some("evil\"},\n{\"x\":1"),
            error_kind: None,
        };
        let now = time::macros::datetime!(2026-12-03 14:05:09.012345 UTC);
        let bytes = json_access_line(&line, now);
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["timestamp"], "2026-12-03T14:05:09.012345Z");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["message"], "request");
        assert_eq!(value["request.id"], "req-1");
        assert_eq!(value["http.method"], "POST");
        assert_eq!(value["http.path"], "/v1/chat/completions");
        assert_eq!(value["http.status"], 200);
        assert_eq!(value["duration_ms"], 1.25);
        assert_eq!(value["key.id"], "key_1");
        assert_eq!(value["model"], "evil\"},\n{\"x\":1");
        assert!(value.get("error.kind").is_none());
        assert_eq!(value["target"], ACCESS_TARGET);
    }
}
