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

/// SQLite's migrations.
pub fn sqlite() -> Migrator {
    migrator(&[
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
    ])
}

/// PostgreSQL's migrations.
pub fn postgres() -> Migrator {
    migrator(&[
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
    ])
}
