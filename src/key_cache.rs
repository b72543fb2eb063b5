//! Recent key lookups by secret hash, for the authenticate stage.
//!
//! The secret is hashed (SHA-256) and looked up by hash, so no secret is compared byte by byte
//! in our code. Lookups, found or not, are cached for `keys.cache_ttl` (≤ 1 s): a request costs
//! no database round trip, a burst of guesses cannot hammer the database, and a key revoked on
//! any replica stops working everywhere within a second. A key's rules are merged with the
//! configured defaults once, when it enters the cache.

use std::sync::Arc;
use std::time::Duration;

use crate::keys::{self, ApiKey};
use crate::limiter::rules::{self, Rule};
use crate::log_throttle::LogThrottle;
use crate::store::{KeyStore, StoreError};

/// A cached key with its merged rules.
#[derive(Debug)]
pub struct KeyEntry {
    pub key: Arc<ApiKey>,
    pub models: Arc<[String]>,
    pub rules: Arc<[Rule]>,
    pub routes: Arc<[String]>,
}

/// The key store could not answer, and the key's last known state is not kept.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable;

/// A lookup's answer: the key, or `None` for "no such key".
type Found = Option<Arc<KeyEntry>>;

/// Recent key lookups by secret hash. `None` caches "no such key".
#[derive(Clone)]
pub struct KeyCache {
    entries: moka::future::Cache<String, Found>,
    /// The last answer the database gave for each hash, kept longer: used only while the
    /// database cannot answer, so an outage does not lock out every caller whose key was seen
    /// in the last `LAST_KNOWN_TTL` (a key revoked during the outage is refused once it ends).
    last_known: moka::future::Cache<String, Found>,
}

/// How long a key's last known state may stand in for the database during an outage.
const LAST_KNOWN_TTL: Duration = Duration::from_secs(15 * 60);

impl KeyCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        let cache = |ttl| {
            moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build()
        };
        Self {
            entries: cache(ttl),
            last_known: cache(LAST_KNOWN_TTL),
        }
    }

    /// Forgets every cached lookup, so a change made through this replica (a revocation) takes
    /// effect here at once; other replicas see it when their entries expire (`keys.cache_ttl_ms`).
    pub fn forget_all(&self) {
        self.entries.invalidate_all();
    }

    /// The key whose secret is `secret` (revoked or expired ones too), its rules merged over
    /// `defaults`; `None` when there is none. Fails only when `store` cannot answer and the
    /// key's last known state is not kept either.
    pub async fn find(
        &self,
        store: &Arc<dyn KeyStore>,
        defaults: &[Rule],
        secret: &str,
    ) -> Result<Found, Unavailable> {
        let hash = keys::hash_secret(secret);
        if let Some(found) = self.entries.get(&hash).await {
            return Ok(found);
        }
        let load = {
            let (store, defaults) = (store.clone(), defaults.to_vec());
            let (last_known, hash) = (self.last_known.clone(), hash.clone());
            async move {
                let entry = store.find_by_hash(&hash).await?.map(|key| {
                    Arc::new(KeyEntry {
                        models: key.models.clone().into(),
                        routes: key.routes.clone().into(),
                        rules: rules::merge(&defaults, &key.own_rules()).into(),
                        key: Arc::new(key),
                    })
                });
                last_known.insert(hash, entry.clone()).await;
                Ok::<_, StoreError>(entry)
            }
        };
        let error = match self.entries.try_get_with(hash.clone(), load).await {
            Ok(found) => return Ok(found),
            Err(error) => error,
        };
        crate::metrics::record_backend_error("database");
        match self.last_known.get(&hash).await {
            Some(known) => {
                static THROTTLE: LogThrottle = LogThrottle::new();
                if let Some(held_back) = THROTTLE.allow() {
                    tracing::warn!(error = %error, held_back, "key store unavailable: using the key's last known state");
                }
                Ok(known)
            }
            None => {
                static THROTTLE: LogThrottle = LogThrottle::new();
                if let Some(held_back) = THROTTLE.allow() {
                    tracing::error!(error = %error, held_back, "key lookup failed");
                }
                Err(Unavailable)
            }
        }
    }
}
