//! `[log]`: verbosity and format of the log lines; `[traces]`: where OpenTelemetry traces go.

use secrecy::SecretString;

use super::source::Sources;

/// Machine-readable JSON lines (the default) or human-readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Log filter and format.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `TOLLGATE_LOG`: an `EnvFilter` directive such as `info` or `tollgate=debug`.
    pub filter: String,
    /// `TOLLGATE_LOG_FORMAT`: `json` or `text`.
    pub format: LogFormat,
    /// `[traces]`: OTLP export, off unless an endpoint is set.
    pub traces: TracesConfig,
}

/// How spans are sent to an OTLP collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the OpenTelemetry default): POST to `…/v1/traces`.
    HttpProtobuf,
    /// `grpc`: the collector's `TraceService/Export`.
    Grpc,
}

/// OpenTelemetry traces, read from the standard `OTEL_*` variables (or `[traces]`).
#[derive(Debug, Clone)]
pub struct TracesConfig {
    /// Where spans go, complete: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/traces` appended for HTTP). `None`: off.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (default) or `grpc`.
    pub protocol: OtlpProtocol,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value,…` sent with every export (a collector's
    /// credentials, so a secret).
    pub headers: Option<SecretString>,
    /// `OTEL_SERVICE_NAME`: the `service.name` resource attribute.
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER_ARG` / `traces.sample_ratio`: the share of new traces kept (a
    /// caller's `traceparent` decides for the traces it starts).
    pub sample_ratio: f64,
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
        Self {
            filter,
            format,
            traces: TracesConfig::read(s),
        }
    }
}

impl TracesConfig {
    /// `headers` as name and value pairs (checked when read).
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .as_ref()
            .and_then(|h| parse_headers(secrecy::ExposeSecret::expose_secret(h)))
            .unwrap_or_default()
    }

    fn read(s: &mut Sources<'_>) -> Self {
        let protocol = match s
            .get(
                "traces.protocol",
                Some("OTEL_EXPORTER_OTLP_PROTOCOL"),
                "http/protobuf".to_owned(),
            )
            .as_str()
        {
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "grpc" => OtlpProtocol::Grpc,
            other => {
                s.invalid(
                    "traces.protocol",
                    Some("OTEL_EXPORTER_OTLP_PROTOCOL"),
                    format!("expected http/protobuf or grpc, got {other:?}"),
                );
                OtlpProtocol::HttpProtobuf
            }
        };
        let exact: Option<String> = s.optional_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base: Option<String> =
            s.optional("traces.endpoint", Some("OTEL_EXPORTER_OTLP_ENDPOINT"));
        // Both are checked, whichever is in force: each is logged and shown by `config check`,
        // so credentials go in the headers, which are a secret.
        for candidate in [exact.as_deref(), base.as_deref()].into_iter().flatten() {
            match url::Url::parse(candidate) {
                Ok(url) if !matches!(url.scheme(), "http" | "https") => s.invalid(
                    "traces.endpoint",
                    Some("OTEL_EXPORTER_OTLP_ENDPOINT"),
                    "expected an http:// or https:// URL",
                ),
                Ok(url) if !url.username().is_empty() || url.password().is_some() => s.invalid(
                    "traces.endpoint",
                    Some("OTEL_EXPORTER_OTLP_ENDPOINT"),
                    "no credentials in the URL: put them in OTEL_EXPORTER_OTLP_HEADERS",
                ),
                Ok(_) => {}
                Err(_) => s.invalid(
                    "traces.endpoint",
                    Some("OTEL_EXPORTER_OTLP_ENDPOINT"),
                    "expected an http:// or https:// URL",
                ),
            }
        }
        let endpoint = exact.or_else(|| {
            base.map(|base| match protocol {
                OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                OtlpProtocol::Grpc => base,
            })
        });
        let headers: Option<SecretString> =
            s.optional("traces.headers", Some("OTEL_EXPORTER_OTLP_HEADERS"));
        if let Some(headers) = &headers
            && parse_headers(secrecy::ExposeSecret::expose_secret(headers)).is_none()
        {
            s.invalid(
                "traces.headers",
                Some("OTEL_EXPORTER_OTLP_HEADERS"),
                "expected name=value pairs separated by commas",
            );
        }
        let sample_ratio = s.get(
            "traces.sample_ratio",
            Some("OTEL_TRACES_SAMPLER_ARG"),
            1.0f64,
        );
        if !(0.0..=1.0).contains(&sample_ratio) {
            s.invalid(
                "traces.sample_ratio",
                Some("OTEL_TRACES_SAMPLER_ARG"),
                "must be from 0 to 1",
            );
        }
        Self {
            endpoint,
            protocol,
            headers,
            service_name: s.get(
                "traces.service_name",
                Some("OTEL_SERVICE_NAME"),
                "tollgate".to_owned(),
            ),
            sample_ratio,
        }
    }
}

/// `name=value,name=value` (values percent-decoded, as the OpenTelemetry specification says);
/// `None` when malformed.
fn parse_headers(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim();
            let value = percent_decode(value.trim())?;
            (!name.is_empty()).then(|| (name.to_owned(), value))
        })
        .collect()
}

/// `%XX` sequences decoded (and nothing else: a `+` stays a `+`, as in a base64 token).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    fn traces(env: &[(&str, &str)]) -> Result<TracesConfig, Vec<String>> {
        let mut vars: Env = env.iter().copied().collect();
        vars.set("OPENAI_API_KEY", "sk-test");
        Config::from_toml_str("t.toml", "", &vars)
            .map(|c| c.log.traces)
            .map_err(|e| e.0)
    }

    #[test]
    fn the_standard_variables_name_the_endpoint_protocol_and_headers() {
        assert_eq!(traces(&[]).unwrap().endpoint, None);
        let http = traces(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap();
        assert_eq!(
            http.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(http.protocol, OtlpProtocol::HttpProtobuf);
        let grpc = traces(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap();
        assert_eq!(grpc.endpoint.as_deref(), Some("https://collector:4317"));
        let exact = traces(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4318/custom",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=a+b%3D%3D, team = core",
            ),
        ])
        .unwrap();
        assert_eq!(
            exact.endpoint.as_deref(),
            Some("http://collector:4318/custom")
        );
        assert_eq!(
            exact.header_pairs(),
            vec![
                ("x-api-key".to_owned(), "a+b==".to_owned()),
                ("team".to_owned(), "core".to_owned())
            ]
        );
        assert!(!format!("{exact:?}").contains("a+b"), "headers are secret");
    }

    #[test]
    fn a_bad_endpoint_protocol_header_or_ratio_is_refused_without_echoing_the_headers() {
        for (env, says) in [
            (
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
                "http:// or https://",
            ),
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                "http/protobuf or grpc",
            ),
            (
                ("OTEL_EXPORTER_OTLP_HEADERS", "token-without-value-s3cret"),
                "name=value",
            ),
            (("OTEL_TRACES_SAMPLER_ARG", "2"), "from 0 to 1"),
            (
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "https://user:s3cret@collector:4318",
                ),
                "no credentials in the URL",
            ),
        ] {
            let errors = traces(&[env]).unwrap_err().join("\n");
            assert!(errors.contains(says), "{errors}");
            assert!(!errors.contains("s3cret"), "{errors}");
        }
    }
}
