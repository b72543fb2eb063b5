//! The `api_keys` table's SQL, shared by both engines.

use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::sql::{Engine, SqlStore};
use super::{KeyStore, StoreError};
use crate::keys::ApiKey;

/// The columns of `api_keys`, in the order [`KeyRow`] reads them.
const KEY_COLUMNS: &str = "id, name, prefix, owner, models, metadata, created_at_ms, \
                           expires_at_ms, revoked_at_ms, rules, budgets, routes";

/// `SELECT` of every key column from `api_keys` where `condition` holds.
fn select_keys(condition: &str) -> String {
    format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {condition}")
}

static BY_HASH: LazyLock<String> = LazyLock::new(|| select_keys("key_hash = $1"));
static BY_ID: LazyLock<String> = LazyLock::new(|| select_keys("id = $1"));
static PAGE: LazyLock<String> = LazyLock::new(|| select_keys("id > $1 ORDER BY id LIMIT $2"));

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

#[async_trait]
impl<DB> KeyStore for SqlStore<DB>
where
    DB: Engine,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> KeyRow: FromRow<'r, DB::Row>,
{
    async fn insert(&self, key: &ApiKey, key_hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, key_hash, prefix, name, owner, models, metadata, \
             created_at_ms, expires_at_ms, rules, budgets, routes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(key.id.as_str())
        .bind(key_hash)
        .bind(key.prefix.as_str())
        .bind(key.name.as_str())
        .bind(key.owner.clone())
        .bind(to_json(&key.models))
        .bind(to_json(&key.metadata))
        .bind(key.created_at_ms)
        .bind(key.expires_at_ms)
        .bind(to_json(&key.rules))
        .bind(to_json(&key.budgets))
        .bind(to_json(&key.routes))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(BY_HASH.as_str())
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(key_from_row).transpose()
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(BY_ID.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(key_from_row).transpose()
    }

    async fn list(&self, after: Option<&str>, limit: u32) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(PAGE.as_str())
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(key_from_row).collect()
    }

    async fn update(&self, key: &ApiKey) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET name = $1, models = $2, rules = $3, metadata = $4, \
             expires_at_ms = $5, budgets = $6, routes = $7 WHERE id = $8",
        )
        .bind(key.name.as_str())
        .bind(to_json(&key.models))
        .bind(to_json(&key.rules))
        .bind(to_json(&key.metadata))
        .bind(key.expires_at_ms)
        .bind(to_json(&key.budgets))
        .bind(to_json(&key.routes))
        .bind(key.id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn revoke(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn any_counts_tokens(&self, now_ms: i64) -> Result<bool, StoreError> {
        // `budgets` is `{}` without a budget; a token rule's JSON names `"tokens"`.
        let found = sqlx::query(
            "SELECT 1 FROM api_keys WHERE revoked_at_ms IS NULL \
             AND (expires_at_ms IS NULL OR expires_at_ms > $1) \
             AND (budgets <> '{}' OR rules LIKE '%\"tokens\"%') LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }
}

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
    let corrupt = |column: &str, e: serde_json::Error| {
        StoreError::Corrupt(format!("api_keys.{column} of {id}: {e}"))
    };
    Ok(ApiKey {
        rules: serde_json::from_str(&rules).map_err(|e| corrupt("rules", e))?,
        models: serde_json::from_str(&models).map_err(|e| corrupt("models", e))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", e))?,
        budgets: serde_json::from_str(&budgets).map_err(|e| corrupt("budgets", e))?,
        routes: serde_json::from_str(&routes).map_err(|e| corrupt("routes", e))?,
        id,
        name,
        prefix,
        owner,
        created_at_ms,
        expires_at_ms,
        revoked_at_ms,
    })
}

/// A value as the JSON text column that holds it.
pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}
