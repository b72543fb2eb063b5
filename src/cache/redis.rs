//! The shared cache engine: answers in Redis under `{prefix}cache:{digest}`, with a TTL, so
//! every replica answers from what any replica fetched.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{CacheError, CacheKey, CacheStore};
use crate::redis_link::{RedisCalls, RedisLink};

/// Keys deleted per `SCAN` step when purging.
const PURGE_BATCH: usize = 500;

/// Cached answers in Redis.
pub struct RedisCache {
    link: RedisCalls,
    prefix: String,
}

impl RedisCache {
    /// A cache on the shared `link`, its keys under `prefix`.
    pub fn new(link: Arc<RedisLink>, prefix: &str) -> Self {
        Self {
            link: RedisCalls::new(link, "cache"),
            prefix: format!("{prefix}cache:"),
        }
    }

    fn name(&self, key: &CacheKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }
}

fn failed(error: crate::redis_link::LinkError) -> CacheError {
    CacheError(error.to_string())
}

#[async_trait::async_trait]
impl CacheStore for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        let value: Option<Vec<u8>> = self
            .link
            .query(redis::cmd("GET").arg(self.name(key)))
            .await
            .map_err(failed)?;
        Ok(value.map(Bytes::from))
    }

    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let seconds = ttl.as_secs().max(1);
        self.link
            .query::<()>(
                redis::cmd("SET")
                    .arg(self.name(key))
                    .arg(value.as_ref())
                    .arg("EX")
                    .arg(seconds),
            )
            .await
            .map_err(failed)
    }

    async fn purge(&self) -> Result<u64, CacheError> {
        let pattern = format!("{}*", self.prefix);
        let mut purged = 0u64;
        // A cluster spreads the keys over its primaries: each is scanned on its own.
        for node in self.link.primaries().await.map_err(failed)? {
            let mut cursor: u64 = 0;
            loop {
                let (next, names): (u64, Vec<String>) = self
                    .link
                    .query_on(
                        &node,
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(PURGE_BATCH),
                    )
                    .await
                    .map_err(failed)?;
                if !names.is_empty() {
                    let removed: u64 = self
                        .link
                        .query(redis::cmd("UNLINK").arg(&names))
                        .await
                        .map_err(failed)?;
                    purged += removed;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(purged)
    }
}
