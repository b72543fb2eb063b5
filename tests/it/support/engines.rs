//! Per-test databases: a fresh SQLite file, or a fresh schema in the PostgreSQL named by
//! `TOLLGATE_TEST_DATABASE_URL`. Without that variable PostgreSQL tests skip and say so;
//! with `TOLLGATE_TEST_STRICT=1` (CI) a skip is a failure.

use sqlx::Connection;

/// Which engine a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    Postgres,
}

/// A database reserved for one test.
pub struct TestDatabase {
    /// What the gateway's `DATABASE_URL` is set to.
    pub url: String,
    schema: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// Whether a missing engine must fail the test instead of skipping it.
pub fn strict() -> bool {
    std::env::var("TOLLGATE_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// The variable's value, or `None` after saying why the test skips (a panic under CI).
pub fn required_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            assert!(
                !strict(),
                "{name} is not set and TOLLGATE_TEST_STRICT=1: this test must not skip"
            );
            eprintln!("SKIPPED: {name} is not set; this test needs the real engine");
            None
        }
    }
}

impl TestDatabase {
    /// Reserves a database; `None` when the engine is unavailable and not required.
    pub async fn create(engine: Database) -> Option<Self> {
        match engine {
            Database::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
                Some(Self {
                    url,
                    schema: None,
                    _dir: Some(dir),
                })
            }
            Database::Postgres => {
                let base = required_env("TOLLGATE_TEST_DATABASE_URL")?;
                let schema = format!("tg_test_{}", uuid::Uuid::new_v4().simple());
                let mut connection = sqlx::PgConnection::connect(&base)
                    .await
                    .expect("connect to the test PostgreSQL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut connection)
                    .await
                    .expect("create schema");
                let separator = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
                Some(Self {
                    url,
                    schema: Some((base, schema)),
                    _dir: None,
                })
            }
        }
    }

    /// Removes the test's PostgreSQL schema (SQLite files go with their temp dir).
    pub async fn drop_schema(&self) {
        if let Some((base, schema)) = &self.schema
            && let Ok(mut connection) = sqlx::PgConnection::connect(base).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut connection)
                .await;
        }
    }
}
