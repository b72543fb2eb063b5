//! Dialling an upstream's Realtime WebSocket (`GET {base}/realtime?model=…` upgraded).
//!
//! The handshake goes through its own client, HTTP/1.1 only: a connection that negotiated
//! HTTP/2 by ALPN could not be upgraded. Headers are built as for any call (the allowlist and
//! the endpoint's key); nothing of the caller's handshake (its `Sec-WebSocket-Protocol`, which
//! may carry its gateway key) is passed on. An answer other than `101` is mapped to the error
//! table like any other upstream answer, scrubbed of keys.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::pool::{self, Pool};
use super::{Busy, Target, Upstream};
use crate::error::GatewayError;
use crate::openai::path::ApiPath;

/// A WebSocket to an upstream's Realtime endpoint.
pub type RealtimeSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The most one Realtime message may carry, either way (OpenAI's own limit on one audio
/// append is 15 MiB): a larger one ends the session rather than filling memory.
pub const MAX_REALTIME_MESSAGE: usize = 16 << 20;

/// How much a socket reads at once. tungstenite zero-fills its read buffer up to this size on
/// every read attempt, a pending one too: its default (128 KiB) cost a million instructions a
/// response in memset (docs/BENCHMARKS.md, "Realtime"). Realtime events are small but for audio
/// appends, which take several reads.
const READ_BUFFER: usize = 8 << 10;

/// The socket settings both sides of a session use.
pub fn realtime_socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_REALTIME_MESSAGE))
        .max_frame_size(Some(MAX_REALTIME_MESSAGE))
}

impl Upstream {
    /// Opens a Realtime session for `requested` on the first of `targets` that accepts it:
    /// a pool's members first, in the order its strategy ranks them and within their own
    /// request limits, then the fallbacks; Azure targets are passed over. A member that fails
    /// is judged as a call's would be (`pool::Verdict`: it may cool down); any other target
    /// hands on only after an error that allows a fallback. The socket, the target, and the
    /// pool member's in-flight guard, which the session keeps to its end.
    pub async fn dial_routed(
        &self,
        targets: &[Target],
        pool: Option<&Pool>,
        requested: &str,
        headers: &HeaderMap,
    ) -> Result<(RealtimeSocket, Target, Option<Busy>), GatewayError> {
        let order = pool.map(Pool::order).unwrap_or_default();
        let (plan, _) = pool::plan(pool, &order, targets);
        let mut outcome = Err(GatewayError::Internal("no upstream target".to_owned()));
        for (member, target) in plan {
            if !self.serves_realtime(target) {
                continue;
            }
            let member = pool.zip(member);
            if let Some((pool, member)) = member
                && let Err(wait) = pool.admit(member, 0).await
            {
                outcome = Err(pool.all_at_their_limits(wait));
                continue;
            }
            let model = target.model.as_deref().unwrap_or(requested);
            let sent_ms = pool::deployment::now_ms();
            let busy = member.map(|(pool, member)| pool.member(member).state.busy());
            let error = match self.dial_realtime(target, model, headers).await {
                Ok(socket) => {
                    if let Some((pool, member)) = member {
                        pool.member(member).served_call(sent_ms);
                    }
                    return Ok((socket, target.clone(), busy));
                }
                Err(error) => error,
            };
            let next = match member {
                Some((pool, member)) => pool.failed(member, pool::Verdict::of(&error, false)),
                None => error.allows_fallback(),
            };
            if next {
                let from = self.name_of(target.endpoint);
                tracing::warn!(upstream = %from, %error, "a Realtime session could not be opened; trying the next target");
            }
            outcome = Err(error);
            if !next {
                break;
            }
        }
        outcome
    }

    /// Whether `target` can serve a Realtime session (Azure's Realtime dialect is not spoken).
    pub fn serves_realtime(&self, target: &Target) -> bool {
        !self.endpoint(target.endpoint).is_azure()
    }

    /// Opens a Realtime session for `model` on `target` with the endpoint's key, within the
    /// stream's first-byte timeout. `incoming` is the caller's handshake (allowlisted headers
    /// only go on: `openai-beta`, the SDKs' descriptive ones).
    pub async fn dial_realtime(
        &self,
        target: &Target,
        model: &str,
        incoming: &HeaderMap,
    ) -> Result<RealtimeSocket, GatewayError> {
        let endpoint = self.endpoint(target.endpoint);
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("model", model)
            .finish();
        let uri = endpoint.uri_for(
            &Method::GET,
            &ApiPath::fixed("realtime"),
            Some(&query),
            Some(model),
        )?;
        let mut headers = endpoint.outgoing_headers(incoming);
        headers.remove(header::CONTENT_TYPE);
        let key = generate_key();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(&key).map_err(|e| GatewayError::Internal(e.to_string()))?,
        );
        let mut request = axum::http::Request::new(axum::body::Body::empty());
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let deadline = Instant::now() + self.first_byte_timeout;
        let response = match tokio::time::timeout_at(deadline, self.upgrading.request(request))
            .await
        {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(error)) if error.is_connect() => return Err(GatewayError::UpstreamUnreachable),
            Ok(Err(error)) => {
                return Err(GatewayError::UpstreamFailed {
                    detail: format!("opening a Realtime session: {error}"),
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            crate::metrics::record_upstream_attempt("error");
            return Err(if status.is_success() {
                GatewayError::UpstreamFailed {
                    detail: format!("the Realtime handshake was answered {status}, not 101"),
                }
            } else {
                self.final_error(endpoint, response, deadline).await
            });
        }
        let accepted = response
            .headers()
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|accept| {
                accept.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes()
            });
        if !accepted {
            return Err(GatewayError::UpstreamFailed {
                detail: "the Realtime handshake's accept key is wrong".to_owned(),
            });
        }
        let upgraded = tokio::time::timeout_at(deadline, hyper::upgrade::on(response))
            .await
            .map_err(|_| GatewayError::UpstreamTimeout)?
            .map_err(|error| GatewayError::UpstreamFailed {
                detail: format!("upgrading to a WebSocket: {error}"),
            })?;
        crate::metrics::record_upstream_attempt("ok");
        Ok(WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Client,
            Some(realtime_socket_config()),
        )
        .await)
    }
}
