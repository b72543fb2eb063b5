//! Reading request bodies: our own JSON extractor, so that every body problem is a 400, 413
//! or 415 in OpenAI's envelope (axum's `Json` answers 422 for well-formed JSON of the wrong
//! shape, and plain-text rejections).
//!
//! [`JsonBody`] reads the raw bytes (the pipeline forwards them untouched); [`decode`] reads the
//! few fields a stage needs and names the field at fault in `param`.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::error::GatewayError;
use crate::middleware::content_type::media_type;
use crate::state::AppState;

/// A JSON request body, checked for type and size, not yet parsed.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !media_type(&request).is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
            return Err(GatewayError::UnsupportedMediaType {
                expected: "application/json",
            });
        }
        let bytes = read_limited(request, &state.config.server).await?;
        if bytes.is_empty() {
            return Err(GatewayError::invalid(
                "The request body is empty; expected a JSON object.",
                None,
            ));
        }
        Ok(Self(bytes))
    }
}

/// A JSON body parsed into `T` (admin routes and other bodies we own entirely).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let JsonBody(bytes) = JsonBody::from_request(request, state).await?;
        decode(&bytes).map(Self)
    }
}

/// Reads a whole body, refusing (413) one over `server.body_limit_bytes`: at once when
/// `Content-Length` says so, otherwise as soon as the stream passes it. The whole body must
/// arrive within `server.body_read_timeout` (408), so a client sending a byte a second cannot
/// hold a connection and a task.
pub async fn read_limited(request: Request, server: &ServerConfig) -> Result<Bytes, GatewayError> {
    let limit = server.body_limit_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit_bytes: limit });
    }
    let read = axum::body::to_bytes(request.into_body(), limit);
    let read = tokio::time::timeout(server.body_read_timeout, read)
        .await
        .map_err(|_| GatewayError::RequestTimeout)?;
    read.map_err(|error| {
        if std::error::Error::source(&error)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || error.to_string().contains("length limit")
        {
            GatewayError::PayloadTooLarge { limit_bytes: limit }
        } else {
            GatewayError::invalid("The request body could not be read completely.", None)
        }
    })
}

/// A streamed upload held to a minimum pace: after `server.body_read_timeout` of grace it must
/// average `server.upload_min_bytes_per_sec`, or it ends with [`BodyTooSlow`] (which the
/// upstream call turns into a 408). Nothing is buffered.
pub struct Paced<B> {
    inner: B,
    started: Instant,
    received: u64,
    grace: Duration,
    min_bytes_per_sec: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// The error a [`Paced`] body ends with when its sender falls behind.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct BodyTooSlow;

impl<B> Paced<B> {
    /// Paces `inner` by the server's settings.
    pub fn new(inner: B, server: &ServerConfig) -> Self {
        let started = Instant::now();
        Self {
            inner,
            started,
            received: 0,
            grace: server.body_read_timeout,
            min_bytes_per_sec: server.upload_min_bytes_per_sec.max(1),
            deadline: Box::pin(tokio::time::sleep_until(started + server.body_read_timeout)),
        }
    }

    /// When the bytes received so far stop being enough.
    fn next_deadline(&self) -> Instant {
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_bytes_per_sec as f64);
        self.started + self.grace + earned
    }
}

impl<B> http_body::Body for Paced<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    let next = self.next_deadline();
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTooSlow)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (or anything that caused it) is a [`BodyTooSlow`].
pub fn is_too_slow(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<BodyTooSlow>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Parses `bytes` as `T`, turning serde's complaint into a 400 that names the field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let param = (!syntax && path != "." && path != "?").then_some(path);
        let message = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("We could not parse the JSON body of your request: {inner}.")
            }
            serde_json::error::Category::Data => match &param {
                Some(field) => format!(
                    "Invalid value for '{field}': {}.",
                    strip_position(&inner.to_string())
                ),
                None => format!(
                    "Invalid request body: {}.",
                    strip_position(&inner.to_string())
                ),
            },
            serde_json::error::Category::Io => "The request body could not be read.".to_owned(),
        };
        GatewayError::InvalidRequest { message, param }
    })?;
    deserializer.end().map_err(|_| {
        GatewayError::invalid(
            "We could not parse the JSON body of your request: trailing characters.",
            None,
        )
    })?;
    Ok(value)
}

/// serde's messages end in "at line 1 column 15", which means nothing to a caller of a JSON API.
fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[expect(dead_code, reason = "fields exist to be type-checked")]
    struct Probe {
        model: String,
        n: Option<u32>,
    }

    #[test]
    fn wrong_types_name_their_field() {
        let GatewayError::InvalidRequest { message, param } =
            decode::<Probe>(br#"{"model": 3}"#).unwrap_err()
        else {
            panic!("expected invalid request")
        };
        assert_eq!(param.as_deref(), Some("model"));
        assert!(message.contains("expected a string"), "{message}");
    }

    #[test]
    fn missing_fields_and_bad_syntax_are_400s() {
        let GatewayError::InvalidRequest { message, .. } =
            decode::<Probe>(br#"{"n": 1}"#).unwrap_err()
        else {
            panic!()
        };
        assert!(message.contains("missing field `model`"), "{message}");
        let GatewayError::InvalidRequest { message, param } =
            decode::<Probe>(br#"{"model": "x""#).unwrap_err()
        else {
            panic!()
        };
        assert!(message.starts_with("We could not parse"), "{message}");
        assert_eq!(param, None);
    }
}
