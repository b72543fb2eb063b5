//! The shared engine: PostgreSQL, for many replicas.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::records::sql_record_store;
use super::{StoreError, migrations, sql_key_store};

/// PostgreSQL-backed store. A `search_path` given in the URL's `options` is honoured, so
/// tests (and operators) can keep Tollgate's tables in their own schema.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` and migrates.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        // JIT compilation costs more than it saves on the usage API's aggregates (measured: 1.6 s
        // of a 3.1 s group-by over 4 million rollup rows); Tollgate's queries are short.
        let options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        migrations::postgres().run(&pool).await?;
        Ok(Self { pool })
    }
}

sql_key_store!(PostgresStore);
sql_record_store!(PostgresStore, sqlx::Postgres, insert_with_rollup_in_sql);
