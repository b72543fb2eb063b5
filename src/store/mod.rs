//! Durable state: the `KeyStore` trait and its engines.
//!
//! `DATABASE_URL` picks the engine once, in [`connect`]: SQLite (the embedded default, a file
//! created on first start) or PostgreSQL (shared by many replicas). Both run the same schema
//! from `migrations/{sqlite,postgres}/` at start, embedded in the binary, and share one SQL text
//! per query (`$N` placeholders work in both), generated for each engine by `sql_key_store!`.

pub mod audit;
mod migrations;
mod postgres;
mod record_rows;
pub(crate) mod records;
mod rollup;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{DatabaseConfig, DatabaseEngine};
use crate::keys::ApiKey;
pub use audit::RecordStore;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

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
}

/// The durable stores of one database: keys and audit records share its pool.
#[derive(Clone)]
pub struct Stores {
    pub keys: Arc<dyn KeyStore>,
    pub records: Arc<dyn RecordStore>,
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
                records: store,
            }
        }
        DatabaseEngine::Postgres => {
            let store = Arc::new(PostgresStore::connect(url, config.max_connections).await?);
            Stores {
                keys: store.clone(),
                records: store,
            }
        }
    })
}

/// The columns of `api_keys`, in the order `key_from_row` reads them (a macro so that `concat!`
/// can build each query as one `&'static str`).
macro_rules! key_columns {
    () => {
        "id, name, prefix, owner, models, metadata, created_at_ms, expires_at_ms, revoked_at_ms, rules, budgets, routes"
    };
}
pub(crate) use key_columns;

/// A row of `api_keys` as both engines decode it.
type KeyRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    String,
    String,
);

fn key_from_row(row: KeyRow) -> Result<ApiKey, StoreError> {
    let (
        id,
        name,
        prefix,
        owner,
        models,
        metadata,
        created_at_ms,
        expires_at_ms,
        revoked_at_ms,
        rules,
        budgets,
        routes,
    ) = row;
    Ok(ApiKey {
        rules: serde_json::from_str(&rules)
            .map_err(|e| StoreError::Corrupt(format!("api_keys.rules of {id}: {e}")))?,
        models: serde_json::from_str(&models)
            .map_err(|e| StoreError::Corrupt(format!("api_keys.models of {id}: {e}")))?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("api_keys.metadata of {id}: {e}")))?,
        budgets: serde_json::from_str(&budgets)
            .map_err(|e| StoreError::Corrupt(format!("api_keys.budgets of {id}: {e}")))?,
        routes: serde_json::from_str(&routes)
            .map_err(|e| StoreError::Corrupt(format!("api_keys.routes of {id}: {e}")))?,
        id,
        name,
        prefix,
        owner,
        created_at_ms,
        expires_at_ms,
        revoked_at_ms,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// Implements `KeyStore` for an engine struct with a `pool` field; the SQL is shared.
macro_rules! sql_key_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $store {
            async fn insert(&self, key: &$crate::keys::ApiKey, key_hash: &str) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO api_keys (id, key_hash, prefix, name, owner, models, metadata, created_at_ms, expires_at_ms, rules, budgets, routes) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&key.id)
                .bind(key_hash)
                .bind(&key.prefix)
                .bind(&key.name)
                .bind(&key.owner)
                .bind($crate::store::to_json(&key.models))
                .bind($crate::store::to_json(&key.metadata))
                .bind(key.created_at_ms)
                .bind(key.expires_at_ms)
                .bind($crate::store::to_json(&key.rules))
                .bind($crate::store::to_json(&key.budgets))
                .bind($crate::store::to_json(&key.routes))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn update(&self, key: &$crate::keys::ApiKey) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    "UPDATE api_keys SET name = $1, models = $2, rules = $3, metadata = $4, expires_at_ms = $5, budgets = $6, routes = $7 WHERE id = $8",
                )
                .bind(&key.name)
                .bind($crate::store::to_json(&key.models))
                .bind($crate::store::to_json(&key.rules))
                .bind($crate::store::to_json(&key.metadata))
                .bind(key.expires_at_ms)
                .bind($crate::store::to_json(&key.budgets))
                .bind($crate::store::to_json(&key.routes))
                .bind(&key.id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn find_by_hash(&self, key_hash: &str) -> Result<Option<$crate::keys::ApiKey>, $crate::store::StoreError> {
                const SQL: &str = concat!("SELECT ", $crate::store::key_columns!(), " FROM api_keys WHERE key_hash = $1");
                let row: Option<$crate::store::KeyRow> = sqlx::query_as(SQL).bind(key_hash).fetch_optional(&self.pool).await?;
                row.map($crate::store::key_from_row).transpose()
            }

            async fn get(&self, id: &str) -> Result<Option<$crate::keys::ApiKey>, $crate::store::StoreError> {
                const SQL: &str = concat!("SELECT ", $crate::store::key_columns!(), " FROM api_keys WHERE id = $1");
                let row: Option<$crate::store::KeyRow> = sqlx::query_as(SQL).bind(id).fetch_optional(&self.pool).await?;
                row.map($crate::store::key_from_row).transpose()
            }

            async fn list(&self, after: Option<&str>, limit: u32) -> Result<Vec<$crate::keys::ApiKey>, $crate::store::StoreError> {
                const SQL: &str = concat!(
                    "SELECT ", $crate::store::key_columns!(), " FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2"
                );
                let rows: Vec<$crate::store::KeyRow> =
                    sqlx::query_as(SQL).bind(after.unwrap_or("")).bind(i64::from(limit)).fetch_all(&self.pool).await?;
                rows.into_iter().map($crate::store::key_from_row).collect()
            }

            async fn revoke(&self, id: &str, at_ms: i64) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
                    .bind(at_ms)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}
pub(crate) use sql_key_store;
