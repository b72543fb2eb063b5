//! Multipart uploads to model operations (`/v1/audio/transcriptions`, `/v1/images/edits`,
//! ...): the model and cost fields are checked although the form streams through unbuffered.
//!
//! The form's fields may come after its file (OpenAI's Node SDK sends them in the order the
//! caller wrote them, `file` first), so they cannot all be known before forwarding starts.
//! Instead the upload is forwarded as it arrives while [`FormScanner`] reads it, but its last
//! bytes (the closing delimiter) are held back. Without them the upstream has no complete
//! request and acts on nothing. When the form has been read, its fields go to the pipeline,
//! which runs its checks; only on [`Upload::release`] do the last bytes go out. A refusal
//! drops the release, and the upstream request fails unfinished.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use tokio::sync::oneshot;

use super::Call;
use crate::error::GatewayError;
use crate::openai::multipart::{self, FormError, FormScanner};
use crate::openai::operations::Governance;
use crate::openai::requests::RequestFacts;
use crate::state::AppState;
use crate::upstream::{OutgoingBody, Routed, UpstreamRequest};

/// A form as read: the fields the gateway checks, and its size (an audio upload's bounds its
/// length, and so its price).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub fields: std::collections::BTreeMap<String, String>,
    pub bytes: u64,
}

/// The form of an upload, or why it could not be read.
pub type Fields = Result<Form, FormError>;

/// The pipeline's side of a held upload.
pub struct Upload {
    fields: oneshot::Receiver<Fields>,
    release: oneshot::Sender<()>,
}

/// Why an upload body ended early.
#[derive(Debug, thiserror::Error)]
#[error("the upload was refused by the gateway")]
struct Refused;

impl Upload {
    /// Wraps `body` (a form with this boundary): the body to forward, and the handle that
    /// learns its fields and releases its end.
    pub fn hold(body: Body, boundary: &str) -> (Body, Self) {
        let (fields_tx, fields) = oneshot::channel();
        let (release, released) = oneshot::channel();
        let held = Held {
            inner: body,
            hold: boundary.len() + 8,
            scanner: Some(FormScanner::new(boundary)),
            tail: BytesMut::new(),
            fields: Some(fields_tx),
            released: Some(released),
            ended: false,
            bytes: 0,
        };
        (Body::new(held), Self { fields, release })
    }

    /// Waits for the form to be read; `None` when the body failed before its end.
    #[cfg(test)]
    async fn fields(&mut self) -> Option<Fields> {
        (&mut self.fields).await.ok()
    }

    #[cfg(test)]
    fn release(self) {
        let _ = self.release.send(());
    }
}

/// An upload on its way upstream, its end held back until [`InFlight::finish`].
pub struct InFlight {
    release: oneshot::Sender<()>,
    sending: tokio::task::JoinHandle<Result<Routed, GatewayError>>,
}

/// Starts sending `request` (whose body is the held form) to the default upstream and waits
/// until the form has been read. Returns the fields (or why they could not be read
/// unambiguously) and the call in flight.
async fn start(
    state: &AppState,
    upload: Upload,
    request: UpstreamRequest,
) -> Result<(Fields, InFlight), GatewayError> {
    let Upload {
        fields: mut fields_rx,
        release,
    } = upload;
    let sender = state.clone();
    let mut sending = state.tasks.spawn(async move {
        let targets = sender.upstream.targets(None);
        sender
            .upstream
            .send_routed(&targets, None, 0, request)
            .await
    });
    let fields = tokio::select! {
        fields = &mut fields_rx => fields.ok(),
        sent = &mut sending => {
            // The call ended before the form did: the upstream refused it early, or the
            // caller's body failed (a slow upload is a 408 from `send`).
            return Err(match sent {
                Ok(Err(error)) => error,
                Ok(Ok(_)) => GatewayError::UpstreamFailed {
                    detail: "the upstream answered before the upload ended".to_owned(),
                },
                Err(error) => GatewayError::Internal(error.to_string()),
            });
        }
    };
    let Some(fields) = fields else {
        // The body failed before its end: the call's own error says why.
        drop(release);
        return Err(match sending.await {
            Ok(Err(error)) => error,
            Ok(Ok(_)) => GatewayError::invalid("The upload ended unexpectedly.", None),
            Err(error) => GatewayError::Internal(error.to_string()),
        });
    };
    Ok((fields, InFlight { release, sending }))
}

