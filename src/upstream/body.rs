//! What is sent upstream: a buffered body (retryable) or the caller's, streamed (sent once),
//! which says when it has been sent in full.

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::GatewayError;

/// The body sent upstream: buffered (retryable) or streamed from the caller (not retryable).
pub enum OutgoingBody {
    Empty,
    Buffered(Bytes),
    Streamed(StreamedBody),
}

/// A caller's body streamed through, and the signal that it has been sent in full: the call's
/// deadline runs from then, since an upload takes the caller's time (its pace is held by
/// `extract::Paced`).
pub struct StreamedBody {
    pub(super) body: axum::body::Body,
    pub(super) sent: watch::Receiver<bool>,
}

impl OutgoingBody {
    /// `body` streamed from the caller to the upstream.
    pub fn streamed(body: axum::body::Body) -> Self {
        let (signal, sent) = watch::channel(false);
        let stream = SignalEnd {
            inner: body.into_data_stream(),
            signal: Some(signal),
        };
        Self::Streamed(StreamedBody {
            body: axum::body::Body::from_stream(stream),
            sent,
        })
    }
}

/// A body stream that says when it has ended.
struct SignalEnd {
    inner: axum::body::BodyDataStream,
    signal: Option<watch::Sender<bool>>,
}

impl futures_util::Stream for SignalEnd {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(None) = next
            && let Some(signal) = self.signal.take()
        {
            let _ = signal.send(true);
        }
        next
    }
}

/// The same JSON with `model` replaced (an alias's target); every other value kept as sent.
pub(super) fn with_model(body: &[u8], model: &str) -> Result<Bytes, GatewayError> {
    let name = serde_json::to_string(model).map_err(|e| GatewayError::Internal(e.to_string()))?;
    crate::openai::requests::with_field(body, "model", &name)
}
