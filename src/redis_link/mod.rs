//! The process's one Redis connection ([`RedisLink`]), shared by the backends that use Redis
//! (limits, budgets, cache), each calling through its own breaker ([`RedisCalls`]).
//!
//! `REDIS_URL` may name one server, a Redis Cluster or a Sentinel-managed primary, over TCP or
//! TLS ([`endpoint`]); [`connection`] opens the right connection for each. Every call is
//! bounded by a timeout. A failure opens the calling backend's circuit breaker for
//! `BREAKER_OPEN`: its calls during that time fail at once (the backend then applies its
//! failure policy) instead of each waiting out a timeout; the first call after it is a probe,
//! and a success closes the breaker, so shared state resumes by itself. Breakers are per
//! backend so that one backend's failures (a cache entry too large to store in time, which a
//! caller can provoke) never switch another off (the limiter failing open).
//!
//! Connects lazily, so a Redis that is down at start does not stop the gateway from starting.
//! A connection attempt runs on its own, bounded by the connect timeout rather than by the
//! call that started it: a TLS handshake to a managed service that takes longer than one
//! call's 50 ms still completes, and the calls after it find the connection open.
//! `redis::Script` reloads a script on `NOSCRIPT` (after a Redis restart or failover).

pub mod connection;
pub mod endpoint;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

pub use connection::TlsFiles;
use connection::{Connection, Connector};
pub use endpoint::{Endpoint, Topology};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

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

/// A lazily connected Redis connection, built once per process and shared.
pub struct RedisLink {
    connector: Arc<Connector>,
    /// The open connection, once there is one.
    current: RwLock<Option<Connection>>,
    /// The connection attempt under way, awaited by every call until it ends.
    attempt: Mutex<Option<Attempt>>,
    timeout: Duration,
    /// When this link's calls began timing out with no answer since (ms; 0: they are not).
    timing_out_since_ms: AtomicU64,
}

/// One connection attempt, shared by the calls waiting for it.
type Attempt = Shared<BoxFuture<'static, Result<Connection, LinkError>>>;

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