impl InFlight {
    /// Releases the form's end and waits for the upstream's answer.
    pub async fn finish(self) -> Result<Routed, GatewayError> {
        let _ = self.release.send(());
        match self.sending.await {
            Ok(sent) => sent,
            Err(error) => Err(GatewayError::Internal(error.to_string())),
        }
    }
}

/// The validate stage for a streamed body. A form to a model operation starts upstream now,
/// its end held back, so that its fields can be read as it streams; every later check runs
/// before that end is released. Any other streamed body (a file upload) goes as it comes.
pub async fn begin(call: &mut Call, state: &AppState, body: Body) -> Result<(), GatewayError> {
    let model_route = call
        .operation
        .as_deref()
        .is_some_and(|op| op.governance == Governance::Model);
    let content_type = call
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = match multipart::boundary(content_type) {
        Ok(boundary) if model_route => boundary,
        boundary => {
            call.form_unread = model_route && boundary.is_err();
            call.body = OutgoingBody::streamed(body);
            return Ok(());
        }
    };
    let (held, upload) = Upload::hold(body, &boundary);
    let sending = UpstreamRequest {
        endpoint: crate::upstream::DEFAULT_ENDPOINT,
        method: call.method.clone(),
        path: call.upstream_path.clone(),
        query: call.query.clone(),
        headers: call.headers.clone(),
        body: OutgoingBody::streamed(held),
        stream: false,
        model: call.request.model.clone(),
    };
    let (fields, in_flight) = start(state, upload, sending).await?;
    call.upload = Some(in_flight);
    let template = call
        .operation
        .as_deref()
        .map_or("", |op| op.template.as_str());
    match fields {
        Ok(form) => call.request = facts(template, &form)?,
        Err(form_error) => {
            // Unreadable for us: a restricted caller is refused by the authorize stage.
            tracing::debug!(%form_error, "upload fields not read");
            call.form_unread = true;
        }
    }
    if let Some(model) = &call.request.model
        && *state.upstream.targets(Some(model)) != *state.upstream.targets(None)
    {
        // The upload went to the default upstream as it arrived: a model routed elsewhere
        // (an alias, another upstream) cannot be honoured, so it is refused, never misrouted.
        return Err(GatewayError::invalid(
            format!(
                "The model `{model}` is served through an alias or another upstream, which \
                 multipart uploads cannot use."
            ),
            Some("model".to_owned()),
        ));
    }
    Ok(())
}

/// What the pipeline knows of an upload to `template` from its form: the model, whether it
/// streams, and what prices it: the images asked for (`/images/edits`, `/images/variations`)
/// or the audio's size (`/audio/transcriptions`, `/audio/translations`).
pub fn facts(template: &str, form: &Form) -> Result<RequestFacts, GatewayError> {
    let fields = &form.fields;
    let images = match template {
        "/images/edits" | "/images/variations" => Some(crate::openai::requests::image_request(
            fields.get("n").map(String::as_str),
            fields.get("size").cloned(),
            fields.get("quality").cloned(),
        )?),
        _ => None,
    };
    let audio = matches!(template, "/audio/transcriptions" | "/audio/translations").then_some(
        crate::pricing::AudioRequest::Transcription {
            upload_bytes: form.bytes,
        },
    );
    Ok(RequestFacts {
        model: fields.get("model").cloned(),
        stream: fields.get("stream").is_some_and(|s| s.trim() == "true"),
        images,
        audio,
        ..RequestFacts::default()
    })
}

struct Held {
    inner: Body,
    /// Bytes held back at the end: longer than the closing delimiter.
    hold: usize,
    scanner: Option<FormScanner>,
    tail: BytesMut,
    fields: Option<oneshot::Sender<Fields>>,
    /// `None` once the release came.
    released: Option<oneshot::Receiver<()>>,
    ended: bool,
    /// Bytes of the form read so far.
    bytes: u64,
}

