//! The one SQL store both engines share: [`SqlStore`] over an [`Engine`].
//!
//! Every query is written once, in generic functions over the engine (`keys_sql.rs`,
//! `records_sql.rs`); `$N` placeholders work in both SQLite and PostgreSQL. What differs, and
//! only that, is an engine's: how it connects (`sqlite.rs`, `postgres.rs`) and how it inserts a
//! batch of records with their rollups ([`Engine::insert_records`]).

use std::future::Future;

use sqlx::{Database, Pool};

use super::StoreError;
use super::audit::Record;

/// A store on one database engine's connection pool.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

/// The embedded engine's store (`sqlite://tollgate.db`).
pub type SqliteStore = SqlStore<sqlx::Sqlite>;
/// The shared engine's store, for many replicas.
pub type PostgresStore = SqlStore<sqlx::Postgres>;

/// What an engine does its own way. The queries themselves are shared; see the module docs.
pub trait Engine: Database {
    /// Rows a statement changed (sqlx has no trait for it).
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Stores `records` (skipping ids already stored) and adds the new ones to the hourly and
    /// daily rollups, atomically; returns how many were new.
    fn insert_records(
        pool: &Pool<Self>,
        records: &[Record],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
