//! Durable state: the `KeyStore` trait and its engines.
//!
//! `DATABASE_URL` picks the engine once, in [`connect`]: SQLite (the embedded default, a file
//! created on first start) or PostgreSQL (shared by many replicas). Both run the same schema
//! from `migrations/{sqlite,postgres}/` at start, embedded in the binary, and share one SQL text
//! per query (`$N` placeholders work in both), in generic functions over the engine (`sql.rs`).

pub mod audit;
pub mod batches;
mod keys_sql;
mod migrations;
mod postgres;
mod record_rows;
mod records_sql;
mod rollup;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{DatabaseConfig, DatabaseEngine};
use crate::keys::ApiKey;
pub use audit::RecordStore;
pub use batches::{Batch, BatchStore};

pub use sql::{Engine, PostgresStore, SqlStore, SqliteStore};

/// Why a store call failed. Callers see "unavailable"; the cause is logged where handled.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

/// Where gateway keys live. Object-safe so `AppState` holds `Arc<dyn KeyStore>`.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a newly issued key with the hash of its secret.
    async fn insert(&self, key: &ApiKey, key_hash: &str) -> Result<(), StoreError>;
    /// The key whose secret hashes to `key_hash`, revoked or not.
    async fn find_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    /// One key by id.
    async fn get(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Keys ordered by id (creation order), starting after `after`, at most `limit`.
    async fn list(&self, after: Option<&str>, limit: u32) -> Result<Vec<ApiKey>, StoreError>;
    /// Replaces a key's editable fields (name, models, rules, metadata, expiry) with `key`'s;
    /// false when no key has that id.
    async fn update(&self, key: &ApiKey) -> Result<bool, StoreError>;
    /// Marks a key revoked at `at_ms`; false when no active key has that id.
    async fn revoke(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// A cheap round trip for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Whether a key active at `now_ms` has a budget or a token rule of its own (then `serve`
    /// builds the tokenizer before listening). One query, however many keys there are.
    async fn any_counts_tokens(&self, now_ms: i64) -> Result<bool, StoreError>;
}

/// The durable stores of one database: keys, audit records and batches share its pool.
#[derive(Clone)]
pub struct Stores {
    pub keys: Arc<dyn KeyStore>,
    pub records: Arc<dyn RecordStore>,
    pub batches: Arc<dyn BatchStore>,
}

/// Opens the configured database and brings its schema up to date.
pub async fn connect(config: &DatabaseConfig) -> Result<Stores, StoreError> {
    use secrecy::ExposeSecret;
    let url = config.url.expose_secret();
    Ok(match config.engine {
        DatabaseEngine::Sqlite => {
            let store = Arc::new(SqliteStore::connect(url, config.max_connections).await?);
            Stores {
                keys: store.clone(),
                records: store.clone(),
                batches: store,
            }
        }
        DatabaseEngine::Postgres => {
            let store = Arc::new(PostgresStore::connect(url, config).await?);
            Stores {
                keys: store.clone(),
                records: store.clone(),
                batches: store,
            }
        }
    })
}
