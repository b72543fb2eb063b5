//! Recent key lookups by secret hash, for the authenticate stage.
//!
//! The secret is hashed (SHA-256) and looked up by hash, so no secret is compared byte by byte
//! in our code. Lookups, found or not, are cached for `keys.cache_ttl` (≤ 1 s): a request costs
//! no database round trip, a burst of guesses cannot hammer the database, and a key revoked on
//! any replica stops working everywhere within a second. A key's rules are merged with the
//! configured defaults once, when it enters the cache.
//!
//! A key seen before never waits long for the database. When its entry has expired, one
//! refresh per key runs on a task of its own; a request waits for it at most [`STALE_AFTER`]
//! (not at all while lookups are failing), and past that is answered from the key's last
//! known state while the refresh finishes and fills the entry. So a database that refuses
//! connections, drops them or stops answering costs a request no more than a few
//! milliseconds, and a revocation still takes effect on every replica within a second of the
//! database answering again. A key never seen waits for the database in the request itself
//! (a caller that goes away cancels it), bounded by `database.acquire_timeout_ms` and
//! `statement_timeout_ms`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

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
    /// Answers, rules merged over the defaults of the configuration that looked them up (a
    /// reload starts a new map: [`KeyCache::renewed`]).
    entries: moka::future::Cache<String, Found>,
    /// Refreshes under way, one per key.
    refreshing: Arc<Mutex<HashMap<String, Refresh>>>,
    /// The last answer the database gave for each hash, kept longer and across reloads: used
    /// only while the database cannot answer, so an outage does not lock out every caller whose
    /// key was seen in the last `LAST_KNOWN_TTL` (a key revoked during the outage is refused
    /// once it ends).
    last_known: moka::future::Cache<String, Option<Arc<ApiKey>>>,
    /// Set while lookups fail or run late; cleared by the next lookup that succeeds.
    failing: Arc<AtomicBool>,
    ttl: Duration,
}

/// A refresh's outcome, shared by the requests waiting for it.
type Refresh = Shared<BoxFuture<'static, Result<Found, String>>>;

/// How long a key's last known state may stand in for the database during an outage.
const LAST_KNOWN_TTL: Duration = Duration::from_secs(15 * 60);

/// How long a request whose key was seen before waits for the database (a healthy lookup takes
/// well under a millisecond) before its last known state answers.
pub const STALE_AFTER: Duration = Duration::from_millis(20);

fn cache<V: Clone + Send + Sync + 'static>(ttl: Duration) -> moka::future::Cache<String, V> {
    moka::future::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(ttl)
        .build()
}

/// `key` with its rules merged over `defaults`.
fn entry(key: Arc<ApiKey>, defaults: &[Rule]) -> Arc<KeyEntry> {
    Arc::new(KeyEntry {
        models: key.models.clone().into(),
        routes: key.routes.clone().into(),
        rules: rules::merge(defaults, &key.own_rules()).into(),
        key,
    })
}

impl KeyCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: cache(ttl),
            refreshing: Arc::default(),
            last_known: cache(LAST_KNOWN_TTL),
            failing: Arc::new(AtomicBool::new(false)),
            ttl,
        }
    }

    /// The cache for a reloaded configuration: no entry merged over the old defaults carries
    /// over (nor can a refresh still under way put one back), but the last known states do.
    pub fn renewed(&self) -> Self {
        Self {
            entries: cache(self.ttl),
            refreshing: Arc::default(),
            last_known: self.last_known.clone(),
            failing: Arc::clone(&self.failing),
            ttl: self.ttl,
        }
    }

    /// Forgets every cached lookup and last known state, so a change made through this replica
    /// (a revocation) takes effect here at once, outage or not; other replicas see it when their
    /// entries expire (`keys.cache_ttl_ms`).
    pub fn forget_all(&self) {
        self.entries.invalidate_all();
        self.last_known.invalidate_all();
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
        // Boxed: the lookup's future is large, and the answer is cached for the next second.
        Box::pin(self.find_uncached(store, defaults, hash)).await
    }

    /// [`Self::find`] when the entry has expired or was never there.
    async fn find_uncached(
        &self,
        store: &Arc<dyn KeyStore>,
        defaults: &[Rule],
        hash: String,
    ) -> Result<Found, Unavailable> {
        let Some(known) = self.last_known.get(&hash).await else {
            return self
                .lookup(store.clone(), defaults.to_vec(), hash)
                .await
                .map_err(|error| {
                    crate::metrics::record_backend_error("database");
                    static THROTTLE: LogThrottle = LogThrottle::new();
                    if let Some(held_back) = THROTTLE.allow() {
                        tracing::error!(error = %error, held_back, "key lookup failed");
                    }
                    Unavailable
                });
        };
        let wait = if self.failing.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            STALE_AFTER
        };
        let refresh = self.refresh(store, defaults, hash);
        let error = match tokio::time::timeout(wait, refresh).await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(error)) => error,
            Err(_) => "the key store did not answer in time".to_owned(),
        };
        crate::metrics::record_backend_error("database");
        static THROTTLE: LogThrottle = LogThrottle::new();
        if let Some(held_back) = THROTTLE.allow() {
            tracing::warn!(error = %error, held_back, "key store unavailable: using the key's last known state");
        }
        Ok(known.map(|key| entry(key, defaults)))
    }

    /// Looks `hash` up (concurrent lookups of one hash share one query) and remembers the
    /// answer as the key's last known state.
    fn lookup(
        &self,
        store: Arc<dyn KeyStore>,
        defaults: Vec<Rule>,
        hash: String,
    ) -> impl Future<Output = Result<Found, String>> + use<> {
        let (entries, last_known) = (self.entries.clone(), self.last_known.clone());
        let failing = Arc::clone(&self.failing);
        async move {
            let load = {
                let hash = hash.clone();
                async move {
                    let key = store.find_by_hash(&hash).await?.map(Arc::new);
                    if key.as_ref().is_some_and(|key| key.counts_tokens()) {
                        crate::tokens::warm_up_soon();
                    }
                    last_known.insert(hash, key.clone()).await;
                    Ok::<_, StoreError>(key.map(|key| entry(key, &defaults)))
                }
            };
            let result = entries.try_get_with(hash, load).await;
            failing.store(result.is_err(), Ordering::Relaxed);
            result.map_err(|e| e.to_string())
        }
    }

    /// The refresh of `hash` under way, or a new one on a task of its own (so that it finishes,
    /// and fills the cache, even when no request waits for it any more).
    fn refresh(&self, store: &Arc<dyn KeyStore>, defaults: &[Rule], hash: String) -> Refresh {
        let mut refreshing = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(under_way) = refreshing.get(&hash) {
            return under_way.clone();
        }
        let lookup = self.lookup(store.clone(), defaults.to_vec(), hash.clone());
        let (failing, map, key) = (
            Arc::clone(&self.failing),
            Arc::clone(&self.refreshing),
            hash.clone(),
        );
        let refresh = tokio_util::task::TaskTracker::new()
            .spawn(async move {
                // A refresh that outlasts the wait makes the requests after it use the last
                // known state at once.
                let late = tokio::time::sleep(STALE_AFTER).map(|()| {
                    failing.store(true, Ordering::Relaxed);
                });
                tokio::pin!(lookup);
                let result = tokio::select! {
                    result = &mut lookup => result,
                    () = late => lookup.await,
                };
                map.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key);
                result
            })
            .map(|joined| joined.unwrap_or_else(|e| Err(e.to_string())))
            .boxed()
            .shared();
        refreshing.insert(hash, refresh.clone());
        refresh
    }
}
