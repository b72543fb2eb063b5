//! `AppState`: everything a request needs, built at start and shared by cheap clones. A live
//! reload ([`crate::reload`]) builds a new one beside it ([`AppState::reloaded`]) that shares
//! every backend and rebuilds what the configuration describes.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

use crate::budget::alert::AlertSender;
use crate::budget::{BudgetStore, Budgets, MemoryBudgets, RedisBudgets};
use crate::cache::{MemoryCache, RedisCache, ResponseCache};
use crate::config::Config;
use crate::content::ContentRules;
use crate::jwt::JwtVerifier;
use crate::key_cache::KeyCache;
use crate::limiter::RateLimiter;
use crate::limiter::memory::MemoryRateLimiter;
use crate::limiter::redis::RedisRateLimiter;
use crate::metrics::ModelLabels;
use crate::openai::operations::Operations;
use crate::pricing::PriceTable;
use crate::records::{RecordStore, RecordWriter, Recorder};
use crate::redis_link::{Endpoint, RedisCalls, RedisLink};
use crate::reload::Reloads;
use crate::store::{BatchStore, KeyStore, Stores};
use crate::upstream::pool::shared::{PoolStore, RedisPoolStore};
use crate::upstream::{Board, PoolContext, Upstream};

/// The shared handle. Clone is an `Arc` bump.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What every request may read; nothing here is mutated after start except through the
/// backends' own synchronisation.
pub struct Inner {
    /// The effective configuration, immutable.
    pub config: Config,
    /// The upstream provider: pooled client, its key, retry policy.
    pub upstream: Upstream,
    /// Pools' deployments and their live state (cooldowns, calls in flight, headroom), kept
    /// across reloads and shared with other replicas through Redis when it is configured.
    pub pools: PoolContext,
    /// The OpenAI operations the passthrough route forwards, and how each is governed.
    pub operations: Operations,
    /// Durable keys (SQLite or PostgreSQL).
    pub keys: Arc<dyn KeyStore>,
    /// Recent key lookups, so authentication costs no database round trip per request.
    pub key_cache: KeyCache,
    /// Rate-limit buckets: in Redis when `REDIS_URL` is set (shared by replicas), else here.
    pub limiter: Arc<dyn RateLimiter>,
    /// Verifies user JWTs; `None` when no JWT method is configured.
    pub jwt: Option<JwtVerifier>,
    /// Work that outlives a response (stream relays, accounting); awaited at shutdown.
    pub tasks: TaskTracker,
    /// Renders `/metrics`; `None` if another recorder was installed first.
    pub metrics: Option<PrometheusHandle>,
    /// Built-in prices with `[pricing]` applied (shared with stream relays).
    pub prices: Arc<PriceTable>,
    /// The audit queue's request-side handle.
    pub recorder: Recorder,
    /// Budget counters (in Redis when `REDIS_URL` is set), seeded from the records.
    pub budgets: Budgets,
    /// Where budget alerts go.
    pub alerts: AlertSender,
    /// Stored audit records (the admin API reads them).
    pub records: Arc<dyn RecordStore>,
    /// Batches created through Tollgate, until their output is recorded.
    pub batches: Arc<dyn BatchStore>,
    /// Cached answers (in Redis when `REDIS_URL` is set, else in memory).
    pub cache: ResponseCache,
    /// `[content]` rules, compiled.
    pub content: ContentRules,
    /// The model names metrics may carry as labels.
    pub model_labels: ModelLabels,
    /// Readiness's own calls to Redis, when configured (a breaker apart from the backends').
    pub redis_health: Option<Arc<RedisCalls>>,
    /// How `POST /admin/reload` asks the server to reload, and where the configuration came from.
    pub reload: Arc<Reloads>,
    /// The audit writer, taken by [`AppState::finish_records`] at shutdown.
    record_writer: Arc<std::sync::Mutex<Option<RecordWriter>>>,
}

