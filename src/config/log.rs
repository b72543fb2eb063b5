//! `[log]`: verbosity and format of the log lines.

use serde::Serialize;

use super::source::Sources;

/// Machine-readable JSON lines (the default) or human-readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// Log filter and format.
#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    /// `TOLLGATE_LOG`: an `EnvFilter` directive such as `info` or `tollgate=debug`.
    pub filter: String,
    /// `TOLLGATE_LOG_FORMAT`: `json` or `text`.
    pub format: LogFormat,
}

impl LogConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let filter = s.get("log.level", Some("TOLLGATE_LOG"), "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&filter).is_err() {
            s.invalid(
                "log.level",
                Some("TOLLGATE_LOG"),
                format!("not a valid log filter: {filter:?}"),
            );
        }
        let format = match s
            .get("log.format", Some("TOLLGATE_LOG_FORMAT"), "json".to_owned())
            .as_str()
        {
            "json" => LogFormat::Json,
            "text" | "pretty" => LogFormat::Text,
            other => {
                s.invalid(
                    "log.format",
                    Some("TOLLGATE_LOG_FORMAT"),
                    format!("expected json or text, got {other:?}"),
                );
                LogFormat::Json
            }
        };
        Self { filter, format }
    }
}
