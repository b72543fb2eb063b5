//! OpenTelemetry traces, exported over OTLP (HTTP/protobuf or gRPC) when an endpoint is set
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, see [`TracesConfig`]); off, nothing here costs a request more
//! than one check of a `OnceLock`.
//!
//! Each audited request is one server span (`POST /v1/chat/completions`), opened by the access
//! log layer as the child of the caller's W3C `traceparent` when it sends one, and carrying the
//! GenAI semantic-convention attributes once the answer is known (`gen_ai.request.model`,
//! `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `…output_tokens`) beside Tollgate's
//! own (`tollgate.cost_usd`, `tollgate.cache`, `tollgate.key.id`). Its children are the stages
//! that wait: `tollgate.rate_limit`, `tollgate.budget`, `tollgate.cache`, `tollgate.moderation`,
//! one client span per upstream attempt (`chat gpt-4o-mini`, retries and fallbacks each their
//! own), and `tollgate.record` (the audit record's hand-off). The upstream receives a
//! `traceparent` naming its attempt's span, so the provider's side joins the trace; a caller's
//! `tracestate` and `baggage` are not passed on.

use std::future::Future;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use futures_util::future::Either;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::{OtlpProtocol, TracesConfig};
use crate::records::CallFacts;

/// The tracer, once [`init`] set one up.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are being exported.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Keeps the exporter running; dropping it sends what is buffered (at shutdown).
#[must_use = "spans stop being exported when the guard is dropped"]
pub struct TracesGuard(Option<SdkTracerProvider>);

impl TracesGuard {
    /// Sends the buffered spans and stops the exporter.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.0.take() {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("setting up the OTLP trace exporter: {0}")]
pub struct TracesError(String);

/// Sets up the exporter `config` describes, or does nothing (`Ok(None)`) when no endpoint is
/// set. Must run inside the Tokio runtime (the exporter's batches run on it).
pub fn init(config: &TracesConfig) -> Result<Option<TracesGuard>, TracesError> {
    let Some(endpoint) = &config.endpoint else {
        return Ok(None);
    };
    let headers = config.header_pairs();
    let failed = |e: opentelemetry_otlp::ExporterBuildError| TracesError(e.to_string());
    let exporter = match config.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_headers(headers.into_iter().collect())
            .build()
            .map_err(failed)?,
        OtlpProtocol::Grpc => {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes());
                let value = HeaderValue::from_str(&value);
                let (Ok(name), Ok(value)) = (name, value) else {
                    return Err(TracesError(
                        "an OTLP header is not a valid gRPC metadata entry".to_owned(),
                    ));
                };
                map.insert(name, value);
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map);
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_metadata(metadata);
            if endpoint.starts_with("https://") {
                builder = builder.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_enabled_roots(),
                );
            }
            builder.build().map_err(failed)?
        }
    };
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // A caller's sampled flag is not obeyed: whether a trace is kept is the ratio's call,
        // so no caller can have every one of its requests exported (or none).
        .with_sampler(Sampler::TraceIdRatioBased(config.sample_ratio))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let _ = TRACER.set(provider.tracer("tollgate"));
    tracing::info!(endpoint = %endpoint, protocol = ?config.protocol, "exporting traces over OTLP");
    Ok(Some(TracesGuard(Some(provider))))
}

/// Reads `traceparent` (and `tracestate`) from a request's headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// One request's server span.
pub struct RequestSpan {
    cx: Context,
}

