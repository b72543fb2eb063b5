//! Batches created through Tollgate: remembered (who created each, what it held) until a
//! poller prices their output. The trait beside its one SQL implementation for both engines.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::StoreError;
use super::sql::{Engine, SqlStore};
use crate::pricing::Nanos;

/// One batch as remembered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// OpenAI's batch id.
    pub id: String,
    pub created_at_ms: i64,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    /// `key`, `jwt` or `anonymous`, as records name callers.
    pub caller: String,
    /// The route every request of the batch goes to (`/v1/chat/completions`).
    pub endpoint: String,
    /// The one model its requests name, when its input was read.
    pub model: Option<String>,
    /// What its creation held on the caller's budgets (its worst case; 0 when none applied).
    pub held_nanos: Nanos,
    /// Lookups that failed in a row (they back off).
    pub failures: i64,
}

/// Where batches are remembered.
#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Remembers a batch (a batch already remembered is left as it is).
    async fn remember(&self, batch: &Batch) -> Result<(), StoreError>;
    /// Batches whose output has not been recorded and whose next lookup is due at `now_ms`,
    /// the longest due first, at most `limit`.
    async fn pending(&self, now_ms: i64, limit: u32) -> Result<Vec<Batch>, StoreError>;
    /// Puts a batch's next lookup off to `next_poll_ms`; `failed` counts one more failure in
    /// a row, otherwise the count starts again.
    async fn defer(&self, id: &str, next_poll_ms: i64, failed: bool) -> Result<(), StoreError>;
    /// Marks a batch recorded at `at_ms`; false when it already was (another replica got to
    /// it first), so each batch's output is recorded once.
    async fn claim(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
}

#[async_trait]
impl<DB> BatchStore for SqlStore<DB>
where
    DB: Engine,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
{
    async fn remember(&self, batch: &Batch) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO batches \
             (id, created_at_ms, key_id, user_id, caller, endpoint, model, held_nanos) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(batch.id.as_str())
        .bind(batch.created_at_ms)
        .bind(batch.key_id.as_deref())
        .bind(batch.user_id.as_deref())
        .bind(batch.caller.as_str())
        .bind(batch.endpoint.as_str())
        .bind(batch.model.as_deref())
        .bind(batch.held_nanos)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn pending(&self, now_ms: i64, limit: u32) -> Result<Vec<Batch>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_at_ms, key_id, user_id, caller, endpoint, model, held_nanos, \
             failures FROM batches WHERE accounted_at_ms IS NULL AND next_poll_ms <= $1 \
             ORDER BY next_poll_ms, created_at_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Batch {
                    id: row.try_get(0)?,
                    created_at_ms: row.try_get(1)?,
                    key_id: row.try_get(2)?,
                    user_id: row.try_get(3)?,
                    caller: row.try_get(4)?,
                    endpoint: row.try_get(5)?,
                    model: row.try_get(6)?,
                    held_nanos: row.try_get(7)?,
                    failures: row.try_get(8)?,
                })
            })
            .collect()
    }

    async fn defer(&self, id: &str, next_poll_ms: i64, failed: bool) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batches SET next_poll_ms = $1, \
             failures = CASE WHEN $2 = 1 THEN failures + 1 ELSE 0 END WHERE id = $3",
        )
        .bind(next_poll_ms)
        .bind(i64::from(failed))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE batches SET accounted_at_ms = $1 WHERE id = $2 AND accounted_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }
}
