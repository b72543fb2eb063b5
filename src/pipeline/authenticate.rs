//! The authenticate stage (a layer): who is calling. The result is a [`Principal`]: the caller
//! (a gateway key, a user JWT when `[jwt]` is configured, or an anonymous caller when
//! `[anonymous]` allows it), the end user it acts for, the client IP, and what it may do
//! (models, limit rules).
//!
//! Keys: the secret is hashed (SHA-256) and looked up by hash, so no secret is compared byte
//! by byte in our code. Lookups, found or not, are cached for `keys.cache_ttl` (≤ 1 s): a
//! request costs no database round trip, a burst of guesses cannot hammer the database, and a
//! key revoked on any replica stops working everywhere within a second. A key's rules are
//! merged with the configured defaults once, when it enters the cache.
//!
//! The end user of a key caller is `x-user-id`, or else the body's `user` (read in the
//! validate stage); the header wins when both are sent. Both must be 1–128 characters of
//! `[A-Za-z0-9._:@+-]`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::identity::is_valid_user;
pub use crate::identity::{Caller, Principal};
use crate::jwt::{JwtError, JwtVerifier};
use crate::keys::{self, ApiKey};
use crate::limiter::rules::{self, Rule};
use crate::state::AppState;

/// A cached key with its merged rules.
#[derive(Debug)]
pub struct KeyEntry {
    key: Arc<ApiKey>,
    models: Arc<[String]>,
    rules: Arc<[Rule]>,
    routes: Arc<[String]>,
}

/// Recent key lookups by secret hash. `None` caches "no such key".
#[derive(Clone)]
pub struct KeyCache {
    entries: moka::future::Cache<String, Option<Arc<KeyEntry>>>,
    /// The last answer the database gave for each hash, kept longer: used only while the
    /// database cannot answer, so an outage does not lock out every caller whose key was seen
    /// in the last `LAST_KNOWN_TTL` (a key revoked during the outage is refused once it ends).
    last_known: moka::future::Cache<String, Option<Arc<KeyEntry>>>,
}

/// How long a key's last known state may stand in for the database during an outage.
const LAST_KNOWN_TTL: Duration = Duration::from_secs(15 * 60);

impl KeyCache {
    /// Forgets every cached lookup, so a change made through this replica (a revocation) takes
    /// effect here at once; other replicas see it when their entries expire (`keys.cache_ttl_ms`).
    pub fn forget_all(&self) {
        self.entries.invalidate_all();
    }

    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            last_known: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LAST_KNOWN_TTL)
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
    if !headers.contains_key(header::AUTHORIZATION) && state.config.anonymous.enabled {
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
    let secret = bearer(headers)?;
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
    let hash = keys::hash_secret(secret);
    let store = state.keys.clone();
    let defaults = state.config.limits.rules.clone();
    let last_known = state.key_cache.last_known.clone();
    let lookup_hash = hash.clone();
    let looked_up = state
        .key_cache
        .entries
        .try_get_with(hash.clone(), async move {
            let key = store.find_by_hash(&lookup_hash).await?;
            let entry = key.map(|key| {
                let rules = rules::merge(&defaults, &key.own_rules());
                Arc::new(KeyEntry {
                    models: key.models.clone().into(),
                    routes: key.routes.clone().into(),
                    rules: rules.into(),
                    key: Arc::new(key),
                })
            });
            last_known.insert(lookup_hash, entry.clone()).await;
            Ok::<_, crate::store::StoreError>(entry)
        })
        .await;
    let found = match looked_up {
        Ok(found) => found,
        Err(error) => {
            crate::metrics::record_backend_error("database");
            match state.key_cache.last_known.get(&hash).await {
                Some(known) => {
                    tracing::warn!(error = %error, "key store unavailable: using the key's last known state");
                    known
                }
                None => {
                    tracing::error!(error = %error, "key lookup failed");
                    return Err(GatewayError::Unavailable { what: "key store" });
                }
            }
        }
    };
    found.ok_or(GatewayError::Unauthenticated {
        reason: "the key is not known",
    })
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