impl RequestSpan {
    /// Opens the span for a request to `route`, the child of the caller's `traceparent` when
    /// it sends a valid one; `None` when traces are off.
    pub fn start(headers: &HeaderMap, method: &str, route: &str) -> Option<Self> {
        let tracer = TRACER.get()?;
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("gen_ai.provider.name", "openai"),
        ];
        let path = route
            .strip_prefix("/v1/")
            .unwrap_or(route.trim_start_matches('/'));
        if let Some(operation) = operation_of(path) {
            attributes.push(KeyValue::new("gen_ai.operation.name", operation));
        }
        let span = tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        Some(Self {
            cx: parent.with_span(span),
        })
    }

    /// The context the request's stages run in (their spans are this span's children).
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// Notes the outcome and what the call came to (the span stays open: the record's hand-off
    /// is its last child).
    pub fn note(&self, status: u16, error_kind: Option<&str>, facts: Option<&CallFacts>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(kind) = error_kind {
            span.set_attribute(KeyValue::new("error.type", kind.to_owned()));
        }
        if status >= 500 {
            span.set_status(Status::error(
                error_kind.unwrap_or("server error").to_owned(),
            ));
        }
        if let Some(facts) = facts {
            let usage = &facts.usage;
            let mut attributes = vec![
                KeyValue::new("gen_ai.usage.input_tokens", saturate(usage.prompt_tokens)),
                KeyValue::new(
                    "gen_ai.usage.output_tokens",
                    saturate(usage.completion_tokens),
                ),
                KeyValue::new("tollgate.caller", facts.caller),
            ];
            let optional = [
                ("gen_ai.request.model", facts.model_requested.as_deref()),
                ("gen_ai.response.model", facts.model_used.as_deref()),
                ("tollgate.key.id", facts.key_id.as_deref()),
                ("tollgate.cache", facts.cache_status),
                ("tollgate.upstream", facts.upstream.as_deref()),
            ];
            for (name, value) in optional {
                if let Some(value) = value {
                    attributes.push(KeyValue::new(name, value.to_owned()));
                }
            }
            if let Some(nanos) = facts.cost_nanos {
                attributes.push(KeyValue::new("tollgate.cost_usd", nanos as f64 / 1e9));
            }
            span.set_attributes(attributes);
        }
    }

    /// Ends the span.
    pub fn end(self) {
        self.cx.span().end();
    }
}

/// The GenAI operation (semantic conventions' `gen_ai.operation.name`) of an API path.
fn operation_of(path: &str) -> Option<&'static str> {
    match path {
        "chat/completions" | "responses" | "api/ai/generate" => Some("chat"),
        "embeddings" => Some("embeddings"),
        "completions" => Some("text_completion"),
        _ => None,
    }
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `work` inside a child span named `name` of the current request's span (the span ends when
/// the future is dropped, as soon as it is done); just `work` when traces are off or no request
/// span is current. Not an `async fn`: the returned future is `work` plus a context, not a
/// second copy of `work` (the pipeline's futures are moved whole, so their size is copying).
pub fn stage<F: Future>(name: &'static str, work: F) -> Either<F, WithContext<F>> {
    if TRACER.get().is_none() {
        return Either::Left(work);
    }
    stage_in(&Context::current(), name, work)
}

/// [`stage`] under `parent` rather than the current context (work started outside the
/// request's poll, such as the record's hand-off after the response).
pub fn stage_in<F: Future>(
    parent: &Context,
    name: &'static str,
    work: F,
) -> Either<F, WithContext<F>> {
    let Some(tracer) = TRACER.get() else {
        return Either::Left(work);
    };
    if !parent.has_active_span() {
        return Either::Left(work);
    }
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .start_with_context(tracer, parent);
    Either::Right(work.with_context(parent.with_span(span)))
}

/// One upstream attempt's client span.
pub struct AttemptSpan {
    cx: Context,
}

impl AttemptSpan {
    /// Opens a span for an attempt at `path` (for `model`, when the call names one) on `host`;
    /// `None` when traces are off or no request span is current.
    pub fn start(method: &str, path: &str, model: Option<&str>, host: &str) -> Option<Self> {
        let tracer = TRACER.get()?;
        let parent = Context::current();
        if !parent.has_active_span() {
            return None;
        }
        let operation = operation_of(path);
        let name = match (operation, model) {
            (Some(operation), Some(model)) => format!("{operation} {model}"),
            _ => format!("{method} {path}"),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("server.address", host.to_owned()),
            KeyValue::new("gen_ai.provider.name", "openai"),
        ];
        if let Some(operation) = operation {
            attributes.push(KeyValue::new("gen_ai.operation.name", operation));
        }
        if let Some(model) = model {
            attributes.push(KeyValue::new("gen_ai.request.model", model.to_owned()));
        }
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        Some(Self {
            cx: parent.with_span(span),
        })
    }

    /// Adds `traceparent` naming this attempt's span (and nothing else: no `tracestate`).
    pub fn inject(&self, headers: &mut HeaderMap) {
        let span = self.cx.span();
        let context = span.span_context();
        let value = format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static("traceparent"), value);
        }
    }

    /// Ends the span with the upstream's status, or the way the attempt failed.
    pub fn finish(self, outcome: Result<u16, &str>) {
        let span = self.cx.span();
        match outcome {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 400 {
                    span.set_status(Status::error(format!("HTTP {status}")));
                }
            }
            Err(kind) => {
                span.set_attribute(KeyValue::new("error.type", kind.to_owned()));
                span.set_status(Status::error(kind.to_owned()));
            }
        }
        span.end();
    }
}
