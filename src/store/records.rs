//! The audit records' SQL, shared by both engines (`sql_record_store!`).
//!
//! Records are inserted many rows per statement inside one transaction, `ON CONFLICT (id) DO
//! NOTHING RETURNING id`, so that a replayed spill file stores each record once; the hourly
//! rollup is then updated with exactly the rows that were new, rows sorted by key so that
//! replicas upserting the same hours cannot deadlock. The rows themselves (columns, binding,
//! decoding, chunk sizes) are `record_rows`.

/// SQLite's insert: rows in chunks of `record_rows::CHUNK_SIZES` (so its statements are
/// prepared once), each after a look-up of the chunk's ids already stored (only a replay has any), then the rollup of the rows that were new, summed
/// here and upserted in key order, all in one transaction. Not `RETURNING id`: sqlx runs SQLite
/// on a worker thread and would send every returned id back as its own message, a thread
/// handoff per record (measured: most of the audit log's CPU cost).
macro_rules! insert_with_rollup_in_rust {
    ($store:ident, $records:ident, $db:ty) => {{
        use $crate::store::record_rows::{
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

/// PostgreSQL's insert: the batch in `PG_PARALLEL` slices, each one statement (one round
/// trip) whose data-modifying CTE inserts the records and upserts the rollup of exactly the rows
/// that were new, summed by PostgreSQL in key order. The slices go out at once on separate pool
/// connections: sqlx 0.9.0 does not set `TCP_NODELAY` (sqlx issue #4335, fixed upstream but
/// not released), so every large statement waits out a ~40 ms delayed ACK, and statements in
/// parallel wait it out together. Each statement is atomic; if one fails the writer spills the
/// whole batch, and the replay skips the rows that did get in.
macro_rules! insert_with_rollup_in_sql {
    ($store:ident, $records:ident, $db:ty) => {{
        use $crate::store::record_rows::{
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
                use $crate::store::record_rows::{record_columns, record_from_row};
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
                    let mut totals = [0; 10];
                    for (j, value) in totals.iter_mut().enumerate() {
                        *value = sum(j)?;
                    }
                    usage.totals = $crate::store::audit::UsageTotals::from_values(totals);
                    if usage.totals.requests > 0 {
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
    use crate::store::record_rows::fixed_chunks;

    #[test]
    fn batches_are_cut_into_a_few_fixed_sizes() {
        let rows: Vec<u32> = (0..399).collect();
        let sizes: Vec<usize> = fixed_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [256, 64, 64, 4, 4, 4, 1, 1, 1]);
        assert_eq!(fixed_chunks(&rows).flatten().count(), 399);
        assert_eq!(fixed_chunks::<u32>(&[]).count(), 0);
    }
}
