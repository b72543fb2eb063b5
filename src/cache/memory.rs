//! The in-process cache engine: moka, bounded by the bytes of keys and bodies.

use std::time::Duration;

use bytes::Bytes;

use super::{CacheError, CacheKey, CacheStore};

/// Answers kept in this process, evicted by size (TinyLFU) and each at the end of the
/// lifetime it was stored with (so a reloaded `cache.ttl_seconds` applies to what is stored
/// after the reload).
pub struct MemoryCache {
    entries: moka::future::Cache<CacheKey, Entry>,
}

/// A stored answer and how long it may be served.
#[derive(Clone)]
struct Entry {
    body: Bytes,
    ttl: Duration,
}

/// Each entry expires when its own lifetime is over.
struct OwnLifetime;

impl moka::Expiry<CacheKey, Entry> for OwnLifetime {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> Self {
        let entries = moka::future::Cache::builder()
            .weigher(|key: &CacheKey, entry: &Entry| {
                u32::try_from(key.as_str().len() + entry.body.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(max_bytes)
            .expire_after(OwnLifetime)
            .build();
        Self { entries }
    }
}

#[async_trait::async_trait]
impl CacheStore for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        Ok(self.entries.get(key).await.map(|entry| entry.body))
    }

    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let entry = Entry { body: value, ttl };
        self.entries.insert(key.clone(), entry).await;
        Ok(())
    }

    async fn purge(&self) -> Result<u64, CacheError> {
        // The count is exact only once pending inserts are applied.
        self.entries.run_pending_tasks().await;
        let count = self.entries.entry_count();
        self.entries.invalidate_all();
        self.entries.run_pending_tasks().await;
        Ok(count)
    }
}
