//! How replicas tell each other what their pools' deployments answered: a [`PoolStore`] keeps
//! each deployment's cooldown and headroom as durations, and [`sync`] publishes this
//! replica's changes and takes in everyone's four times a second. Without Redis there is one
//! replica and the [`Board`] alone is the truth; [`MemoryPoolStore`] is the same contract in
//! memory (the behaviour suite runs against both).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::deployment::{Board, Shared, now_ms};
use crate::redis_link::{RedisCalls, RedisLink};

/// Why the shared state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("pool state backend failed: {0}")]
pub struct PoolStoreError(String);

/// Where replicas share their deployments' state.
#[async_trait]
pub trait PoolStore: Send + Sync {
    /// Tells the others what changed here: a cooldown is extended to the longer one (0 leaves
    /// it as it is: a replica's recovery is its own), a headroom reading replaces the last.
    async fn publish(&self, changes: &[(Arc<str>, Shared)]) -> Result<(), PoolStoreError>;
    /// What is known of each of `deployments`, in order.
    async fn fetch(&self, deployments: &[Arc<str>]) -> Result<Vec<Shared>, PoolStoreError>;
}

/// The contract in memory: one process's replicas (tests) share one of these.
#[derive(Debug, Default)]
pub struct MemoryPoolStore {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    cooling_until: Option<Instant>,
    headroom: Option<(u32, Instant)>,
}

#[async_trait]
impl PoolStore for MemoryPoolStore {
    async fn publish(&self, changes: &[(Arc<str>, Shared)]) -> Result<(), PoolStoreError> {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, shared) in changes {
            let entry = entries.entry(Arc::clone(name)).or_default();
            if shared.cooling_ms > 0 {
                let until = now + Duration::from_millis(shared.cooling_ms);
                entry.cooling_until = Some(
                    entry
                        .cooling_until
                        .map_or(until, |before| before.max(until)),
                );
            }
            if let Some((share, for_ms)) = shared.headroom {
                entry.headroom = Some((share, now + Duration::from_millis(for_ms)));
            }
        }
        Ok(())
    }

    async fn fetch(&self, deployments: &[Arc<str>]) -> Result<Vec<Shared>, PoolStoreError> {
        let now = Instant::now();
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let left = |until: Instant| {
            u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        };
        Ok(deployments
            .iter()
            .map(|name| {
                let entry = entries.get(name).copied().unwrap_or_default();
                Shared {
                    cooling_ms: entry.cooling_until.map_or(0, left),
                    headroom: entry
                        .headroom
                        .filter(|(_, until)| *until > now)
                        .map(|(share, until)| (share, left(until))),
                }
            })
            .collect())
    }
}

/// The contract in Redis: `PREFIX:{pool}:cool:NAME` (set for as long as it cools) and
/// `PREFIX:{pool}:room:NAME` (the headroom, for as long as it holds), on one hash tag so one
/// script reads them all, on Redis's clock.
pub struct RedisPoolStore {
    calls: RedisCalls,
    prefix: String,
    publish: redis::Script,
    fetch: redis::Script,
}

impl RedisPoolStore {
    /// A store over the process's Redis link, its keys under `prefix`.
    pub fn new(link: Arc<RedisLink>, prefix: &str) -> Self {
        Self {
            calls: RedisCalls::new(link, "pools"),
            prefix: prefix.to_owned(),
            publish: redis::Script::new(PUBLISH),
            fetch: redis::Script::new(FETCH),
        }
    }

    fn keys(&self, name: &str) -> [String; 2] {
        [
            format!("{}:{{pool}}:cool:{name}", self.prefix),
            format!("{}:{{pool}}:room:{name}", self.prefix),
        ]
    }
}

/// KEYS: (cool, room) per deployment; ARGV: (cooling ms, headroom or -1, its ms) per one.
const PUBLISH: &str = r"
for i = 1, #KEYS, 2 do
  local j = (i - 1) / 2 * 3
  local cooling = tonumber(ARGV[j + 1])
  if cooling > 0 and redis.call('PTTL', KEYS[i]) < cooling then
    redis.call('SET', KEYS[i], '1', 'PX', cooling)
  end
  if tonumber(ARGV[j + 2]) >= 0 and tonumber(ARGV[j + 3]) > 0 then
    redis.call('SET', KEYS[i + 1], ARGV[j + 2], 'PX', ARGV[j + 3])
  end
