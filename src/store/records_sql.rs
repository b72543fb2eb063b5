//! The audit records' SQL, shared by both engines: pruning, reading and the usage sums. How
//! a batch is inserted with its rollups is the engine's own ([`Engine::insert_records`]).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Row, Type};

use super::StoreError;
use super::audit::{
    GroupBy, RecentQuery, Record, RecordStore, SpendScope, UsageQuery, UsageRow, UsageTotals,
};
use super::record_rows::{RECORD_COLUMNS, record_from_row};
use super::rollup::{UsagePiece, day_name, hour_name, merge_usage, usage_pieces};
use super::sql::{Engine, SqlStore};
use crate::pricing::Nanos;

#[async_trait]
impl<DB> RecordStore for SqlStore<DB>
where
    DB: Engine,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> Option<i64>: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> i32: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
{
    async fn insert(&self, records: &[Record]) -> Result<u64, StoreError> {
        DB::insert_records(&self.pool, records).await
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            // In slices, so a long backlog never holds one huge transaction.
            let done = sqlx::query(
                "DELETE FROM requests WHERE id IN \
                 (SELECT id FROM requests WHERE created_at_ms < $1 LIMIT 10000)",
            )
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
            let done = DB::rows_affected(&done);
            deleted += done;
            if done < 10_000 {
                break;
            }
        }
        sqlx::query("DELETE FROM usage_hourly WHERE hour_ms + 3600000 <= $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM usage_daily WHERE day_ms + 86400000 <= $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        Ok(deleted)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM requests")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn recent(&self, query: &RecentQuery) -> Result<Vec<Record>, StoreError> {
        let mut sql = sqlx::QueryBuilder::<DB>::new(format!(
            "SELECT {RECORD_COLUMNS} FROM requests WHERE 1 = 1"
        ));
        if let Some(key_id) = &query.key_id {
            sql.push(" AND key_id = ").push_bind(key_id.as_str());
        }
        if let Some(user_id) = &query.user_id {
            sql.push(" AND user_id = ").push_bind(user_id.as_str());
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ").push_bind(i32::from(status));
        }
        if let Some((before_ms, before_id)) = &query.before {
            sql.push(" AND (created_at_ms < ")
                .push_bind(*before_ms)
                .push(" OR (created_at_ms = ")
                .push_bind(*before_ms)
                .push(" AND id < ")
                .push_bind(before_id.as_str())
                .push("))");
        }
        sql.push(" ORDER BY created_at_ms DESC, id DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn spend(&self, scope: &SpendScope, since_ms: i64) -> Result<Nanos, StoreError> {
        let mut sql = sqlx::QueryBuilder::<DB>::new(
            "SELECT CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT) FROM usage_hourly \
             WHERE hour_ms >= ",
        );
        sql.push_bind(since_ms);
        match scope {
            SpendScope::Key(key) => sql.push(" AND key_id = ").push_bind(key.as_str()),
            SpendScope::KeyUser(key, user) => sql
                .push(" AND key_id = ")
                .push_bind(key.as_str())
                .push(" AND user_id = ")
                .push_bind(user.as_str()),
            SpendScope::Jwt(user) => sql
                .push(" AND caller = 'jwt' AND user_id = ")
                .push_bind(user.as_str()),
            SpendScope::Anonymous(user) => sql
                .push(" AND caller = 'anonymous' AND user_id = ")
                .push_bind(user.as_str()),
        };
        let (spent,): (i64,) = sql.build_query_as().fetch_one(&self.pool).await?;
        Ok(spent)
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        // The pieces (whole days, and the hours at either end) are read at once, on separate
        // pool connections, then added up.
        let reads = usage_pieces(query)
            .into_iter()
            .map(|piece| self.usage_piece(query, piece));
        let pieces = futures_util::future::try_join_all(reads).await?;
        Ok(merge_usage(pieces))
    }
}

impl<DB> SqlStore<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB> + Type<DB>,
{
    /// One rollup's answer to a usage query: its groups' sums over `piece`'s range.
    async fn usage_piece(
        &self,
        query: &UsageQuery,
        piece: UsagePiece,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let groups: Vec<String> = query
            .group_by
            .iter()
            .map(|g| g.column(piece.time))
            .collect();
        let sums: Vec<String> = UsageTotals::COLUMNS
            .iter()
            .map(|c| format!("CAST(SUM({c}) AS BIGINT)"))
            .collect();
        let mut sql = sqlx::QueryBuilder::<DB>::new("SELECT ");
        for column in &groups {
            sql.push(column).push(", ");
        }
        sql.push(sums.join(", "))
            .push(" FROM ")
            .push(piece.table)
            .push(" WHERE ")
            .push(piece.time)
            .push(" >= ")
            .push_bind(piece.from_ms)
            .push(" AND ")
            .push(piece.time)
            .push(" < ")
            .push_bind(piece.to_ms);
        if !groups.is_empty() {
            let list = groups.join(", ");
            sql.push(" GROUP BY ")
                .push(&list)
                .push(" ORDER BY ")
                .push(&list);
        }
        let rows = sql.build().fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut usage = UsageRow::default();
            for (i, group) in query.group_by.iter().enumerate() {
                match group {
                    GroupBy::Key => usage.key_id = Some(row.try_get(i)?),
                    GroupBy::User => usage.user_id = Some(row.try_get(i)?),
                    GroupBy::Model => usage.model = Some(row.try_get(i)?),
                    GroupBy::Day => usage.day = Some(day_name(row.try_get(i)?)),
                    GroupBy::Hour => usage.hour = Some(hour_name(row.try_get(i)?)),
                }
            }
            let mut totals = [0; 10];
            for (j, value) in totals.iter_mut().enumerate() {
                *value = row
                    .try_get::<Option<i64>, _>(groups.len() + j)?
                    .unwrap_or_default();
            }
            usage.totals = UsageTotals::from_values(totals);
            if usage.totals.requests > 0 {
                out.push(usage);
            }
        }
        Ok(out)
    }
}
