//! Recent key lookups by secret hash, for the authenticate stage.
//!
//! The secret is hashed (SHA-256) and looked up by hash, so no secret is compared byte by byte
//! in our code. Lookups, found or not, are cached for `keys.cache_ttl` (≤ 1 s): a request costs
//! no database round trip, a burst of guesses cannot hammer the database, and a key revoked on
//! any replica stops working everywhere within a second. A key's rules are merged with the
//! configured defaults once, when it enters the cache.
//!
//! A key seen before never waits long for the database. When its entry has expired, the lookup
//! runs on a task of its own; the request waits for it at most [`STALE_AFTER`] (not at all
//! while the database is known to be failing), and past that is answered from the key's last
//! known state while the lookup finishes in the background and refreshes the entry. So a
//! database that refuses connections, drops them or stops answering costs a request no more
//! than a few milliseconds, and a revocation still takes effect on every replica within a
//! second of the database answering again. A key never seen must wait for the database
//! (bounded by `database.acquire_timeout_ms` and `statement_timeout_ms`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;

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
    /// Set while lookups fail or run late; cleared by the next lookup that succeeds.
    failing: Arc<AtomicBool>,
}

/// How long a key's last known state may stand in for the database during an outage.
const LAST_KNOWN_TTL: Duration = Duration::from_secs(15 * 60);

/// How long a request whose key was seen before waits for the database (a healthy lookup takes
/// well under a millisecond) before its last known state answers.
pub const STALE_AFTER: Duration = Duration::from_millis(20);

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
            failing: Arc::new(AtomicBool::new(false)),
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
        let lookup = self.revalidate(store, defaults, hash.clone());
        let known = self.last_known.get(&hash).await;
        let outcome = match &known {
            Some(_) => {
                let wait = if self.failing.load(Ordering::Relaxed) {
                    Duration::ZERO
                } else {
                    STALE_AFTER
                };
                tokio::time::timeout(wait, lookup).await.ok()
            }
            None => Some(lookup.await),
        };
        let error = match outcome {
            Some(Ok(found)) => return Ok(found),
            Some(Err(error)) => error,
            None => "the key store did not answer in time".to_owned(),
        };
        crate::metrics::record_backend_error("database");
        match known {
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

    /// Looks `hash` up on a task of its own, so that it finishes (and fills the cache) even
    /// when the request stops waiting. Concurrent lookups of one hash share one query.
    fn revalidate(
        &self,
        store: &Arc<dyn KeyStore>,
        defaults: &[Rule],
        hash: String,
    ) -> impl Future<Output = Result<Found, String>> + use<> {
        let (store, defaults) = (store.clone(), defaults.to_vec());
        let (entries, last_known) = (self.entries.clone(), self.last_known.clone());
        let failing = Arc::clone(&self.failing);
        let load = {
            let hash = hash.clone();
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
        tokio_util::task::TaskTracker::new()
            .spawn(async move {
                // Marked failing while under way: a lookup that outlasts the wait makes the
                // requests after it use the last known state at once.
                let late = tokio::time::sleep(STALE_AFTER).map(|()| {
                    failing.store(true, Ordering::Relaxed);
                });
                let lookup = entries.try_get_with(hash, load);
                tokio::pin!(lookup);
                let result = tokio::select! {
                    result = &mut lookup => result,
                    () = late => lookup.await,
                };
                failing.store(result.is_err(), Ordering::Relaxed);
                result.map_err(|e| e.to_string())
            })
            .map(|joined| joined.unwrap_or_else(|e| Err(e.to_string())))
    }
}
