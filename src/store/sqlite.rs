//! The embedded engine: one SQLite file, WAL mode, created on first start.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use super::audit::Record;
use super::record_rows::{DAILY, HOURLY, RECORD_COLUMNS, fixed_chunks, push_record_values};
use super::rollup::{DAY_MS, HOUR_MS, rollup};
use super::sql::{Engine, SqliteStore};
use super::{StoreError, migrations};

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

impl Engine for Sqlite {
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    /// Rows in chunks of `record_rows::fixed_chunks` (so its statements are prepared once),
    /// each after a look-up of the chunk's ids already stored (only a replay has any), then the
    /// rollups of the rows that were new, summed here and upserted in key order, all in one
    /// transaction. Not `RETURNING id`: sqlx runs SQLite on a worker thread and would send every
    /// returned id back as its own message, a thread handoff per record (measured: most of the
    /// audit log's CPU cost).
    async fn insert_records(pool: &SqlitePool, records: &[Record]) -> Result<u64, StoreError> {
        // IMMEDIATE: the write lock up front. A deferred transaction starts with the look-up
        // (a read) and must upgrade to write; if another connection wrote meanwhile, WAL mode
        // answers SQLITE_BUSY at once, without the busy timeout (seen when a spill replay or a
        // second writer inserts beside the writer).
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut new_ids: HashSet<&str> = HashSet::with_capacity(records.len());
        let insert = format!("INSERT INTO requests ({RECORD_COLUMNS}) ");
        for chunk in fixed_chunks(records) {
            let mut lookup = QueryBuilder::<Sqlite>::new("SELECT id FROM requests WHERE id IN (");
            let mut ids = lookup.separated(", ");
            for record in chunk {
                ids.push_bind(record.id.as_str());
            }
            lookup.push(")");
            let stored: Vec<(String,)> = lookup.build_query_as().fetch_all(&mut *tx).await?;
            let stored: HashSet<String> = stored.into_iter().map(|(id,)| id).collect();
            let mut query = QueryBuilder::<Sqlite>::new(&insert);
            push_record_values(&mut query, chunk);
            query.push(" ON CONFLICT (id) DO NOTHING");
            query.build().execute(&mut *tx).await?;
            new_ids.extend(
                chunk
                    .iter()
                    .map(|r| r.id.as_str())
                    .filter(|id| !stored.contains(*id)),
            );
        }
        for (bucket_ms, sql) in [(HOUR_MS, &*HOURLY), (DAY_MS, &*DAILY)] {
            let new = records.iter().filter(|r| new_ids.contains(r.id.as_str()));
            let sums: Vec<_> = rollup(new, bucket_ms).into_iter().collect();
            for chunk in fixed_chunks(&sums) {
                let mut query = QueryBuilder::<Sqlite>::new(&sql.insert);
                query.push_values(chunk, |mut row, ((bucket, caller, key, user, model), s)| {
                    row.push_bind(*bucket)
                        .push_bind(caller.as_str())
                        .push_bind(key.as_str())
                        .push_bind(user.as_str())
                        .push_bind(model.as_str());
                    for value in s.values() {
                        row.push_bind(value);
                    }
                });
                query.push(&sql.upsert);
                query.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(new_ids.len() as u64)
    }
}
