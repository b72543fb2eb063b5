//! The schema migrations, embedded in the binary so a deployed `tollgate` needs no files.
//!
//! Each engine has its own directory (`migrations/sqlite`, `migrations/postgres`) with the same
//! numbered files; they differ only where the SQL dialects must.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Builds a migrator from `(version, description, sql)` triples.
fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// SQLite's migrations, in order.
const SQLITE: [(i64, &str, &str); 13] = [
    (
        1,
        "api keys",
        include_str!("../../migrations/sqlite/0001_api_keys.sql"),
    ),
    (
        2,
        "key rules",
        include_str!("../../migrations/sqlite/0002_key_rules.sql"),
    ),
    (
        3,
        "audit records",
        include_str!("../../migrations/sqlite/0003_records.sql"),
    ),
    (
        4,
        "key budgets",
        include_str!("../../migrations/sqlite/0004_key_budgets.sql"),
    ),
    (
        5,
        "usage indexes",
        include_str!("../../migrations/sqlite/0005_usage_indexes.sql"),
    ),
    (
        6,
        "daily usage",
        include_str!("../../migrations/sqlite/0006_usage_daily.sql"),
    ),
    (
        7,
        "daily usage by user",
        include_str!("../../migrations/sqlite/0007_usage_daily_users.sql"),
    ),
    (
        8,
        "key routes",
        include_str!("../../migrations/sqlite/0008_key_routes.sql"),
    ),
    (
        9,
        "costs in nano-dollars",
        include_str!("../../migrations/sqlite/0009_cost_nanos.sql"),
    ),
    (
        10,
        "price version",
        include_str!("../../migrations/sqlite/0010_price_version.sql"),
    ),
    (
        11,
        "service tier",
        include_str!("../../migrations/sqlite/0011_service_tier.sql"),
    ),
    (
        12,
        "audio usage",
        include_str!("../../migrations/sqlite/0012_audio_usage.sql"),
    ),
    (
        13,
        "batches",
        include_str!("../../migrations/sqlite/0013_batches.sql"),
    ),
];

/// SQLite's migrator.
pub fn sqlite() -> Migrator {
    migrator(&SQLITE)
}

/// PostgreSQL's migrations, in order.
const POSTGRES: [(i64, &str, &str); 13] = [
    (
        1,
        "api keys",
        include_str!("../../migrations/postgres/0001_api_keys.sql"),
    ),
    (
        2,
        "key rules",
        include_str!("../../migrations/postgres/0002_key_rules.sql"),
    ),
    (
        3,
        "audit records",
        include_str!("../../migrations/postgres/0003_records.sql"),
    ),
    (
        4,
        "key budgets",
        include_str!("../../migrations/postgres/0004_key_budgets.sql"),
    ),
    (
        5,
        "usage indexes",
        include_str!("../../migrations/postgres/0005_usage_indexes.sql"),
    ),
    (
        6,
        "daily usage",
        include_str!("../../migrations/postgres/0006_usage_daily.sql"),
    ),
    (
        7,
        "daily usage by user",
        include_str!("../../migrations/postgres/0007_usage_daily_users.sql"),
    ),
    (
        8,
        "key routes",
        include_str!("../../migrations/postgres/0008_key_routes.sql"),
    ),
    (
        9,
        "costs in nano-dollars",
        include_str!("../../migrations/postgres/0009_cost_nanos.sql"),
    ),
    (
        10,
        "price version",
        include_str!("../../migrations/postgres/0010_price_version.sql"),
    ),
    (
        11,
        "service tier",
        include_str!("../../migrations/postgres/0011_service_tier.sql"),
    ),
    (
        12,
        "audio usage",
        include_str!("../../migrations/postgres/0012_audio_usage.sql"),
    ),
    (
        13,
        "batches",
        include_str!("../../migrations/postgres/0013_batches.sql"),
    ),
];

/// PostgreSQL's migrator.
pub fn postgres() -> Migrator {
    migrator(&POSTGRES)
}

#[cfg(test)]
mod tests {
    use sqlx::Executor;

    use super::*;

    /// Runs the migrations up to `key routes` (8), stores a record and its rollups in
    /// micro-dollars, runs the rest, and reads them back in nano-dollars.
    async fn carries_costs_over<DB: sqlx::Database>(
        pool: &sqlx::Pool<DB>,
        files: &[(i64, &'static str, &'static str)],
    ) where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        DB::Connection: sqlx::migrate::Migrate,
        for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
        for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
        <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    {
        migrator(&files[..8]).run(pool).await.unwrap();
        for sql in [
            "INSERT INTO requests (id, created_at_ms, request_id, caller, method, route, status, \
             outcome, stream, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, \
             image_input_tokens, images, cost_micros, estimated, latency_ms, rules_fired) \
             VALUES ('r1', 0, 'q', 'key', 'POST', '/v1/chat/completions', 200, 'ok', FALSE, 1, \
             0, 1, 0, 0, 0, 420, FALSE, 1, '[]')",
            "INSERT INTO usage_hourly (hour_ms, caller, key_id, user_id, model, requests, errors, \
             prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, images, \
             cost_micros, unpriced, estimated) VALUES (0, 'key', 'k', '', 'm', 1, 0, 1, 0, 1, \
             0, 0, 420, 0, 0)",
            "INSERT INTO usage_daily (day_ms, caller, key_id, user_id, model, requests, errors, \
             prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, images, \
             cost_micros, unpriced, estimated) VALUES (0, 'key', 'k', '', 'm', 1, 0, 1, 0, 1, \
             0, 0, 420, 0, 0)",
        ] {
            pool.execute(sql).await.unwrap();
        }
        migrator(files).run(pool).await.unwrap();
        for sql in [
            "SELECT cost_nanos FROM requests",
            "SELECT cost_nanos FROM usage_hourly",
            "SELECT cost_nanos FROM usage_daily",
        ] {
            let (nanos,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
            assert_eq!(nanos, 420_000, "{sql}");
        }
    }

    #[tokio::test]
    async fn costs_recorded_in_micro_dollars_are_carried_over_to_nano_dollars() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        let sqlite = sqlx::SqlitePool::connect(&url).await.unwrap();
        carries_costs_over(&sqlite, &SQLITE).await;

        let Ok(base) = std::env::var("TOLLGATE_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("TOLLGATE_TEST_STRICT").is_err(),
                "TOLLGATE_TEST_STRICT: PostgreSQL's migration must be tested"
            );
            eprintln!("skipped PostgreSQL: TOLLGATE_TEST_DATABASE_URL is not set");
            return;
        };
        let schema = format!("tg_migrate_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&base).await.unwrap();
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        let postgres = sqlx::PgPool::connect(&url).await.unwrap();
        carries_costs_over(&postgres, &POSTGRES).await;
        postgres.close().await;
        admin
            .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .await
            .unwrap();
    }
}
