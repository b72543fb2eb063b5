//! The authenticate stage (a layer): who is calling. The result is a [`Principal`]: the caller
//! (a gateway key, a user JWT when `[jwt]` is configured, or an anonymous caller when
//! `[anonymous]` allows it), the end user it acts for, the client IP, and what it may do
//! (models, limit rules).
//!
//! A browser's Realtime socket cannot send `Authorization`: its key comes as the WebSocket
//! subprotocol `openai-insecure-api-key.KEY` (`openai::websocket::protocol_key`), read
//! only on an upgrade request, and refused beside an `Authorization` header.
//!
//! Keys are found through the [`KeyCache`](crate::key_cache::KeyCache) (by the secret's hash, cached for at most a second).
//!
//! The end user of a key caller is `x-user-id`, or else the body's `user` (read in the
//! validate stage); the header wins when both are sent. Both must be 1–128 characters of
//! `[A-Za-z0-9._:@+-]`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::identity::is_valid_user;
pub use crate::identity::{Caller, Principal};
use crate::jwt::{JwtError, JwtVerifier};
use crate::key_cache::{KeyEntry, Unavailable};
use crate::keys;
use crate::state::AppState;

/// The layer over every route that is not on the open list.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match authenticate(&state, request.headers(), peer).await {
        Ok(principal) => {
            let facts = crate::records::CallFacts::of(&principal);
            request.extensions_mut().insert(principal);
            let mut response = next.run(request).await;
            // Routes outside the pipeline (model lists, limit status) still name their caller
            // in the log line and the audit record.
            if response
                .extensions()
                .get::<crate::records::CallFacts>()
                .is_none()
            {
                response.extensions_mut().insert(facts);
            }
            response
        }
        Err(error) => error.into_response(),
    }
}

/// Resolves the caller.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Principal, GatewayError> {
    let client_ip = peer.map_or(IpAddr::from([127, 0, 0, 1]), |peer| {
        state.config.server.trusted_proxies.client_ip(peer, headers)
    });
    let user = header_user(headers)?;
    let socket_key = crate::openai::websocket::protocol_key(headers)?;
    if !headers.contains_key(header::AUTHORIZATION)
        && socket_key.is_none()
        && state.config.anonymous.enabled
    {
        let anonymous = &state.config.anonymous;
        return Ok(Principal {
            caller: Caller::Anonymous,
            user,
            client_ip,
            models: anonymous.models.clone().into(),
            routes: anonymous.routes.clone().into(),
            rules: anonymous
                .rules
                .clone()
                .unwrap_or_else(|| state.config.limits.rules.clone())
                .into(),
        });
    }
    let secret = match socket_key {
        Some(key) if !headers.contains_key(header::AUTHORIZATION) => key,
        Some(_) => {
            return Err(GatewayError::Unauthenticated {
                reason: "send one key (Authorization or the WebSocket subprotocol), not both",
            });
        }
        None => bearer(headers)?,
    };
    if let Some(verifier) = &state.jwt
        && !secret.starts_with(keys::KEY_PREFIX)
        && JwtVerifier::looks_like_jwt(secret)
    {
        // A JWT caller's user is the token's subject; x-user-id and the body's user are ignored.
        let subject = verifier.verify(secret).await.map_err(|error| match error {
            JwtError::KeysUnavailable => GatewayError::Unavailable {
                what: "JWT key set",
            },
            other => GatewayError::Unauthenticated {
                reason: other.reason(),
            },
        })?;
        let jwt = &state.config.jwt;
        return Ok(Principal {
            caller: Caller::Jwt {
                subject: subject.clone(),
            },
            user: Some(subject),
            client_ip,
            models: jwt.models.clone().into(),
            routes: jwt.routes.clone().into(),
            rules: jwt
                .rules
                .clone()
                .unwrap_or_else(|| state.config.limits.rules.clone())
                .into(),
        });
    }
    if !keys::looks_like_key(secret) {
        return Err(GatewayError::Unauthenticated {
            reason: "the key is not a Tollgate key (tg-…)",
        });
    }
    let entry = find_key(state, secret).await?;
    let key = &entry.key;
    if key.revoked_at_ms.is_some() {
        return Err(GatewayError::Unauthenticated {
            reason: "the key has been revoked",
        });
    }
    if !key.is_active(keys::now_ms()) {
        return Err(GatewayError::Unauthenticated {
            reason: "the key has expired",
        });
    }
    Ok(Principal {
        caller: Caller::Key(key.clone()),
        user,
        client_ip,
        models: entry.models.clone(),
        rules: entry.rules.clone(),
        routes: entry.routes.clone(),
    })
}

async fn find_key(state: &AppState, secret: &str) -> Result<Arc<KeyEntry>, GatewayError> {
    let found = state
        .key_cache
        .find(&state.keys, &state.config.limits.rules, secret)
        .await
        .map_err(|Unavailable| GatewayError::Unavailable { what: "key store" })?;
    found.ok_or(GatewayError::Unauthenticated {
        reason: "the key is not known",
    })
}

/// The token of `Authorization: Bearer TOKEN` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Result<&str, GatewayError> {
    // Two credentials (a client's and a proxy's, say) leave it unclear who is calling: refused
    // rather than one of them picked.
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(GatewayError::Unauthenticated {
            reason: "send one Authorization header, not several",
        });
    }
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(GatewayError::Unauthenticated {
            reason: "no key was sent (use Authorization: Bearer tg-…)",
        })?;
    let value = value.to_str().map_err(|_| GatewayError::Unauthenticated {
        reason: "the Authorization header is not readable",
    })?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(GatewayError::Unauthenticated {
            reason: "expected Authorization: Bearer tg-…",
        }),
    }
}

/// `x-user-id`, validated.
fn header_user(headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let Some(value) = headers.get("x-user-id") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .filter(|t| is_valid_user(t))
        .ok_or_else(|| {
            GatewayError::invalid(
                "'x-user-id' must be 1 to 128 characters of letters, digits and . _ : @ + -",
                Some("x-user-id".to_owned()),
            )
        })?;
    Ok(Some(text.to_owned()))
}