impl AppState {
    /// Builds the state from a loaded configuration and the opened database, and starts the
    /// audit writer (so it must run inside the Tokio runtime).
    pub fn new(config: Config, stores: Stores) -> Result<Self, StateError> {
        let Stores {
            keys,
            records,
            batches,
        } = stores;
        let key_cache = KeyCache::new(config.keys.cache_ttl);
        // One Redis connection for every backend that uses Redis.
        let redis = match &config.limits.redis_url {
            Some(url) => {
                use secrecy::ExposeSecret;
                let endpoint = Endpoint::parse(url.expose_secret()).map_err(StateError::Redis)?;
                Some(Arc::new(
                    RedisLink::new(
                        &endpoint,
                        &config.limits.redis_tls,
                        config.limits.backend_timeout,
                    )
                    .map_err(|e| StateError::Redis(e.to_string()))?,
                ))
            }
            None => None,
        };
        let prefix = &config.limits.redis_prefix;
        let limiter: Arc<dyn RateLimiter> = match &redis {
            Some(link) => Arc::new(RedisRateLimiter::new(link.clone(), prefix)),
            None => Arc::new(MemoryRateLimiter::new()),
        };
        let pools = PoolContext {
            board: Arc::new(Board::default()),
            limiter: Arc::clone(&limiter),
            limits_fail_closed: config.limits.on_backend_error
                == crate::config::BackendErrorPolicy::FailClosed,
            shared: redis.as_ref().map(|link| {
                Arc::new(RedisPoolStore::new(link.clone(), prefix)) as Arc<dyn PoolStore>
            }),
        };
        // Installed before the upstream: pools register their counters once, when built.
        let metrics = crate::metrics::install();
        let upstream = Upstream::new(&config, &pools)?;
        let jwt = JwtVerifier::new(&config.jwt).map_err(StateError::Jwt)?;
        prepare_for(&config);
        let prices = Arc::new(PriceTable::with_overrides(&config.pricing));
        let (recorder, record_writer) = RecordWriter::start(&config.records, Arc::clone(&records));
        let budget_store: Arc<dyn BudgetStore> = match &redis {
            Some(link) => Arc::new(RedisBudgets::new(link.clone(), prefix)),
            None => Arc::new(MemoryBudgets::new()),
        };
        let mut budgets = Budgets::new(budget_store, Arc::clone(&records));
        if redis.is_some()
            && config.limits.budget_on_backend_error == crate::config::BudgetBackendPolicy::Local
        {
            budgets = budgets.with_local_fallback(config.limits.budget_outage_share);
        }
        let alerts = AlertSender::new(
            config.limits.alert_webhook.clone(),
            config.limits.alert_format,
        );
        let cache = match &redis {
            Some(link) => ResponseCache::new(
                Arc::new(RedisCache::new(link.clone(), prefix)),
                config.cache.ttl,
                "redis",
            ),
            None => ResponseCache::new(
                Arc::new(MemoryCache::new(config.cache.max_bytes)),
                config.cache.ttl,
                "memory",
            ),
        };
        let model_labels = ModelLabels::new(Arc::clone(&prices), &config);
        let redis_health = redis.map(|link| Arc::new(RedisCalls::new(link, "readiness")));
        Ok(Self(Arc::new(Inner {
            redis_health,
            reload: Arc::default(),
            model_labels,
            prices,
            recorder,
            budgets,
            alerts,
            records,
            batches,
            cache,
            content: ContentRules::new(&config.content),
            operations: operations_for(&config),
            record_writer: Arc::new(std::sync::Mutex::new(record_writer)),
            config,
            upstream,
            pools,
            keys,
            key_cache,
            limiter,
            jwt,
            tasks: TaskTracker::new(),
            metrics,
        })))
    }
}

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("building the upstream client: {0}")]
    Upstream(#[from] crate::upstream::ClientError),
    #[error("configuring Redis (limits.redis_url): {0}")]
    Redis(String),
    #[error("configuring JWT verification: {0}")]
    Jwt(String),
}

/// Warns about anonymous mode, and builds the tokenizer tables (~60 MB) at start when configured
/// rules or budgets count tokens (keys' own budgets and rules: `serve`, and the key cache).
fn prepare_for(config: &Config) {
    if config.anonymous.enabled {
        tracing::warn!(
            "anonymous mode is on: callers without credentials are served ([anonymous] enabled = true)"
        );
    }
    let counts_tokens = |rules: &[crate::limiter::rules::Rule]| {
        rules
            .iter()
            .any(|r| r.unit == crate::limiter::rules::Unit::Tokens)
    };
    if config.limits.enabled
        && (counts_tokens(&config.limits.rules)
            || config.jwt.rules.as_deref().is_some_and(counts_tokens)
            || config.anonymous.rules.as_deref().is_some_and(counts_tokens))
        || config.jwt.budget.is_some()
        || config.anonymous.budget.is_some()
        || config.models.values().any(|alias| {
            alias
                .pool
                .as_ref()
                .is_some_and(|pool| pool.members.iter().any(|m| m.tokens_per_minute.is_some()))
        })
    {
        crate::tokens::warm_up();
    }
}

/// The operations the passthrough route forwards: OpenAI's, plus `upstream.extra_paths`.
fn operations_for(config: &Config) -> Operations {
    Operations::new(
        &config
            .upstream
            .extra_paths
            .iter()
            .filter_map(|entry| crate::openai::operations::parse_extra(entry).ok())
            .collect::<Vec<_>>(),
    )
}

impl AppState {
    /// The state `config` describes beside this one: what the configuration describes is built
    /// anew (upstreams and models, prices, content rules, JWT verification, the cache's
    /// lifetime); every backend and queue is shared (keys, limiter and budget counters, the
    /// cache's store, records, batches, background tasks). Settings that would need new
    /// backends are refused before this ([`crate::reload::restart_needed`]).
    pub fn reloaded(&self, config: Config) -> Result<Self, StateError> {
        let old = &self.0;
        let prices = Arc::new(PriceTable::with_overrides(&config.pricing));
        prepare_for(&config);
        Ok(Self(Arc::new(Inner {
            upstream: Upstream::new(&config, &old.pools)?,
            pools: old.pools.clone(),
            operations: operations_for(&config),
            jwt: JwtVerifier::new(&config.jwt).map_err(StateError::Jwt)?,
            cache: old.cache.with_ttl(config.cache.ttl),
            content: ContentRules::new(&config.content),
            model_labels: ModelLabels::new(Arc::clone(&prices), &config),
            prices,
            config,
            keys: Arc::clone(&old.keys),
            key_cache: old.key_cache.renewed(),
            limiter: Arc::clone(&old.limiter),
            tasks: old.tasks.clone(),
            metrics: old.metrics.clone(),
            recorder: old.recorder.clone(),
            budgets: old.budgets.clone(),
            alerts: old.alerts.clone(),
            records: Arc::clone(&old.records),
            batches: Arc::clone(&old.batches),
            redis_health: old.redis_health.clone(),
            reload: Arc::clone(&old.reload),
            record_writer: Arc::clone(&old.record_writer),
        })))
    }

    /// Drains the audit queue into the database (or the spill file) and stops the writer.
    /// Called once the server has drained; a second call does nothing.
    pub async fn finish_records(&self) {
        let writer = self
            .record_writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            writer.finish().await;
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
