//! The audit records' SQL, shared by both engines (`sql_record_store!`).
//!
//! Records are inserted many rows per statement inside one transaction, `ON CONFLICT (id) DO
//! NOTHING RETURNING id`, so that a replayed spill file stores each record once; the hourly
//! rollup is then updated with exactly the rows that were new, rows sorted by key so that
//! replicas upserting the same hours cannot deadlock.

use super::audit::Record;
use crate::openai::usage::Usage;
use crate::store::StoreError;

/// Rows per PostgreSQL statement at most: 34 columns × 1,900 rows stays under its 65,535
/// parameters.
pub(crate) const PG_INSERT_CHUNK: usize = 1900;

/// Statements a PostgreSQL batch is split into, sent at once (see `insert_with_rollup_in_sql!`).
pub(crate) const PG_PARALLEL: usize = 4;

/// The columns of `requests`, in the order [`bind_record!`] binds them.
macro_rules! record_columns {
    () => {
        "id, created_at_ms, request_id, key_id, user_id, caller, method, route, model_requested, \
         model_used, upstream, status, outcome, error_kind, stream, prompt_tokens, cached_tokens, \
         completion_tokens, reasoning_tokens, image_input_tokens, images, image_size, image_quality, \
         cost_micros, estimated, cache_status, latency_ms, upstream_ms, prompt_chars, \
         completion_chars, rules_fired, client_ip, prompt_text, completion_text"
    };
}
pub(crate) use record_columns;

/// The row counts a multi-row statement is built for. A batch is cut into chunks of these sizes
/// (largest first), so the engine sees a handful of distinct statements, each prepared once per
/// connection and then reused from sqlx's statement cache, instead of a new statement (parsed
/// and planned: ~400,000 instructions for a record insert) for every batch size.
/// 34 columns × 256 rows stays under SQLite's 32,766 bound parameters.
const CHUNK_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// `items` in chunks of [`CHUNK_SIZES`], largest first.
pub(crate) fn fixed_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNK_SIZES.into_iter().find(|size| *size <= items.len())?;
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

/// A whole number as the databases store it (BIGINT is signed).
pub(crate) fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads one `requests` row (selected with [`record_columns!`]) of either engine.
pub(crate) fn record_from_row<'r, R>(row: &'r R) -> Result<Record, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let count = |i: usize| -> Result<u64, StoreError> {
        Ok(u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or(0))
    };
    let rules: String = row.try_get(30)?;
    Ok(Record {
        id: row.try_get(0)?,
        created_at_ms: row.try_get(1)?,
        request_id: row.try_get(2)?,
        key_id: row.try_get(3)?,
        user_id: row.try_get(4)?,
        caller: row.try_get(5)?,
        method: row.try_get(6)?,
        route: row.try_get(7)?,
        model_requested: row.try_get(8)?,
        model_used: row.try_get(9)?,
        upstream: row.try_get(10)?,
        status: u16::try_from(row.try_get::<i32, _>(11)?).unwrap_or(0),
        outcome: row.try_get(12)?,
        error_kind: row.try_get(13)?,
        stream: row.try_get(14)?,
        usage: Usage {
            prompt_tokens: count(15)?,
            cached_tokens: count(16)?,
            completion_tokens: count(17)?,
            reasoning_tokens: count(18)?,
            image_input_tokens: count(19)?,
        },
        images: count(20)?,
        image_size: row.try_get(21)?,
        image_quality: row.try_get(22)?,
        cost_micros: row.try_get(23)?,
        estimated: row.try_get(24)?,
        cache_status: row.try_get(25)?,
        latency_ms: row.try_get(26)?,
        upstream_ms: row.try_get(27)?,
        prompt_chars: row.try_get(28)?,
        completion_chars: row.try_get(29)?,
        rules_fired: serde_json::from_str(&rules)
            .map_err(|e| StoreError::Corrupt(format!("requests.rules_fired: {e}")))?,
        client_ip: row.try_get(31)?,
        prompt_text: row.try_get(32)?,
        completion_text: row.try_get(33)?,
    })
}

