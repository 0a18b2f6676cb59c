//! The coordinator's history: probes, runs (with their plans), assignments, results with
//! their latency sketches, and reports. One trait, two engines: SQLite (default, one file)
//! and PostgreSQL (production, shared by several coordinators).
//!
//! - `records.rs`: one type per table;
//! - `results.rs`: how results are encoded in their rows (storage's own format);
//! - `store.rs`: the [`Store`] trait and [`AnyStore`], the engine chosen by URL;
//! - `sql.rs`: the one implementation of the trait for both engines;
//! - `sqlite.rs`, `postgres.rs`: opening each engine, and what differs between them;
//! - `migrations.rs` with `migrations/<engine>/*.sql`: the schema, applied by sqlx's migrator.

mod migrations;
mod postgres;
mod records;
pub mod results;
mod sql;
mod sqlite;
mod store;

pub use postflight_rollback::{ClaimOutcome, RollbackClaim};
pub use records::{
    Adoptable, AssignmentRecord, AssignmentStatus, BaselineRecord, BatchRecord, FeedbackRecord,
    MonitorRecord, MonitorStatus, ProbeRecord, RemoteProbe, RoundRecord, RunRecord, RunStatus,
};
pub use sql::SqlStore;
pub use store::{AnyStore, Store};

/// The SQLite engine: one file, created on first start.
pub type SqliteStore = SqlStore<sqlx::Sqlite>;
/// The PostgreSQL engine: for production, and for several coordinators sharing one history.
pub type PostgresStore = SqlStore<sqlx::Postgres>;

/// Storage failures. The message is for logs; callers answer `INTERNAL` without it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value could not be decoded.
    #[error("corrupt stored value in {field}: {reason}")]
    Corrupt {
        /// Where.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A grouped write failed (the message names the cause).
    #[error("database error: {0}")]
    Grouped(String),
    /// The URL names no supported engine.
    #[error("unsupported database url `{0}`: use sqlite://FILE or postgres://…")]
    UnsupportedUrl(String),
}

/// Result of storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests;
