//! The server side of a WebSocket handshake (RFC 6455 §4.2): the upgrade request checked, and
//! the `101 Switching Protocols` answer that accepts it.
//!
//! A browser cannot set `Authorization` on a WebSocket, so OpenAI's browser client sends its
//! key as a subprotocol, `openai-insecure-api-key.KEY`, beside `realtime`. The authenticate
//! layer reads it from there (`openai::websocket::protocol_key`); this answer selects `realtime` when offered
//! and never echoes the key's protocol.

use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::GatewayError;
use crate::openai::websocket::{REALTIME_PROTOCOL, has_token, offered_protocols};

/// A checked upgrade request: what the `101` needs, and the connection to take over once sent.
pub struct Handshake {
    accept: HeaderValue,
    realtime_offered: bool,
    /// Resolves to the raw connection once the `101` has gone out.
    pub upgrade: hyper::upgrade::OnUpgrade,
}

impl Handshake {
    /// Checks that `parts` asks for a WebSocket (version 13, with a key) and takes its upgrade.
    pub fn accept(parts: &mut Parts) -> Result<Self, GatewayError> {
        let headers = &parts.headers;
        let asks_upgrade = has_token(headers, &header::CONNECTION, "upgrade")
            && has_token(headers, &header::UPGRADE, "websocket");
        if !asks_upgrade {
            return Err(GatewayError::invalid(
                "This route is a WebSocket (the Realtime API): connect with `Upgrade: websocket`.",
                None,
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|version| version.as_bytes() != b"13")
        {
            return Err(GatewayError::invalid(
                "Only WebSocket version 13 is spoken (Sec-WebSocket-Version: 13).",
                None,
            ));
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|key| !key.is_empty())
            .ok_or_else(|| GatewayError::invalid("The WebSocket handshake has no key.", None))?;
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let realtime_offered = offered_protocols(headers).any(|p| p == REALTIME_PROTOCOL);
        let upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(|| {
                GatewayError::invalid("This connection cannot be upgraded to a WebSocket.", None)
            })?;
        Ok(Self {
            accept,
            realtime_offered,
            upgrade,
        })
    }

    /// The `101` that completes the handshake.
    pub fn switching(&self) -> Response {
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept.clone());
        if self.realtime_offered {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(REALTIME_PROTOCOL),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request(protocols: &[&str]) -> Parts {
        let mut builder = axum::http::Request::get("/v1/realtime?model=gpt-realtime")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        for protocol in protocols {
            builder = builder.header("sec-websocket-protocol", *protocol);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_that_is_not_a_websocket_is_refused_before_anything_else() {
        let mut parts = upgrade_request(&[]);
        parts.headers.remove("upgrade");
        assert!(Handshake::accept(&mut parts).is_err());
        let mut parts = upgrade_request(&[]);
        parts
            .headers
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert!(Handshake::accept(&mut parts).is_err());
        // A well-formed handshake still needs a connection that can be upgraded.
        let mut parts = upgrade_request(&["realtime"]);
        assert!(Handshake::accept(&mut parts).is_err());
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