/// The rollup's upsert: a row already there for the hour, caller, key, user and model gets the
/// new sums added.
macro_rules! rollup_upsert {
    ($table:literal, $key:literal) => {
        concat!(
            " ON CONFLICT ",
            $key,
            " DO UPDATE SET ",
            "requests = ",
            $table,
            ".requests + excluded.requests, ",
            "errors = ",
            $table,
            ".errors + excluded.errors, ",
            "prompt_tokens = ",
            $table,
            ".prompt_tokens + excluded.prompt_tokens, ",
            "cached_tokens = ",
            $table,
            ".cached_tokens + excluded.cached_tokens, ",
            "completion_tokens = ",
            $table,
            ".completion_tokens + excluded.completion_tokens, ",
            "reasoning_tokens = ",
            $table,
            ".reasoning_tokens + excluded.reasoning_tokens, ",
            "images = ",
            $table,
            ".images + excluded.images, ",
            "cost_micros = ",
            $table,
            ".cost_micros + excluded.cost_micros, ",
            "unpriced = ",
            $table,
            ".unpriced + excluded.unpriced, ",
            "estimated = ",
            $table,
            ".estimated + excluded.estimated"
        )
    };
}

/// Binds a rollup row's sums (`s`, a `rollup::RollupSums`) onto `row`, in the rollups' column order.
macro_rules! push_sums {
    ($row:ident, $s:ident) => {
        $row.push_bind($s.requests)
            .push_bind($s.errors)
            .push_bind($s.prompt_tokens)
            .push_bind($s.cached_tokens)
            .push_bind($s.completion_tokens)
            .push_bind($s.reasoning_tokens)
            .push_bind($s.images)
            .push_bind($s.cost_micros)
            .push_bind($s.unpriced)
            .push_bind($s.estimated)
    };
}
pub(crate) use push_sums;

/// The sums of a rollup row over records (PostgreSQL's insert computes them in SQL).
macro_rules! rollup_sums {
    () => {
        "COUNT(*), COUNT(*) FILTER (WHERE status >= 400), SUM(prompt_tokens), SUM(cached_tokens), \
         SUM(completion_tokens), SUM(reasoning_tokens), SUM(images), COALESCE(SUM(cost_micros), 0), \
         COUNT(*) FILTER (WHERE cost_micros IS NULL AND status < 400), \
         COUNT(*) FILTER (WHERE estimated)"
    };
}
pub(crate) use rollup_sums;
pub(crate) use rollup_upsert;

/// Pushes `VALUES (...), (...)` for `chunk` in [`record_columns!`] order onto `query`.
macro_rules! push_record_values {
    ($query:ident, $chunk:expr) => {
        use $crate::store::records::db_int;
        $query.push_values($chunk, |mut row, r| {
            row.push_bind(r.id.as_str())
                .push_bind(r.created_at_ms)
                .push_bind(r.request_id.as_str())
                .push_bind(r.key_id.as_deref())
                .push_bind(r.user_id.as_deref())
                .push_bind(r.caller.as_str())
                .push_bind(r.method.as_str())
                .push_bind(r.route.as_str())
                .push_bind(r.model_requested.as_deref())
                .push_bind(r.model_used.as_deref())
                .push_bind(r.upstream.as_deref())
                .push_bind(i32::from(r.status))
                .push_bind(r.outcome.as_str())
                .push_bind(r.error_kind.as_deref())
                .push_bind(r.stream)
                .push_bind(db_int(r.usage.prompt_tokens))
                .push_bind(db_int(r.usage.cached_tokens))
                .push_bind(db_int(r.usage.completion_tokens))
                .push_bind(db_int(r.usage.reasoning_tokens))
                .push_bind(db_int(r.usage.image_input_tokens))
                .push_bind(db_int(r.images))
                .push_bind(r.image_size.as_deref())
                .push_bind(r.image_quality.as_deref())
                .push_bind(r.cost_micros)
                .push_bind(r.estimated)
                .push_bind(r.cache_status.as_deref())
                .push_bind(r.latency_ms)
                .push_bind(r.upstream_ms)
                .push_bind(r.prompt_chars)
                .push_bind(r.completion_chars)
                .push_bind($crate::store::to_json(&r.rules_fired))
                .push_bind(r.client_ip.as_deref())
                .push_bind(r.prompt_text.as_deref())
                .push_bind(r.completion_text.as_deref());
        });
    };
}
pub(crate) use push_record_values;