impl Held {
    fn report(&mut self, fields: Fields) {
        if let Some(sender) = self.fields.take() {
            let _ = sender.send(fields);
        }
    }
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        // A refusal (the pipeline dropped the release) ends the upload at once.
        if let Some(waiting) = &mut this.released {
            match Pin::new(waiting).poll(cx) {
                Poll::Ready(Ok(())) => this.released = None,
                Poll::Ready(Err(_)) => return Poll::Ready(Some(Err(Box::new(Refused)))),
                Poll::Pending => {}
            }
        }
        let released = this.released.is_none();
        loop {
            if this.ended {
                if !released {
                    return Poll::Pending;
                }
                if this.tail.is_empty() {
                    return Poll::Ready(None);
                }
                let rest = this.tail.split().freeze();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            // An unreadable form sends nothing more until the pipeline has decided: what it
            // holds may already contain its end.
            if this.scanner.is_none() && !released {
                return Poll::Pending;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.ended = true;
                    let bytes = this.bytes;
                    let fields = match this.scanner.take() {
                        Some(scanner) => scanner.finish().map(|fields| Form { fields, bytes }),
                        None => Err(FormError::Truncated),
                    };
                    this.report(fields);
                }
                Poll::Ready(Some(Err(error))) => {
                    this.fields.take();
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.tail.extend_from_slice(&data);
                    this.bytes += data.len() as u64;
                    if let Some(scanner) = &mut this.scanner
                        && let Err(error) = scanner.feed(&data)
                    {
                        // The pipeline decides what an unreadable form means for this caller;
                        // until then everything from this chunk on is held.
                        this.scanner = None;
                        this.report(Err(error));
                        continue;
                    }
                    if this.tail.len() > this.hold {
                        let ready = this.tail.split_to(this.tail.len() - this.hold).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(ready))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio_util::task::TaskTracker;

    use super::*;

    fn form() -> Vec<u8> {
        "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nDATA\r\n\
         --b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n"
            .as_bytes()
            .to_vec()
    }

    fn chunked(bytes: Vec<u8>) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn the_end_waits_for_the_release_and_the_fields_arrive_first() {
        let (body, mut upload) = Upload::hold(chunked(form()), "b");
        let reader =
            TaskTracker::new().spawn(async move { body.collect().await.map(|c| c.to_bytes()) });
        let fields = upload.fields().await.unwrap().unwrap();
        assert_eq!(fields.fields["model"], "whisper-1");
        assert_eq!(fields.bytes, form().len() as u64);
        assert!(
            !reader.is_finished(),
            "the closing delimiter was sent before the release"
        );
        upload.release();
        let forwarded = reader.await.unwrap().unwrap();
        assert_eq!(forwarded, Bytes::from(form()), "forwarded byte for byte");
    }

    #[tokio::test]
    async fn an_unreadable_form_sends_nothing_more_until_the_decision() {
        let mut padded = form();
        padded.extend_from_slice(&[b'x'; 4096]);
        let (body, mut upload) = Upload::hold(chunked(padded.clone()), "b");
        let mut body = body;
        let forwarded = TaskTracker::new().spawn(async move {
            let mut seen = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    seen.extend_from_slice(&data);
                }
            }
            seen
        });
        assert_eq!(
            upload.fields().await,
            Some(Err(FormError::Epilogue)),
            "the padding after the end is refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(upload);
        let seen = forwarded.await.unwrap();
        let closing = b"\r\n--b--";
        assert!(
            !seen.windows(closing.len()).any(|w| w == closing),
            "the closing delimiter went out before the decision"
        );
    }

    #[tokio::test]
    async fn a_refusal_fails_the_upload_before_its_end() {
        let (body, mut upload) = Upload::hold(chunked(form()), "b");
        let reader =
            TaskTracker::new().spawn(async move { body.collect().await.map(|c| c.to_bytes()) });
        assert!(upload.fields().await.is_some());
        drop(upload);
        assert!(reader.await.unwrap().is_err());
    }
}
