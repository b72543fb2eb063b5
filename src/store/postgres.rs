//! The shared engine: PostgreSQL, for many replicas.

use std::str::FromStr;
use std::sync::LazyLock;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};

use super::audit::{Record, UsageTotals};
use super::record_rows::{DAILY, HOURLY, RECORD_COLUMNS, push_record_values};
use super::sql::{Engine, PostgresStore};
use super::{StoreError, migrations};
use crate::config::DatabaseConfig;

/// Rows per PostgreSQL statement at most: 36 columns × 1,800 rows stays under its 65,535
/// parameters.
const INSERT_CHUNK: usize = 1800;

/// Statements a batch is split into, sent at once (see [`Engine::insert_records`]).
const PARALLEL: usize = 4;

impl PostgresStore {
    /// Connects to `url` and migrates. A `search_path` given in the URL's `options` is
    /// honoured, so tests (and operators) can keep Tollgate's tables in their own schema. TLS
    /// follows the URL's `sslmode` (`require`, `verify-ca`, `verify-full`) and `sslrootcert`
    /// (or `PGSSLMODE` / `PGSSLROOTCERT`), on the tree's rustls.
    pub async fn connect(url: &str, config: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = Self::connect_options(url, config)?;
        // Migrations run on a connection of their own, without the statement timeout: a
        // migration that builds an index over a large table may take longer.
        let mut migrating = <sqlx::PgConnection as sqlx::Connection>::connect_with(
            &options.clone().options([("statement_timeout", "0")]),
        )
        .await?;
        migrations::postgres().run(&mut migrating).await?;
        let _ = sqlx::Connection::close(migrating).await;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Every session's options: the URL's (TLS, `search_path`), `database.statement_timeout_ms`,
    /// and no JIT (it costs more than it saves on the usage API's aggregates, measured: 1.6 s of
    /// a 3.1 s group-by over 4 million rollup rows; Tollgate's queries are short).
    pub fn connect_options(
        url: &str,
        config: &DatabaseConfig,
    ) -> Result<PgConnectOptions, StoreError> {
        let statement_timeout = config.statement_timeout.as_millis().to_string();
        Ok(PgConnectOptions::from_str(url)?
            .options([("jit", "off"), ("statement_timeout", &statement_timeout)]))
    }
}

/// What each rollup counter sums over the new `requests` rows, in [`UsageTotals::COLUMNS`]
/// order.
const COUNTER_SUMS: [&str; 10] = [
    "COUNT(*)",
    "COUNT(*) FILTER (WHERE status >= 400)",
    "SUM(prompt_tokens)",
    "SUM(cached_tokens)",
    "SUM(completion_tokens)",
    "SUM(reasoning_tokens)",
    "SUM(images)",
    "COALESCE(SUM(cost_nanos), 0)",
    "COUNT(*) FILTER (WHERE cost_nanos IS NULL AND status < 400)",
    "COUNT(*) FILTER (WHERE estimated)",
];

/// The statement's tail after the records' `VALUES`: the returned new rows feed both rollups.
static ROLLUPS_OF_NEW_ROWS: LazyLock<String> = LazyLock::new(|| {
    debug_assert_eq!(COUNTER_SUMS.len(), UsageTotals::COLUMNS.len());
    let sums = COUNTER_SUMS.join(", ");
    let group = "caller, COALESCE(key_id, ''), COALESCE(user_id, ''), \
                 COALESCE(model_used, model_requested, '')";
    let from_new = "FROM new GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5";
    format!(
        " ON CONFLICT (id) DO NOTHING RETURNING created_at_ms, caller, key_id, user_id, \
         model_used, model_requested, status, prompt_tokens, cached_tokens, completion_tokens, \
         reasoning_tokens, images, cost_nanos, estimated), \
         hourly AS ({hourly} SELECT created_at_ms - created_at_ms % 3600000, {group}, {sums} \
         {from_new}{hourly_upsert} RETURNING 1), \
         daily AS ({daily} SELECT created_at_ms - created_at_ms % 86400000, {group}, {sums} \
         {from_new}{daily_upsert} RETURNING 1) \
         SELECT COUNT(*) FROM new",
        hourly = HOURLY.insert,
        hourly_upsert = HOURLY.upsert,
        daily = DAILY.insert,
        daily_upsert = DAILY.upsert,
    )
});

impl Engine for Postgres {
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    /// The batch in `PARALLEL` slices, each one statement (one round trip) whose
    /// data-modifying CTE inserts the records and upserts the rollups of exactly the rows that
    /// were new, summed by PostgreSQL in key order (so replicas upserting the same hours cannot
    /// deadlock). The slices go out at once on separate pool connections: sqlx 0.9.0 does not
    /// set `TCP_NODELAY` (sqlx issue #4335, fixed upstream but not released), so every large
    /// statement waits out a ~40 ms delayed ACK, and statements in parallel wait it out
    /// together. Each statement is atomic; if one fails the writer spills the whole batch, and
    /// the replay skips the rows that did get in.
    async fn insert_records(pool: &PgPool, records: &[Record]) -> Result<u64, StoreError> {
        let slice = records.len().div_ceil(PARALLEL).clamp(1, INSERT_CHUNK);
        let statements = records.chunks(slice).map(|chunk| async move {
            let mut query = QueryBuilder::<Postgres>::new(format!(
                "WITH new AS (INSERT INTO requests ({RECORD_COLUMNS}) "
            ));
            push_record_values(&mut query, chunk);
            query.push(&*ROLLUPS_OF_NEW_ROWS);
            let (inserted,): (i64,) = query.build_query_as().fetch_one(pool).await?;
            Ok::<u64, StoreError>(u64::try_from(inserted).unwrap_or(0))
        });
        let inserted = futures_util::future::try_join_all(statements).await?;
        Ok(inserted.into_iter().sum())
    }
}