/// SQLite's insert: rows in chunks of [`CHUNK_SIZES`] (so its statements are prepared once), each after a look-up of the chunk's ids
/// already stored (only a replay has any), then the rollup of the rows that were new, summed
/// here and upserted in key order, all in one transaction. Not `RETURNING id`: sqlx runs SQLite
/// on a worker thread and would send every returned id back as its own message, a thread
/// handoff per record (measured: most of the audit log's CPU cost).
macro_rules! insert_with_rollup_in_rust {
    ($store:ident, $records:ident, $db:ty) => {{
        use $crate::store::records::{
            fixed_chunks, push_record_values, push_sums, record_columns, rollup_upsert,
        };
        use $crate::store::rollup::{DAY_MS, HOUR_MS, rollup};
        let mut tx = $store.pool.begin().await?;
        let mut new_ids: std::collections::HashSet<&str> =
            std::collections::HashSet::with_capacity($records.len());
        for chunk in fixed_chunks($records) {
            let mut lookup =
                sqlx::QueryBuilder::<$db>::new("SELECT id FROM requests WHERE id IN (");
            let mut ids = lookup.separated(", ");
            for record in chunk {
                ids.push_bind(record.id.as_str());
            }
            lookup.push(")");
            let stored: Vec<(String,)> = lookup.build_query_as().fetch_all(&mut *tx).await?;
            let stored: std::collections::HashSet<String> =
                stored.into_iter().map(|(id,)| id).collect();
            let mut query = sqlx::QueryBuilder::<$db>::new(concat!(
                "INSERT INTO requests (",
                record_columns!(),
                ") "
            ));
            push_record_values!(query, chunk);
            query.push(" ON CONFLICT (id) DO NOTHING");
            query.build().execute(&mut *tx).await?;
            new_ids.extend(
                chunk
                    .iter()
                    .map(|r| r.id.as_str())
                    .filter(|id| !stored.contains(*id)),
            );
        }
        // Both rollups share their columns; only the table and its time bucket differ.
        const ROLLUPS: [(i64, &str, &str); 2] = [
            (
                HOUR_MS,
                "INSERT INTO usage_hourly (hour_ms, caller, key_id, user_id, model, requests, \
                 errors, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, \
                 images, cost_micros, unpriced, estimated) ",
                rollup_upsert!("usage_hourly", "(hour_ms, caller, key_id, user_id, model)"),
            ),
            (
                DAY_MS,
                "INSERT INTO usage_daily (day_ms, caller, key_id, user_id, model, requests, \
                 errors, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, \
                 images, cost_micros, unpriced, estimated) ",
                rollup_upsert!("usage_daily", "(day_ms, caller, key_id, user_id, model)"),
            ),
        ];
        for (bucket_ms, insert, upsert) in ROLLUPS {
            let sums: Vec<_> = rollup(
                $records.iter().filter(|r| new_ids.contains(r.id.as_str())),
                bucket_ms,
            )
            .into_iter()
            .collect();
            for chunk in fixed_chunks(&sums) {
                let mut query = sqlx::QueryBuilder::<$db>::new(insert);
                query.push_values(chunk, |mut row, ((bucket, caller, key, user, model), s)| {
                    row.push_bind(*bucket)
                        .push_bind(caller.as_str())
                        .push_bind(key.as_str())
                        .push_bind(user.as_str())
                        .push_bind(model.as_str());
                    push_sums!(row, s);
                });
                query.push(upsert);
                query.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(new_ids.len() as u64)
    }};
}
pub(crate) use insert_with_rollup_in_rust;

/// PostgreSQL's insert: the batch in [`PG_PARALLEL`] slices, each one statement (one round
/// trip) whose data-modifying CTE inserts the records and upserts the rollup of exactly the rows
/// that were new, summed by PostgreSQL in key order. The slices go out at once on separate pool
/// connections: sqlx 0.9.0 does not set `TCP_NODELAY` (sqlx issue #4335, fixed upstream but
/// not released), so every large statement waits out a ~40 ms delayed ACK, and statements in
/// parallel wait it out together. Each statement is atomic; if one fails the writer spills the
/// whole batch, and the replay skips the rows that did get in.
macro_rules! insert_with_rollup_in_sql {
    ($store:ident, $records:ident, $db:ty) => {{
        use $crate::store::records::{
            PG_INSERT_CHUNK, PG_PARALLEL, push_record_values, record_columns, rollup_sums,
            rollup_upsert,
        };
        let slice = $records
            .len()
            .div_ceil(PG_PARALLEL)
            .clamp(1, PG_INSERT_CHUNK);
        let statements = $records.chunks(slice).map(|chunk| async move {
            let mut query = sqlx::QueryBuilder::<$db>::new(concat!(
                "WITH new AS (INSERT INTO requests (",
                record_columns!(),
                ") "
            ));
            push_record_values!(query, chunk);
            query.push(
                " ON CONFLICT (id) DO NOTHING RETURNING created_at_ms, caller, key_id, user_id, \
                 model_used, model_requested, status, prompt_tokens, cached_tokens, \
                 completion_tokens, reasoning_tokens, images, cost_micros, estimated), \
                 rolled AS (INSERT INTO usage_hourly (hour_ms, caller, key_id, user_id, model, \
                 requests, errors, prompt_tokens, cached_tokens, completion_tokens, \
                 reasoning_tokens, images, cost_micros, unpriced, estimated) \
                 SELECT created_at_ms - created_at_ms % 3600000, caller, COALESCE(key_id, ''), \
                 COALESCE(user_id, ''), COALESCE(model_used, model_requested, ''), ",
            );
            query.push(concat!(
                rollup_sums!(),
                " FROM new GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
                rollup_upsert!("usage_hourly", "(hour_ms, caller, key_id, user_id, model)"),
                " RETURNING 1), daily AS (INSERT INTO usage_daily (day_ms, caller, key_id, \
                 user_id, model, requests, errors, prompt_tokens, cached_tokens, \
                 completion_tokens, reasoning_tokens, images, cost_micros, unpriced, estimated) \
                 SELECT created_at_ms - created_at_ms % 86400000, caller, COALESCE(key_id, ''), \
                 COALESCE(user_id, ''), COALESCE(model_used, model_requested, ''), ",
                rollup_sums!(),
                " FROM new GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
                rollup_upsert!("usage_daily", "(day_ms, caller, key_id, user_id, model)"),
                " RETURNING 1) SELECT COUNT(*) FROM new"
            ));
            let (inserted,): (i64,) = query.build_query_as().fetch_one(&$store.pool).await?;
            Ok::<u64, $crate::store::StoreError>(u64::try_from(inserted).unwrap_or(0))
        });
        let inserted = futures_util::future::try_join_all(statements).await?;
        Ok(inserted.into_iter().sum())
    }};
}
pub(crate) use insert_with_rollup_in_sql;

/// Implements `RecordStore` for an engine struct with a `pool` field; the SQL is shared.
macro_rules! sql_record_store {
    ($store:ty, $db:ty, $insert:ident) => {
        #[async_trait::async_trait]
        impl $crate::store::audit::RecordStore for $store {
            async fn insert(
                &self,
                records: &[$crate::store::audit::Record],
            ) -> Result<u64, $crate::store::StoreError> {
                $crate::store::records::$insert!(self, records, $db)
            }

            async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, $crate::store::StoreError> {
                let mut deleted = 0;
                loop {
                    // In slices, so a long backlog never holds one huge transaction.
                    let done = sqlx::query(
                        "DELETE FROM requests WHERE id IN \
                         (SELECT id FROM requests WHERE created_at_ms < $1 LIMIT 10000)",
                    )
                    .bind(cutoff_ms)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
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

            async fn recent(
                &self,
                query: &$crate::store::audit::RecentQuery,
            ) -> Result<Vec<$crate::store::audit::Record>, $crate::store::StoreError> {
                use $crate::store::records::{record_columns, record_from_row};
                let mut sql = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    record_columns!(),
                    " FROM requests WHERE 1 = 1"
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

            async fn spend(
                &self,
                scope: &$crate::store::audit::SpendScope,
                since_ms: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                use $crate::store::audit::SpendScope;
                macro_rules! sum_where {
                    ($condition:literal) => {
                        concat!(
                            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM usage_hourly \
                             WHERE hour_ms >= $1 AND ",
                            $condition
                        )
                    };
                }
                let query = match scope {
                    SpendScope::Key(key) => sqlx::query_as(sum_where!("key_id = $2"))
                        .bind(since_ms)
                        .bind(key.as_str()),
                    SpendScope::KeyUser(key, user) => {
                        sqlx::query_as(sum_where!("key_id = $2 AND user_id = $3"))
                            .bind(since_ms)
                            .bind(key.as_str())
                            .bind(user.as_str())
                    }
                    SpendScope::Jwt(user) => {
                        sqlx::query_as(sum_where!("caller = 'jwt' AND user_id = $2"))
                            .bind(since_ms)
                            .bind(user.as_str())
                    }
                    SpendScope::Anonymous(user) => {
                        sqlx::query_as(sum_where!("caller = 'anonymous' AND user_id = $2"))
                            .bind(since_ms)
                            .bind(user.as_str())
                    }
                };
                let (spent,): (i64,) = query.fetch_one(&self.pool).await?;
                Ok(spent)
            }

            async fn usage(
                &self,
                query: &$crate::store::audit::UsageQuery,
            ) -> Result<Vec<$crate::store::audit::UsageRow>, $crate::store::StoreError> {
                use sqlx::Row;
                // The pieces (whole days, and the hours at either end) are read at once, on
                // separate pool connections, then added up.
                let reads = $crate::store::rollup::usage_pieces(query).into_iter().map(|piece| async move {
                let groups: Vec<String> = query.group_by.iter().map(|g| g.column(piece.time)).collect();
                let mut sql = sqlx::QueryBuilder::<$db>::new("SELECT ");
                for column in &groups {
                    sql.push(column).push(", ");
                }
                sql.push(
                    "CAST(SUM(requests) AS BIGINT), CAST(SUM(errors) AS BIGINT), \
                     CAST(SUM(prompt_tokens) AS BIGINT), CAST(SUM(cached_tokens) AS BIGINT), \
                     CAST(SUM(completion_tokens) AS BIGINT), CAST(SUM(reasoning_tokens) AS BIGINT), \
                     CAST(SUM(images) AS BIGINT), CAST(SUM(cost_micros) AS BIGINT), \
                     CAST(SUM(unpriced) AS BIGINT), CAST(SUM(estimated) AS BIGINT) FROM ",
                )
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
                    sql.push(" GROUP BY ").push(&list).push(" ORDER BY ").push(&list);
                }
                let rows = sql.build().fetch_all(&self.pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut usage = $crate::store::audit::UsageRow::default();
                    for (i, group) in query.group_by.iter().enumerate() {
                        use $crate::store::audit::GroupBy;
                        match group {
                            GroupBy::Key => usage.key_id = Some(row.try_get(i)?),
                            GroupBy::User => usage.user_id = Some(row.try_get(i)?),
                            GroupBy::Model => usage.model = Some(row.try_get(i)?),
                            GroupBy::Day => {
                                usage.day = Some($crate::store::rollup::day_name(row.try_get(i)?))
                            }
                        }
                    }
                    let at = groups.len();
                    let sum = |j: usize| row.try_get::<Option<i64>, _>(at + j).map(Option::unwrap_or_default);
                    usage.requests = sum(0)?;
                    usage.errors = sum(1)?;
                    usage.prompt_tokens = sum(2)?;
                    usage.cached_tokens = sum(3)?;
                    usage.completion_tokens = sum(4)?;
                    usage.reasoning_tokens = sum(5)?;
                    usage.images = sum(6)?;
                    usage.cost_micros = sum(7)?;
                    usage.unpriced = sum(8)?;
                    usage.estimated = sum(9)?;
                    if usage.requests > 0 {
                        out.push(usage);
                    }
                }
                Ok::<_, $crate::store::StoreError>(out)
                });
                let pieces = futures_util::future::try_join_all(reads).await?;
                Ok($crate::store::rollup::merge_usage(pieces))
            }

            async fn count(&self) -> Result<u64, $crate::store::StoreError> {
                let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM requests")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }
        }
    };
}
pub(crate) use sql_record_store;

#[cfg(test)]
mod tests {
    use super::fixed_chunks;

    #[test]
    fn batches_are_cut_into_a_few_fixed_sizes() {
        let rows: Vec<u32> = (0..399).collect();
        let sizes: Vec<usize> = fixed_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [256, 64, 64, 4, 4, 4, 1, 1, 1]);
        assert_eq!(fixed_chunks(&rows).flatten().count(), 399);
        assert_eq!(fixed_chunks::<u32>(&[]).count(), 0);
    }
}
