//! Stage 1: who is calling. A gateway key in `Authorization: Bearer tg-...` becomes a
//! [`Principal`]; everything else is a 401.
//!
//! The secret is hashed (SHA-256) and looked up by hash, so no secret is compared byte by byte
//! in our code. Lookups, found or not, are cached for `keys.cache_ttl` (≤ 1 s): a request costs
//! no database round trip, a burst of guesses cannot hammer the database, and a key revoked on
//! any replica stops working everywhere within a second.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::keys::{self, ApiKey};
use crate::state::AppState;

/// The authenticated caller, as a request extension.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key the caller presented.
    pub key: Arc<ApiKey>,
}

/// Recent lookups by secret hash. `None` caches "no such key".
#[derive(Clone)]
pub struct KeyCache {
    entries: moka::future::Cache<String, Option<Arc<ApiKey>>>,
}

impl KeyCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }
}

/// The layer over every route that is not on the open list.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// Resolves the caller's key.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, GatewayError> {
    let secret = bearer(headers)?;
    if !keys::looks_like_key(secret) {
        return Err(GatewayError::Unauthenticated {
            reason: "the key is not a Tollgate key (tg-…)",
        });
    }
    let hash = keys::hash_secret(secret);
    let store = state.keys.clone();
    let found = state
        .key_cache
        .entries
        .try_get_with(hash.clone(), async move {
            store.find_by_hash(&hash).await.map(|key| key.map(Arc::new))
        })
        .await
        .map_err(|error| {
            tracing::error!(error = %error, "key lookup failed");
            GatewayError::Unavailable { what: "key store" }
        })?;
    let key = found.ok_or(GatewayError::Unauthenticated {
        reason: "the key is not known",
    })?;
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
    Ok(Principal { key })
}

/// The token of `Authorization: Bearer TOKEN` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Result<&str, GatewayError> {
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

impl Principal {
    /// Stage 2 check: the key may use `model` (403 otherwise).
    pub fn authorize_model(&self, model: &str) -> Result<(), GatewayError> {
        if self.key.allows_model(model) {
            Ok(())
        } else {
            Err(GatewayError::ModelNotAllowed {
                model: model.to_owned(),
            })
        }
    }
}
