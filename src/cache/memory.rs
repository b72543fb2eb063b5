//! The in-process cache engine: moka, bounded by the bytes of keys and bodies.

use std::time::Duration;

use bytes::Bytes;

use super::{CacheError, CacheKey, CacheStore};

/// Answers kept in this process, evicted by size (TinyLFU) and by age.
pub struct MemoryCache {
    entries: moka::future::Cache<CacheKey, Bytes>,
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` of keys and values, each for at most `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let entries = moka::future::Cache::builder()
            .weigher(|key: &CacheKey, value: &Bytes| {
                u32::try_from(key.as_str().len() + value.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(max_bytes)
            .time_to_live(ttl)
            .build();
        Self { entries }
    }
}

#[async_trait::async_trait]
impl CacheStore for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        Ok(self.entries.get(key).await)
    }

    async fn put(&self, key: &CacheKey, value: Bytes, _ttl: Duration) -> Result<(), CacheError> {
        self.entries.insert(key.clone(), value).await;
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
