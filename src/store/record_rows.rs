//! A `requests` row as both engines write and read it: the column list, binding records as
//! multi-row `VALUES`, decoding a row, the fixed chunk sizes batches are cut into, and the
//! rollups' upsert SQL.

use std::sync::LazyLock;

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::StoreError;
use super::audit::{Record, UsageTotals};
use super::keys_sql::to_json;
use crate::openai::usage::Usage;

/// The columns of `requests`, in the order [`push_record_values`] binds them and
/// [`record_from_row`] reads them.
pub(crate) const RECORD_COLUMNS: &str = "id, created_at_ms, request_id, key_id, user_id, caller, \
     method, route, model_requested, model_used, upstream, status, outcome, error_kind, stream, \
     prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, image_input_tokens, \
     images, image_size, image_quality, cost_nanos, estimated, cache_status, latency_ms, \
     upstream_ms, prompt_chars, completion_chars, rules_fired, client_ip, prompt_text, \
     completion_text, price_version, service_tier, audio_input_tokens, audio_output_tokens, \
     audio_ms";

/// The row counts a multi-row statement is built for. A batch is cut into chunks of these sizes
/// (largest first), so the engine sees a handful of distinct statements, each prepared once per
/// connection and then reused from sqlx's statement cache, instead of a new statement (parsed
/// and planned: ~400,000 instructions for a record insert) for every batch size.
/// 39 columns × 256 rows stays under SQLite's 32,766 bound parameters.
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

/// Reads one `requests` row (selected with [`RECORD_COLUMNS`]) of either engine.
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
            audio_input_tokens: count(36)?,
            audio_output_tokens: count(37)?,
            audio_millis: count(38)?,
            // Not stored: the cost computed from them is (Realtime's cached classes).
            cached_audio_tokens: 0,
            cached_image_tokens: 0,
        },
        images: count(20)?,
        image_size: row.try_get(21)?,
        image_quality: row.try_get(22)?,
        cost_nanos: row.try_get(23)?,
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
        price_version: row.try_get(34)?,
        service_tier: row.try_get(35)?,
    })
}

/// The SQL of one rollup table (`usage_hourly` or `usage_daily`), built from
/// [`UsageTotals::COLUMNS`] so the ten counters are named in one place.
pub(crate) struct RollupSql {
    /// `INSERT INTO table (bucket, caller, key_id, user_id, model, counters...) `.
    pub insert: String,
    /// ` ON CONFLICT (...) DO UPDATE SET counter = table.counter + excluded.counter, ...`:
    /// a row already there for the bucket, caller, key, user and model gets the new sums added.
    pub upsert: String,
}

impl RollupSql {
    fn new(table: &str, bucket: &str) -> Self {
        let key = format!("{bucket}, caller, key_id, user_id, model");
        let counters = UsageTotals::COLUMNS.join(", ");
        let additions: Vec<String> = UsageTotals::COLUMNS
            .iter()
            .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
            .collect();
        Self {
            insert: format!("INSERT INTO {table} ({key}, {counters}) "),
            upsert: format!(
                " ON CONFLICT ({key}) DO UPDATE SET {}",
                additions.join(", ")
            ),
        }
    }
}

/// The hourly rollup's SQL.
pub(crate) static HOURLY: LazyLock<RollupSql> =
    LazyLock::new(|| RollupSql::new("usage_hourly", "hour_ms"));
/// The daily rollup's SQL.
pub(crate) static DAILY: LazyLock<RollupSql> =
    LazyLock::new(|| RollupSql::new("usage_daily", "day_ms"));

/// Pushes `VALUES (...), (...)` for `chunk` in [`RECORD_COLUMNS`] order onto `query`.
pub(crate) fn push_record_values<'q, DB>(query: &mut QueryBuilder<DB>, chunk: &'q [Record])
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    i32: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
{
    query.push_values(chunk, |mut row, r| {
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
            .push_bind(r.cost_nanos)
            .push_bind(r.estimated)
            .push_bind(r.cache_status.as_deref())
            .push_bind(r.latency_ms)
            .push_bind(r.upstream_ms)
            .push_bind(r.prompt_chars)
            .push_bind(r.completion_chars)
            .push_bind(to_json(&r.rules_fired))
            .push_bind(r.client_ip.as_deref())
            .push_bind(r.prompt_text.as_deref())
            .push_bind(r.completion_text.as_deref())
            .push_bind(r.price_version.as_deref())
            .push_bind(r.service_tier.as_deref())
            .push_bind(db_int(r.usage.audio_input_tokens))
            .push_bind(db_int(r.usage.audio_output_tokens))
            .push_bind(db_int(r.usage.audio_millis));
    });
}

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
