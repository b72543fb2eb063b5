//! The audit records' SQL, shared by both engines (`sql_record_store!`).
//!
//! Records are inserted many rows per statement inside one transaction, `ON CONFLICT (id) DO
//! NOTHING RETURNING id`, so that a replayed spill file stores each record once; the hourly
//! rollup is then updated with exactly the rows that were new, rows sorted by key so that
//! replicas upserting the same hours cannot deadlock.

use std::collections::BTreeMap;

use crate::openai::usage::Usage;
use crate::records::{Record, UsageQuery, UsageRow};
use crate::store::StoreError;

/// Rows per INSERT statement: 34 columns × 400 rows stays under SQLite's 32,766 bound
/// parameters (PostgreSQL allows 65,535).
pub(crate) const INSERT_CHUNK: usize = 400;

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

/// A whole number as the databases store it (BIGINT is signed).
pub(crate) fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One row of `usage_hourly`: the sums of some records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RollupSums {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub images: i64,
    pub cost_micros: i64,
    pub unpriced: i64,
    pub estimated: i64,
}

/// `(bucket start, caller, key_id, user_id, model)`; absent values are empty strings.
pub(crate) type RollupKey = (i64, String, String, String, String);

/// An hour and a day in milliseconds: the rollups' buckets.
pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Sums `records` by `bucket_ms`, caller, key, user (or not) and model, in key order.
pub(crate) fn rollup<'a>(
    records: impl Iterator<Item = &'a Record>,
    bucket_ms: i64,
) -> BTreeMap<RollupKey, RollupSums> {
    let mut rows: BTreeMap<RollupKey, RollupSums> = BTreeMap::new();
    for record in records {
        let key = (
            record.created_at_ms - record.created_at_ms.rem_euclid(bucket_ms),
            record.caller.clone(),
            record.key_id.clone().unwrap_or_default(),
            record.user_id.clone().unwrap_or_default(),
            record
                .model_used
                .clone()
                .or_else(|| record.model_requested.clone())
                .unwrap_or_default(),
        );
        let sums = rows.entry(key).or_default();
        sums.requests += 1;
        sums.errors += i64::from(record.status >= 400);
        sums.prompt_tokens += db_int(record.usage.prompt_tokens);
        sums.cached_tokens += db_int(record.usage.cached_tokens);
        sums.completion_tokens += db_int(record.usage.completion_tokens);
        sums.reasoning_tokens += db_int(record.usage.reasoning_tokens);
        sums.images += db_int(record.images);
        match record.cost_micros {
            Some(cost) => sums.cost_micros += cost,
            // Refusals cost nothing and are not "unpriced"; an answered request without a
            // price is.
            None if record.status < 400 => sums.unpriced += 1,
            None => {}
        }
        sums.estimated += i64::from(record.estimated);
    }
    rows
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

/// One part of a usage query's range and the rollup that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UsagePiece {
    pub table: &'static str,
    pub time: &'static str,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Splits a usage query's range (rounded down to hours) into the pieces each rollup answers:
/// whole days from `usage_daily`, the partial days at either end from `usage_hourly`.
pub(crate) fn usage_pieces(query: &UsageQuery) -> Vec<UsagePiece> {
    let from = query.from_ms - query.from_ms.rem_euclid(HOUR_MS);
    let to = query.to_ms - query.to_ms.rem_euclid(HOUR_MS);
    let hourly = |from_ms, to_ms| UsagePiece {
        table: "usage_hourly",
        time: "hour_ms",
        from_ms,
        to_ms,
    };
    let first_day = from + (DAY_MS - from.rem_euclid(DAY_MS)) % DAY_MS;
    let last_day = to - to.rem_euclid(DAY_MS);
    if first_day >= last_day {
        return vec![hourly(from, to)];
    }
    let mut pieces = Vec::with_capacity(3);
    if from < first_day {
        pieces.push(hourly(from, first_day));
    }
    pieces.push(UsagePiece {
        table: "usage_daily",
        time: "day_ms",
        from_ms: first_day,
        to_ms: last_day,
    });
    if last_day < to {
        pieces.push(hourly(last_day, to));
    }
    pieces
}

/// A usage row's group: key, user, model and day, as far as grouped by.
type UsageGroup = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Adds up the pieces' rows that belong to the same group, in group order.
pub(crate) fn merge_usage(pieces: Vec<Vec<UsageRow>>) -> Vec<UsageRow> {
    if pieces.len() == 1 {
        return pieces.into_iter().next().unwrap_or_default();
    }
    let mut merged: BTreeMap<UsageGroup, UsageRow> = BTreeMap::new();
    for row in pieces.into_iter().flatten() {
        let key = (
            row.key_id.clone(),
            row.user_id.clone(),
            row.model.clone(),
            row.day.clone(),
        );
        let into = merged.entry(key).or_insert_with(|| UsageRow {
            key_id: row.key_id.clone(),
            user_id: row.user_id.clone(),
            model: row.model.clone(),
            day: row.day.clone(),
            ..UsageRow::default()
        });
        into.requests += row.requests;
        into.errors += row.errors;
        into.prompt_tokens += row.prompt_tokens;
        into.cached_tokens += row.cached_tokens;
        into.completion_tokens += row.completion_tokens;
        into.reasoning_tokens += row.reasoning_tokens;
        into.images += row.images;
        into.cost_micros += row.cost_micros;
        into.unpriced += row.unpriced;
        into.estimated += row.estimated;
    }
    merged.into_values().collect()
}

/// Days since the Unix epoch as `YYYY-MM-DD`.
pub(crate) fn day_name(days: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(days * 86_400)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
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

/// Binds a rollup row's sums (`s`, a [`RollupSums`]) onto `row`, in the rollups' column order.
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

/// SQLite's insert: rows in chunks of [`INSERT_CHUNK`], each after a look-up of the chunk's ids
/// already stored (only a replay has any), then the rollup of the rows that were new, summed
/// here and upserted in key order, all in one transaction. Not `RETURNING id`: sqlx runs SQLite
/// on a worker thread and would send every returned id back as its own message, a thread
/// handoff per record (measured: most of the audit log's CPU cost).
macro_rules! insert_with_rollup_in_rust {
    ($store:ident, $records:ident, $db:ty) => {{
        use $crate::store::records::{
            DAY_MS, HOUR_MS, INSERT_CHUNK, push_record_values, push_sums, record_columns, rollup,
            rollup_upsert,
        };
        let mut tx = $store.pool.begin().await?;
        let mut new_ids: std::collections::HashSet<&str> =
            std::collections::HashSet::with_capacity($records.len());
        for chunk in $records.chunks(INSERT_CHUNK) {
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
            for chunk in sums.chunks(INSERT_CHUNK) {
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
        impl $crate::records::RecordStore for $store {
            async fn insert(
                &self,
                records: &[$crate::records::Record],
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
                query: &$crate::records::RecentQuery,
            ) -> Result<Vec<$crate::records::Record>, $crate::store::StoreError> {
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
                scope: &$crate::records::SpendScope,
                since_ms: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                use $crate::records::SpendScope;
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
                query: &$crate::records::UsageQuery,
            ) -> Result<Vec<$crate::records::UsageRow>, $crate::store::StoreError> {
                use sqlx::Row;
                // The pieces (whole days, and the hours at either end) are read at once, on
                // separate pool connections, then added up.
                let reads = $crate::store::records::usage_pieces(query).into_iter().map(|piece| async move {
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
                    let mut usage = $crate::records::UsageRow::default();
                    for (i, group) in query.group_by.iter().enumerate() {
                        use $crate::records::GroupBy;
                        match group {
                            GroupBy::Key => usage.key_id = Some(row.try_get(i)?),
                            GroupBy::User => usage.user_id = Some(row.try_get(i)?),
                            GroupBy::Model => usage.model = Some(row.try_get(i)?),
                            GroupBy::Day => {
                                usage.day = Some($crate::store::records::day_name(row.try_get(i)?))
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
                Ok($crate::store::records::merge_usage(pieces))
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
    use super::*;
    use crate::records::GroupBy;

    fn query(from_ms: i64, to_ms: i64, group_by: Vec<GroupBy>) -> UsageQuery {
        UsageQuery {
            group_by,
            from_ms,
            to_ms,
        }
    }

    #[test]
    fn whole_days_come_from_the_daily_rollup_and_the_ends_from_the_hourly_one() {
        let day = DAY_MS;
        // 10:30 on day 1 to 05:10 on day 4: hours 10..24 of day 1, days 2 and 3, hours 0..5 of day 4.
        let pieces = usage_pieces(&query(
            day + 10 * HOUR_MS + 1_800_000,
            4 * day + 5 * HOUR_MS + 600_000,
            vec![GroupBy::Key],
        ));
        assert_eq!(
            pieces
                .iter()
                .map(|p| (p.table, p.from_ms, p.to_ms))
                .collect::<Vec<_>>(),
            [
                ("usage_hourly", day + 10 * HOUR_MS, 2 * day),
                ("usage_daily", 2 * day, 4 * day),
                ("usage_hourly", 4 * day, 4 * day + 5 * HOUR_MS),
            ]
        );
        // Day-aligned ends: the daily rollup alone, grouped by user or not (it keeps users).
        for group_by in [vec![], vec![GroupBy::User]] {
            let pieces = usage_pieces(&query(day, 3 * day, group_by));
            assert_eq!(pieces.len(), 1);
            assert_eq!(pieces[0].table, "usage_daily");
        }
        // A range within one day: the hourly rollup.
        let pieces = usage_pieces(&query(day + HOUR_MS, day + 5 * HOUR_MS, vec![]));
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].table, "usage_hourly");
    }

    #[test]
    fn pieces_of_one_group_are_added_up() {
        let row = |model: &str, requests| UsageRow {
            model: Some(model.to_owned()),
            requests,
            cost_micros: requests * 10,
            ..UsageRow::default()
        };
        let merged = merge_usage(vec![vec![row("b", 1), row("a", 2)], vec![row("a", 3)]]);
        assert_eq!(merged, [row("a", 5), row("b", 1)]);
    }
}
