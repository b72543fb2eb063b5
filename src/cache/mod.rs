//! The response cache: exact-match answers for non-streaming chat and embeddings.
//!
//! A [`CacheKey`] is a SHA-256 digest of the tenant (the key id, or the JWT/anonymous user),
//! the route and the request body in canonical form (object keys sorted, whitespace dropped),
//! so two tenants never share an entry and formatting never splits one. The stored value is
//! the upstream's JSON body and the model that answered ([`CachedAnswer`]).
//!
//! [`ResponseCache`] puts a [`CacheStore`] (memory or Redis) behind two promises: a backend
//! error is logged and counted, never returned (a broken cache is a slower gateway, not a
//! broken one), and identical concurrent misses go upstream once: the first is the leader, the
//! others wait for its answer ([`Lookup::Wait`]).

pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

pub use memory::MemoryCache;
pub use redis::RedisCache;

/// Where cached answers live. Implementations bound every call in time.
#[async_trait::async_trait]
pub trait CacheStore: Send + Sync {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError>;
    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), CacheError>;
    /// Removes every entry; returns how many there were (as far as the engine can tell).
    async fn purge(&self) -> Result<u64, CacheError>;
}

/// A cache backend failure (never shown to a caller).
#[derive(Debug, thiserror::Error)]
#[error("cache backend: {0}")]
pub struct CacheError(pub String);

/// An entry's name: the hex SHA-256 of tenant, route and canonical body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key for `body` sent by `tenant` to `route`.
    pub fn new(tenant: &str, route: &str, body: &serde_json::Value) -> Self {
        // serde_json's map is ordered by key, so serialising the tree sorts every object.
        let canonical = serde_json::to_vec(body).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(tenant.as_bytes());
        hasher.update([0]);
        hasher.update(route.as_bytes());
        hasher.update([0]);
        hasher.update(&canonical);
        let digest = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in digest {
            use std::fmt::Write;
            let _ = write!(hex, "{byte:02x}");
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored answer: the model that produced it (for the record) and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    pub model: Option<String>,
    pub body: Bytes,
}

impl CachedAnswer {
    /// `[model length: u16][model][body]`; an empty model means none.
    fn encode(&self) -> Bytes {
        let model = self.model.as_deref().unwrap_or("");
        let model = &model.as_bytes()[..model.len().min(u16::MAX as usize)];
        let mut out = BytesMut::with_capacity(2 + model.len() + self.body.len());
        out.put_u16(model.len() as u16);
        out.put_slice(model);
        out.put_slice(&self.body);
        out.freeze()
    }

    fn decode(mut bytes: Bytes) -> Option<Self> {
        if bytes.len() < 2 {
            return None;
        }
        let length = usize::from(bytes.get_u16());
        if bytes.len() < length {
            return None;
        }
        let model = bytes.split_to(length);
        let model = (!model.is_empty())
            .then(|| String::from_utf8(model.to_vec()).ok())
            .flatten();
        Some(Self { model, body: bytes })
    }
}

/// What a lookup found.
pub enum Lookup {
    Hit(CachedAnswer),
    /// Not cached, and nobody is asking: the caller goes upstream and reports through the
    /// flight (dropping it unanswered lets the waiters go upstream themselves).
    Miss(Flight),
    /// Not cached, and an identical request is already upstream.
    Wait(watch::Receiver<Option<CachedAnswer>>),
}

type InFlight = Arc<Mutex<HashMap<CacheKey, watch::Receiver<Option<CachedAnswer>>>>>;

/// The leader's duty for one cache key: answer the waiters, then store the answer.
pub struct Flight {
    key: CacheKey,
    sender: watch::Sender<Option<CachedAnswer>>,
    in_flight: InFlight,
}

impl Drop for Flight {
    fn drop(&mut self) {
        remove(&self.in_flight, &self.key);
    }
}

fn remove(in_flight: &InFlight, key: &CacheKey) {
    in_flight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(key);
}

/// The cache as the pipeline sees it: failures absorbed, concurrent misses merged.
pub struct ResponseCache {
    store: Arc<dyn CacheStore>,
    ttl: Duration,
    in_flight: InFlight,
    engine: &'static str,
}

impl ResponseCache {
    /// A cache over `store`, keeping answers for `ttl`. `engine` names it in logs and metrics.
    pub fn new(store: Arc<dyn CacheStore>, ttl: Duration, engine: &'static str) -> Self {
        Self {
            store,
            ttl,
            in_flight: InFlight::default(),
            engine,
        }
    }

    /// The same store and merged misses, keeping new answers for `ttl` (a reload's cache).
    pub fn with_ttl(&self, ttl: Duration) -> Self {
        Self {
            store: Arc::clone(&self.store),
            ttl,
            in_flight: Arc::clone(&self.in_flight),
            engine: self.engine,
        }
    }

    /// Looks `key` up. A backend error counts as a miss.
    pub async fn lookup(&self, key: CacheKey) -> Lookup {
        match self.store.get(&key).await {
            Ok(Some(bytes)) => {
                if let Some(answer) = CachedAnswer::decode(bytes) {
                    return Lookup::Hit(answer);
                }
            }
            Ok(None) => {}
            Err(error) => log_failure(self.engine, "get", &error),
        }
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(receiver) = in_flight.get(&key) {
            return Lookup::Wait(receiver.clone());
        }
        let (sender, receiver) = watch::channel(None);
        in_flight.insert(key.clone(), receiver);
        Lookup::Miss(Flight {
            key,
            sender,
            in_flight: Arc::clone(&self.in_flight),
        })
    }

    /// Hands `answer` to the requests waiting on `flight` and, when `store` is set, stores it
    /// in the background (the key stays claimed until it is stored, so a request arriving
    /// meanwhile waits rather than going upstream).
    pub fn complete(&self, flight: Flight, answer: CachedAnswer, store: bool, tasks: &TaskTracker) {
        flight.sender.send_replace(Some(answer.clone()));
        if store {
            self.put_later(flight.key.clone(), answer, Some(flight), tasks);
        }
    }

    /// Stores an answer for which no flight was claimed (a `no-cache` request refreshing it).
    pub fn store(&self, key: CacheKey, answer: CachedAnswer, tasks: &TaskTracker) {
        self.put_later(key, answer, None, tasks);
    }

    /// Writes `answer` off the request path, then releases `flight` (if any).
    fn put_later(
        &self,
        key: CacheKey,
        answer: CachedAnswer,
        flight: Option<Flight>,
        tasks: &TaskTracker,
    ) {
        let backend = Arc::clone(&self.store);
        let ttl = self.ttl;
        let engine = self.engine;
        tasks.spawn(async move {
            if let Err(error) = backend.put(&key, answer.encode(), ttl).await {
                log_failure(engine, "put", &error);
            }
            drop(flight);
        });
    }

    /// Waits for a leader's answer, at most `timeout`; `None` if it had none to give.
    pub async fn wait(
        mut receiver: watch::Receiver<Option<CachedAnswer>>,
        timeout: Duration,
    ) -> Option<CachedAnswer> {
        let answered = tokio::time::timeout(timeout, receiver.wait_for(Option::is_some)).await;
        match answered {
            Ok(Ok(answer)) => answer.clone(),
            _ => None,
        }
    }

    /// Empties the cache (`DELETE /admin/cache`).
    pub async fn purge(&self) -> Result<u64, CacheError> {
        self.store.purge().await
    }

    /// The engine's name (`memory`, `redis`).
    pub fn engine(&self) -> &'static str {
        self.engine
    }
}

