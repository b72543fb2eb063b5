//! What OpenAI's WebSocket clients send in their handshake: the `realtime` subprotocol, and a
//! browser's key as the subprotocol `openai-insecure-api-key.KEY` (a browser cannot set
//! `Authorization` on a WebSocket).

use axum::http::{HeaderMap, header};

use crate::error::GatewayError;

/// The subprotocol OpenAI's clients offer for a Realtime session.
pub const REALTIME_PROTOCOL: &str = "realtime";

/// The subprotocol a beta browser client offers (a server client sends `OpenAI-Beta:
/// realtime=v1` instead).
pub const BETA_PROTOCOL: &str = "openai-beta.realtime-v1";

/// The prefix of the subprotocol that carries a browser's key.
const KEY_PROTOCOL_PREFIX: &str = "openai-insecure-api-key.";

/// The key a browser sent as its `openai-insecure-api-key.KEY` subprotocol, on an upgrade
/// request only; `Err` when it sent two.
pub fn protocol_key(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Ok(None);
    }
    let mut keys = offered_protocols(headers).filter_map(|p| p.strip_prefix(KEY_PROTOCOL_PREFIX));
    let key = keys.next();
    if keys.next().is_some() {
        return Err(GatewayError::Unauthenticated {
            reason: "send one key, not several",
        });
    }
    Ok(key.filter(|key| !key.is_empty()))
}

/// The subprotocols offered, across every `Sec-WebSocket-Protocol` header.
pub fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// Whether the comma-separated header `name` holds `token` (case-insensitively).
pub fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers(protocols: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("upgrade", "websocket".parse().unwrap());
        for protocol in protocols {
            headers.append("sec-websocket-protocol", protocol.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_browsers_key_is_read_from_its_subprotocol_once() {
        let headers = upgrade_headers(&["realtime, openai-insecure-api-key.tg-abc"]);
        assert_eq!(protocol_key(&headers).unwrap(), Some("tg-abc"));
        let two = upgrade_headers(&[
            "realtime, openai-insecure-api-key.tg-abc",
            "openai-insecure-api-key.tg-def",
        ]);
        assert!(protocol_key(&two).is_err());
        let mut plain = upgrade_headers(&["openai-insecure-api-key.tg-abc"]);
        plain.remove("upgrade");
        assert_eq!(protocol_key(&plain).unwrap(), None, "not an upgrade");
    }
}
