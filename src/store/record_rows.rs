//! A `requests` row as both engines write and read it: the column list, binding records as
//! multi-row `VALUES`, decoding a row, the fixed chunk sizes batches are cut into, and the
//! rollups' upsert SQL.

use super::StoreError;
use super::audit::Record;
use crate::openai::usage::Usage;

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

/// Binds a rollup row's counters (`s`, an `audit::UsageTotals`) onto `row`, in column order.
macro_rules! push_sums {
    ($row:ident, $s:ident) => {
        for value in $s.values() {
            $row.push_bind(value);
        }
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
        use $crate::store::record_rows::db_int;
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