/// A call the breaker let through: a probe clears its claim however the call ends (a probe
/// whose caller went away must not keep the breaker open for good).
struct Admitted<'a> {
    probe: Option<&'a Breaker>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.probe {
            breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Breaker {
    /// Whether a call may go to Redis now.
    fn admit(&self) -> Option<Admitted<'_>> {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return Some(Admitted { probe: None });
        }
        // Open: only one caller probes once the open period is over.
        let probe = now_ms() >= open_until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        probe.then_some(Admitted { probe: Some(self) })
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
    /// A link to what `endpoint` names, with `tls` files for the TLS schemes; calls are
    /// bounded by `timeout`.
    pub fn new(endpoint: &Endpoint, tls: &TlsFiles, timeout: Duration) -> Result<Self, LinkError> {
        Ok(Self {
            connector: Arc::new(Connector::new(endpoint, tls, timeout)?),
            current: RwLock::new(None),
            attempt: Mutex::new(None),
            timeout,
            timing_out_since_ms: AtomicU64::new(0),
        })
    }

    async fn connection(&self) -> Result<Connection, LinkError> {
        if let Some(open) = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(open);
        }
        let attempt = self
            .attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| self.start_attempt())
            .clone();
        let outcome = attempt.clone().await;
        // The first call to see the attempt end publishes its connection (or clears the
        // failed attempt, so the next call tries again).
        let mut pending = self.attempt.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.as_ref().is_some_and(|p| p.ptr_eq(&attempt)) {
            *pending = None;
            if let Ok(open) = &outcome {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(open.clone());
            }
        }
        outcome
    }

    /// Starts connecting on a task of its own, bounded by the connect timeout.
    fn start_attempt(&self) -> Attempt {
        let connector = Arc::clone(&self.connector);
        let timeout = self.timeout;
        let bound = connection::connect_timeout(timeout) * 2;
        tokio_util::task::TaskTracker::new()
            .spawn(async move {
                tokio::time::timeout(bound, connector.connect())
                    .await
                    .unwrap_or(Err(LinkError::Timeout))
            })
            .map(|joined| joined.unwrap_or_else(|e| Err(LinkError::Backend(e.to_string()))))
            .boxed()
            .shared()
    }

    /// A Sentinel link forgets its primary, so the next call asks the Sentinels which server
    /// is primary now: at once when the primary went away or was demoted (a refused or dropped
    /// connection, `READONLY`, `MASTERDOWN`), and when calls have timed out for
    /// [`SILENT_PRIMARY`] without one success (a primary cut off by the network). One slow or
    /// failing command (which a caller can provoke with a large cache entry) does neither.
    fn note(&self, outcome: Outcome<'_>) {
        if !self.connector.follows_primary() {
            return;
        }
        let forget = match outcome {
            Outcome::Answered => {
                self.timing_out_since_ms.store(0, Ordering::Release);
                false
            }
            Outcome::Failed(error) => {
                error.is_io_error()
                    || error.is_connection_refusal()
                    || error.is_connection_dropped()
                    || matches!(
                        error.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
                        )
                    )
            }
            Outcome::TimedOut => {
                let now = now_ms();
                let since = match self.timing_out_since_ms.compare_exchange(
                    0,
                    now,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => now,
                    Err(since) => since,
                };
                now.saturating_sub(since) >= SILENT_PRIMARY.as_millis() as u64
            }
        };
        if forget {
            self.timing_out_since_ms.store(0, Ordering::Release);
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

/// How a call over the link ended, for [`RedisLink::note`].
enum Outcome<'a> {
    Answered,
    Failed(&'a redis::RedisError),
    TimedOut,
}

/// How long a Sentinel link's calls may time out, without one answer, before it asks the
/// Sentinels for the primary again.
const SILENT_PRIMARY: Duration = Duration::from_secs(2);

/// The `HOST:PORT` of each healthy primary in `CLUSTER NODES` output.
fn cluster_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let address = fields.get(1)?.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        })
        .collect()
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

    /// The nodes a keyspace scan walks: `None` for the one server; in a cluster, each
    /// primary's `HOST:PORT`.
    pub async fn primaries(&self) -> Result<Vec<Option<(String, u16)>>, LinkError> {
        self.guarded(async |connection| {
            let Connection::Cluster(mut cluster) = connection else {
                return Ok(vec![None]);
            };
            let nodes = cluster
                .route_command(
                    redis::cmd("CLUSTER").arg("NODES").clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                )
                .await?;
            let text: String = redis::from_redis_value(nodes)?;
            Ok(cluster_primaries(&text).into_iter().map(Some).collect())
        })
        .await
    }

    /// Runs `command` on `node` (one of [`Self::primaries`]), within the timeout and through
    /// the breaker.
    pub async fn query_on<T: redis::FromRedisValue>(
        &self,
        node: &Option<(String, u16)>,
        command: &redis::Cmd,
    ) -> Result<T, LinkError> {
        let Some((host, port)) = node else {
            return self.query(command).await;
        };
        self.guarded(async |connection| {
            let Connection::Cluster(mut cluster) = connection else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "a node was named, but the link is not to a cluster",
                )));
            };
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            });
            Ok(redis::from_redis_value(
                cluster.route_command(command.clone(), routing).await?,
            )?)
        })
        .await
    }

    async fn guarded<T>(
        &self,
        call: impl AsyncFnOnce(Connection) -> redis::RedisResult<T>,
    ) -> Result<T, LinkError> {
        let Some(_admitted) = self.breaker.admit() else {
            return Err(LinkError::CircuitOpen);
        };
        let call = async {
            let connection = self.link.connection().await?;
            call(connection).await.map_err(|error| {
                self.link.note(Outcome::Failed(&error));
                LinkError::Backend(error.to_string())
            })
        };
        let result = match tokio::time::timeout(self.link.timeout, call).await {
            Ok(result) => result,
            Err(_) => {
                self.link.note(Outcome::TimedOut);
                Err(LinkError::Timeout)
            }
        };
        match &result {
            Ok(_) => {
                self.link.note(Outcome::Answered);
                self.breaker.succeeded(self.purpose);
            }
            Err(_) => self.breaker.failed(self.purpose),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_whose_caller_went_away_does_not_keep_the_breaker_open() {
        let breaker = Breaker::default();
        breaker.failed("test");
        breaker.open_until_ms.store(1, Ordering::Release);
        let probe = breaker.admit().expect("the open period is over: one probe");
        assert!(breaker.admit().is_none(), "one probe at a time");
        drop(probe);
        assert!(
            breaker.admit().is_some(),
            "the abandoned probe's claim is cleared"
        );
    }

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let nodes = "\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1 4 connected\n\
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460\n\
67ed 127.0.0.1:30002@31002,host.example master - 0 1 2 connected 5461-10922\n\
292f 127.0.0.1:30003@31003 master,fail - 0 1 3 disconnected 10923-16383\n";
        assert_eq!(
            cluster_primaries(nodes),
            vec![
                ("127.0.0.1".to_owned(), 30001),
                ("127.0.0.1".to_owned(), 30002)
            ]
        );
    }
}
