//! The process's one Redis connection ([`RedisLink`]), shared by the backends that use Redis
//! (limits, budgets, cache), each calling through its own breaker ([`RedisCalls`]).
//!
//! Every call is bounded by a timeout. A failure opens the calling backend's circuit breaker
//! for `BREAKER_OPEN`: its calls during that time fail at once (the backend then applies its
//! failure policy) instead of each waiting out a timeout; the first call after it is a probe,
//! and a success closes the breaker, so shared state resumes by itself. Breakers are per
//! backend so that one backend's failures (a cache entry too large to store in time, which a
//! caller can provoke) never switch another off (the limiter failing open). Connects lazily, so a Redis that is down at
//! start does not stop the gateway from starting. `redis::Script` reloads a script on
//! `NOSCRIPT` (after a Redis restart or failover).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// How long the breaker stays open after a failure before letting a probe through.
const BREAKER_OPEN: Duration = Duration::from_millis(500);

/// Why a Redis call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("redis error: {0}")]
    Backend(String),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("redis circuit open after a recent failure")]
    CircuitOpen,
}

/// A lazily connected Redis connection (one multiplexed, reconnecting `ConnectionManager`),
/// built once per process and shared.
pub struct RedisLink {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    timeout: Duration,
}

/// One backend's calls over the shared link: bounded by its timeout, through its own breaker,
/// named for what it serves (in logs).
pub struct RedisCalls {
    link: Arc<RedisLink>,
    breaker: Breaker,
    purpose: &'static str,
}

/// Opens after a failure; lets one probe through once `BREAKER_OPEN` has passed.
#[derive(Default)]
struct Breaker {
    open_until_ms: AtomicU64,
    probing: AtomicBool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Breaker {
    /// Whether a call may go to Redis now.
    fn admit(&self) -> bool {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return true;
        }
        // Open: only one caller probes once the open period is over.
        now_ms() >= open_until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn succeeded(&self, purpose: &str) {
        if self.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!(backend = purpose, "redis is back");
        }
        self.probing.store(false, Ordering::Release);
    }

    fn failed(&self, purpose: &str) {
        let was = self
            .open_until_ms
            .swap(now_ms() + BREAKER_OPEN.as_millis() as u64, Ordering::AcqRel);
        self.probing.store(false, Ordering::Release);
        if was == 0 {
            tracing::warn!(
                backend = purpose,
                "redis failed: circuit open, the failure policy applies"
            );
        }
    }
}

impl RedisLink {
    /// A link to `url`; calls are bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, LinkError> {
        let client = redis::Client::open(url).map_err(|e| LinkError::Backend(e.to_string()))?;
        Ok(Self {
            client,
            connection: OnceCell::new(),
            timeout,
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, LinkError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        self.connection
            .get_or_try_init(|| async {
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
            .map_err(|e| LinkError::Backend(e.to_string()))
    }
}

impl RedisCalls {
    /// `purpose`'s calls over `link`, with a breaker of their own.
    pub fn new(link: Arc<RedisLink>, purpose: &'static str) -> Self {
        Self {
            link,
            breaker: Breaker::default(),
            purpose,
        }
    }

    /// Runs `invocation` (a prepared script with its keys and arguments) within the timeout
    /// and through the breaker.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LinkError> {
        self.guarded(async |mut connection| invocation.invoke_async::<T>(&mut connection).await)
            .await
    }

    /// Runs one command within the timeout and through the breaker.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, LinkError> {
        self.guarded(async |mut connection| command.query_async::<T>(&mut connection).await)
            .await
    }

    async fn guarded<T>(
        &self,
        call: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, LinkError> {
        if !self.breaker.admit() {
            return Err(LinkError::CircuitOpen);
        }
        let call = async {
            let connection = self.link.connection().await?;
            call(connection)
                .await
                .map_err(|e| LinkError::Backend(e.to_string()))
        };
        let result = match tokio::time::timeout(self.link.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(LinkError::Timeout),
        };
        match &result {
            Ok(_) => self.breaker.succeeded(self.purpose),
            Err(_) => self.breaker.failed(self.purpose),
        }
        result
    }
}
