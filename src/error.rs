//! `GatewayError`: every row of DESIGN.md's error table, rendered one way.
//!
//! Which error type where:
//! - request handling (routes, pipeline, middleware) returns `GatewayError`; its one
//!   `IntoResponse` writes OpenAI's `{"error": {message, type, param, code}}` envelope, so every
//!   SDK parses it into its typed exceptions;
//! - modules keep small enums (`StoreError`, `ConfigError`) and convert with `From`;
//! - `anyhow` is only for `main.rs` and `cli/`.
//!
//! A message never carries a header, a key, an upstream body we did not vet, or an internal
//! detail: a 500 says "internal error" and the request id, and the cause is logged once.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::middleware::request_id;

/// One variant per row of the error table. Details stay out of messages unless they are the
/// caller's own input (a field name, a model name).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Malformed JSON, a wrong type, a missing field or a value out of range.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// A body-carrying request without a supported `Content-Type`.
    #[error("unsupported content type")]
    UnsupportedMediaType { expected: &'static str },
    /// The body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge { limit_bytes: usize },
    /// The body did not arrive in time (a whole JSON body past `server.body_read_timeout_ms`,
    /// an upload slower than `server.upload_min_bytes_per_sec`).
    #[error("request body too slow")]
    RequestTimeout,
    /// Missing, unknown, revoked or expired credentials.
    #[error("authentication failed: {reason}")]
    Unauthenticated { reason: &'static str },
    /// The key may not use this model.
    #[error("model not allowed")]
    ModelNotAllowed { model: String },
    /// The request is well-formed and authenticated, but not permitted (e.g. origin).
    #[error("{message}")]
    PermissionDenied { message: String },
    /// The request is sound but the server's state refuses it (a reload the running
    /// configuration cannot take).
    #[error("{message}")]
    Conflict { message: String },
    /// No route answers this path.
    #[error("not found")]
    NotFound { method: String, path: String },
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed { method: String, path: String },
    /// One of Tollgate's own rate limits is exhausted.
    #[error("rate limited")]
    RateLimited {
        retry_after_secs: u64,
        message: String,
    },
    /// A budget would go over: the request's worst-case cost does not fit what is left.
    /// A content rule refused the prompt (`deny`, `max_prompt_chars`, moderation).
    #[error("{message}")]
    ContentPolicy {
        message: String,
        param: Option<String>,
    },
    #[error("budget exceeded")]
    InsufficientQuota { message: String },
    /// The upstream refused the request itself (400, 404, 409, 422, ...): its own envelope is
    /// passed on with its status, since it describes the caller's input.
    #[error("upstream rejected the request with {status}")]
    UpstreamRejected { status: StatusCode, body: Bytes },
    /// The upstream refused Tollgate's own key (401/403). Never says anything of the key.
    #[error("upstream refused the gateway's credentials ({status})")]
    UpstreamAuth { status: StatusCode },
    /// The upstream kept answering 429 after every retry.
    #[error("upstream rate limited")]
    UpstreamRateLimited { retry_after: Option<HeaderValue> },
    /// The upstream kept failing (5xx) after every retry, or sent a body we could not read.
    #[error("upstream failed ({detail})")]
    UpstreamFailed { detail: String },
    /// The upstream did not answer within the configured time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream could not be reached at all (connect error, DNS).
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    /// A dependency of Tollgate itself (the key store) is unavailable.
    #[error("service unavailable: {what}")]
    Unavailable { what: &'static str },
    /// Anything else. The cause is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The parts of an error a renderer needs; kept in the response's extensions so that a route
/// with its own error shape (the seeds' `/api/ai/generate`) can render it again.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// Human-readable, safe to show.
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, ...
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// OpenAI's `code`: `invalid_api_key`, `rate_limit_exceeded`, ...
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorBody,
}

impl GatewayError {
    /// Whether the next upstream target may be tried after this error: 5xx, 429, timeouts and
    /// connect errors; never a request the upstream rejected on its merits.
    pub fn allows_fallback(&self) -> bool {
        matches!(
            self,
            Self::UpstreamFailed { .. }
                | Self::UpstreamRateLimited { .. }
                | Self::UpstreamTimeout
                | Self::UpstreamUnreachable
        )
    }
}

impl GatewayError {
    /// The upstream's `Retry-After`, as passed on to the caller.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let Self::UpstreamRateLimited {
            retry_after: Some(value),
        } = self
        else {
            return None;
        };
        let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
        Some(std::time::Duration::from_secs(seconds))
    }

    /// Shorthand for a 400 naming the field at fault.
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: param.into(),
        }
    }

    /// The HTTP status of this row of the error table.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::ModelNotAllowed { .. } | Self::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::ContentPolicy { .. } => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpstreamRejected { status, .. } => *status,
            Self::UpstreamAuth { .. } | Self::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamRateLimited { .. }
            | Self::RateLimited { .. }
            | Self::InsufficientQuota { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamUnreachable | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::InsufficientQuota { .. } => "insufficient_quota",
            Self::ContentPolicy { .. } => "content_policy",
            Self::UpstreamRejected { .. } => "upstream_rejected",
            Self::UpstreamAuth { .. } => "upstream_auth",
            Self::UpstreamRateLimited { .. } => "upstream_rate_limited",
            Self::UpstreamFailed { .. } => "upstream_failed",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The envelope's contents. Only caller-supplied facts (field names, model names, methods
    /// and paths) are echoed.
    pub fn body(&self) -> ErrorBody {
        let (message, kind, param, code): (String, &'static str, Option<String>, Option<&'static str>) = match self {
            Self::InvalidRequest { message, param } => {
                (message.clone(), "invalid_request_error", param.clone(), None)
            }
            Self::UnsupportedMediaType { expected } => (
                format!("Unsupported Content-Type: this route expects {expected}."),
                "invalid_request_error",
                None,
                Some("unsupported_media_type"),
            ),
            Self::RequestTimeout => (
                "The request body did not arrive in time.".to_owned(),
                "invalid_request_error",
                None,
                Some("request_timeout"),
            ),
            Self::PayloadTooLarge { limit_bytes } => (
                format!("The request body is larger than the limit of {limit_bytes} bytes."),
                "invalid_request_error",
                None,
                Some("request_too_large"),
            ),
            Self::Unauthenticated { reason } => {
                (format!("Incorrect or missing API key: {reason}."), "authentication_error", None, Some("invalid_api_key"))
            }
            Self::ModelNotAllowed { model } => (
                format!("This key may not use the model `{model}`."),
                "permission_error",
                Some("model".to_owned()),
                Some("model_not_allowed"),
            ),
            Self::PermissionDenied { message } => (message.clone(), "permission_error", None, None),
            Self::Conflict { message } => (
                message.clone(),
                "invalid_request_error",
                None,
                Some("conflict"),
            ),
            Self::NotFound { method, path } => (
                format!("Invalid URL ({method} {path})"),
                "invalid_request_error",
                None,
                Some("not_found"),
            ),
            Self::MethodNotAllowed { method, path } => (
                format!("Method {method} is not allowed for {path}."),
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
            Self::RateLimited { message, .. } => {
                (message.clone(), "rate_limit_error", None, Some("rate_limit_exceeded"))
            }
            Self::ContentPolicy { message, param } => (
                message.clone(),
                "invalid_request_error",
                param.clone(),
                Some("content_policy_violation"),
            ),
            Self::InsufficientQuota { message } => {
                (message.clone(), "insufficient_quota", None, Some("insufficient_quota"))
            }
            Self::UpstreamRejected { status, .. } => (
                format!("The upstream rejected the request ({}).", status.as_u16()),
                "invalid_request_error",
                None,
                None,
            ),
            Self::UpstreamAuth { .. } => (
                "The upstream provider refused the gateway's credentials; the operator has been told.".to_owned(),
                "upstream_error",
                None,
                Some("upstream_auth_failed"),
            ),
            Self::UpstreamRateLimited { .. } => (
                "The upstream provider is rate limiting requests; retry after the time in Retry-After.".to_owned(),
                "rate_limit_error",
                None,
                Some("rate_limit_exceeded"),
            ),
            Self::UpstreamFailed { .. } => (
                "The upstream provider failed to answer the request.".to_owned(),
                "upstream_error",
                None,
                Some("upstream_failed"),
            ),
            Self::UpstreamTimeout => (
                "The upstream provider did not answer in time.".to_owned(),
                "upstream_error",
                None,
                Some("upstream_timeout"),
            ),
            Self::UpstreamUnreachable => (
                "The upstream provider could not be reached.".to_owned(),
                "upstream_error",
                None,
                Some("upstream_unreachable"),
            ),
            Self::Unavailable { what } => {
                (format!("The gateway's {what} is unavailable; try again shortly."), "server_error", None, Some("unavailable"))
            }
            Self::Internal(_) => (internal_message(), "server_error", None, Some("internal_error")),
        };
        ErrorBody {
            message,
            kind,
            param,
            code,
        }
    }
}

/// The message of every 500: no internals, only the request id to quote to the operator.
pub fn internal_message() -> String {
    match request_id::current() {
        Some(id) => {
            format!("The gateway hit an internal error. Quote request id {id} to the operator.")
        }
        None => "The gateway hit an internal error.".to_owned(),
    }
}

/// Renders an error body in OpenAI's envelope with the given status.
pub fn envelope_response(status: StatusCode, body: ErrorBody) -> Response {
    let json = serde_json::to_vec(&Envelope { error: &body }).unwrap_or_default();
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response();
    response.extensions_mut().insert(Arc::new(body));
    response
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = self.kind();
        match &self {
            Self::Internal(cause) => {
                tracing::error!(error.kind = self.kind(), error.cause = %cause, "internal error")
            }
            Self::UpstreamAuth { status } => tracing::error!(
                upstream.status = status.as_u16(),
                "the upstream refused the gateway's credentials: check OPENAI_API_KEY"
            ),
            Self::UpstreamFailed { detail } => {
                tracing::warn!(error.cause = %detail, "upstream failed")
            }
            _ => {}
        }
        let mut response = match self {
            // The upstream's own envelope describes the caller's mistake: pass it on unchanged when it
            // is an OpenAI envelope, otherwise wrap a neutral message in ours.
            Self::UpstreamRejected { status, ref body } if is_error_envelope(body) => {
                let mut response = (
                    status,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body.clone(),
                )
                    .into_response();
                response.extensions_mut().insert(Arc::new(self.body()));
                response
            }
            ref other => envelope_response(status, other.body()),
        };
        match self {
            Self::UpstreamRateLimited {
                retry_after: Some(value),
            } => {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Self::RateLimited {
                retry_after_secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            // Retrying cannot help until the budget's period starts over: tell the SDKs (which
            // retry 429s by themselves) not to.
            Self::InsufficientQuota { .. } => {
                response.headers_mut().insert(
                    axum::http::HeaderName::from_static("x-should-retry"),
                    HeaderValue::from_static("false"),
                );
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorKind(kind));
        response
    }
}

/// Marks a response as an error for the access log and metrics; the label is low-cardinality.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

fn is_error_envelope(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        error: serde_json::Map<String, serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|probe| probe.error.contains_key("message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_matches_the_design_table() {
        let rows: Vec<(GatewayError, u16, &str)> = vec![
            (
                GatewayError::invalid("bad", Some("model".into())),
                400,
                "invalid_request_error",
            ),
            (
                GatewayError::UnsupportedMediaType {
                    expected: "application/json",
                },
                415,
                "invalid_request_error",
            ),
            (
                GatewayError::PayloadTooLarge { limit_bytes: 1 },
                413,
                "invalid_request_error",
            ),
            (GatewayError::RequestTimeout, 408, "invalid_request_error"),
            (
                GatewayError::Unauthenticated { reason: "missing" },
                401,
                "authentication_error",
            ),
            (
                GatewayError::ModelNotAllowed { model: "x".into() },
                403,
                "permission_error",
            ),
            (
                GatewayError::UpstreamAuth {
                    status: StatusCode::UNAUTHORIZED,
                },
                502,
                "upstream_error",
            ),
            (
                GatewayError::UpstreamRateLimited { retry_after: None },
                429,
                "rate_limit_error",
            ),
            (
                GatewayError::InsufficientQuota {
                    message: "over".into(),
                },
                429,
                "insufficient_quota",
            ),
            (
                GatewayError::UpstreamFailed {
                    detail: "500".into(),
                },
                502,
                "upstream_error",
            ),
            (GatewayError::UpstreamTimeout, 504, "upstream_error"),
            (GatewayError::UpstreamUnreachable, 503, "upstream_error"),
            (GatewayError::Internal("boom".into()), 500, "server_error"),
        ];
        for (error, status, kind) in rows {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.body().kind, kind, "{error:?}");
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let body = GatewayError::Internal("password=hunter2".into()).body();
        assert!(!body.message.contains("hunter2"));
    }

    #[test]
    fn upstream_envelopes_are_recognised() {
        assert!(is_error_envelope(
            br#"{"error":{"message":"bad","type":"x"}}"#
        ));
        assert!(!is_error_envelope(b"<html>"));
    }
}