fn log_failure(engine: &'static str, operation: &'static str, error: &CacheError) {
    static THROTTLE: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new();
    if let Some(held_back) = THROTTLE.allow() {
        tracing::warn!(engine, operation, error = %error, held_back, "cache backend failed; serving without it");
    }
    crate::metrics::record_backend_error("cache");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, route: &str, body: &[u8]) -> CacheKey {
        let tree: serde_json::Value = serde_json::from_slice(body).unwrap();
        CacheKey::new(tenant, route, &tree)
    }

    #[test]
    fn formatting_and_key_order_do_not_split_an_entry_but_tenants_and_routes_do() {
        let a = key("k1", "chat", br#"{"model":"m","temperature":0}"#);
        let b = key("k1", "chat", br#"{ "temperature": 0, "model": "m" }"#);
        assert_eq!(a, b);
        assert_ne!(a, key("k2", "chat", br#"{"model":"m","temperature":0}"#));
        assert_ne!(
            a,
            key("k1", "embeddings", br#"{"model":"m","temperature":0}"#)
        );
        assert_ne!(a, key("k1", "chat", br#"{"model":"m","temperature":0.5}"#));
    }

    #[test]
    fn answers_round_trip_through_their_encoding() {
        for model in [Some("gpt-4o-mini".to_owned()), None] {
            let answer = CachedAnswer {
                model,
                body: Bytes::from_static(br#"{"id":"x"}"#),
            };
            assert_eq!(CachedAnswer::decode(answer.encode()), Some(answer));
        }
        assert_eq!(CachedAnswer::decode(Bytes::from_static(b"\x00")), None);
        assert_eq!(
            CachedAnswer::decode(Bytes::from_static(b"\x00\x09ab")),
            None
        );
    }
}
