//! The embedded engine: one SQLite file, WAL mode, created on first start.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::records::sql_record_store;
use super::{StoreError, migrations, sql_key_store};

/// SQLite-backed store (the default, `sqlite://tollgate.db`).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers proceed while the writer commits; NORMAL sync is durable across
            // process crashes, which is what WAL needs.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        migrations::sqlite().run(&pool).await?;
        Ok(Self { pool })
    }
}

sql_key_store!(SqliteStore);
sql_record_store!(SqliteStore, sqlx::Sqlite, insert_with_rollup_in_rust);