end
return 1
";

/// KEYS as PUBLISH's; answers (cooling ms, headroom or -1, its ms) per deployment.
const FETCH: &str = r"
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = math.max(redis.call('PTTL', KEYS[i]), 0)
  local share = redis.call('GET', KEYS[i + 1])
  out[#out + 1] = tonumber(share or '-1')
  out[#out + 1] = math.max(redis.call('PTTL', KEYS[i + 1]), 0)
end
return out
";

#[async_trait]
impl PoolStore for RedisPoolStore {
    async fn publish(&self, changes: &[(Arc<str>, Shared)]) -> Result<(), PoolStoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut invocation = self.publish.prepare_invoke();
        for (name, shared) in changes {
            for key in self.keys(name) {
                invocation.key(key);
            }
            let (share, for_ms) = shared
                .headroom
                .map_or((-1, 0), |(share, ms)| (i64::from(share), ms));
            invocation.arg(shared.cooling_ms).arg(share).arg(for_ms);
        }
        self.calls
            .invoke::<i64>(&invocation)
            .await
            .map(drop)
            .map_err(|e| PoolStoreError(e.to_string()))
    }

    async fn fetch(&self, deployments: &[Arc<str>]) -> Result<Vec<Shared>, PoolStoreError> {
        if deployments.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.fetch.prepare_invoke();
        for name in deployments {
            for key in self.keys(name) {
                invocation.key(key);
            }
        }
        let values: Vec<i64> = self
            .calls
            .invoke(&invocation)
            .await
            .map_err(|e| PoolStoreError(e.to_string()))?;
        Ok(values
            .chunks_exact(3)
            .map(|chunk| Shared {
                cooling_ms: u64::try_from(chunk[0]).unwrap_or(0),
                headroom: (chunk[1] >= 0 && chunk[2] > 0).then(|| {
                    (
                        u32::try_from(chunk[1]).unwrap_or(0),
                        u64::try_from(chunk[2]).unwrap_or(0),
                    )
                }),
            })
            .collect())
    }
}

/// How often replicas exchange their deployments' state.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);

/// Publishes `board`'s changes and takes in the others' every [`SYNC_EVERY`], until `stop`
/// (the server's drain). A failing store is logged (throttled) and tried again at the next tick.
pub async fn sync(board: Arc<Board>, store: Arc<dyn PoolStore>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(error) = sync_once(&board, store.as_ref()).await {
            static THROTTLE: crate::log_throttle::LogThrottle =
                crate::log_throttle::LogThrottle::new();
            if let Some(held_back) = THROTTLE.allow() {
                tracing::warn!(error = %error, held_back, "pool state not shared with the other replicas this time");
            }
            crate::metrics::record_backend_error("pools");
        }
    }
}

/// One exchange: publish what changed here, take in what is known everywhere.
pub async fn sync_once(board: &Board, store: &dyn PoolStore) -> Result<(), PoolStoreError> {
    let all = board.all();
    if all.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let changes: Vec<(Arc<str>, Shared)> = all
        .iter()
        .filter_map(|(name, state)| Some((Arc::clone(name), state.take_unpublished(now)?)))
        .collect();
    if let Err(error) = store.publish(&changes).await {
        // Not told: try again next time.
        for (name, _) in &changes {
            if let Some((_, state)) = all.iter().find(|(n, _)| n == name) {
                state.mark_unpublished();
            }
        }
        return Err(error);
    }
    let names: Vec<Arc<str>> = all.iter().map(|(name, _)| Arc::clone(name)).collect();
    let known = store.fetch(&names).await?;
    let now = now_ms();
    for ((_, state), shared) in all.iter().zip(known) {
        state.merge(&shared, now);
    }
    Ok(())
}
