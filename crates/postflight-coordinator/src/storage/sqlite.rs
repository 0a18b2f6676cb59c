//! SQLite: one file, created on first start, in WAL mode so readers never wait for the writer.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::*;

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "
CREATE TABLE probes (
    name TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    labels TEXT NOT NULL,
    version TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    plan_sealed BLOB NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    regions TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    verdict TEXT,
    report TEXT,
    rollback TEXT
);
CREATE INDEX runs_created_idx ON runs (created_ms DESC);
CREATE INDEX runs_unfinished_idx ON runs (status) WHERE status IN ('pending', 'running');
CREATE TABLE assignments (
    assignment_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    region TEXT NOT NULL,
    probe TEXT NOT NULL,
    status TEXT NOT NULL,
    expected_results INTEGER,
    detail TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX assignments_run_idx ON assignments (run_id);
CREATE TABLE results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL,
    region TEXT NOT NULL,
    probe TEXT NOT NULL,
    check_index INTEGER NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    requests INTEGER NOT NULL,
    request_errors INTEGER NOT NULL,
    latency TEXT,
    sketch BLOB NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX results_run_idx ON results (run_id, seq);
",
    ),
    (
        2,
        "
ALTER TABLE runs ADD COLUMN monitor_id TEXT;
CREATE INDEX runs_monitor_idx ON runs (monitor_id);
CREATE TABLE rollbacks (
    subject TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    run_id TEXT NOT NULL,
    claimed_ms INTEGER NOT NULL,
    executed_by TEXT NOT NULL,
    outcome TEXT,
    error TEXT,
    finished_ms INTEGER
);
CREATE INDEX rollbacks_plan_idx ON rollbacks (plan_name, claimed_ms);
CREATE TABLE monitors (
    monitor_id TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    plan_sealed BLOB NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    regions TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    rounds INTEGER NOT NULL,
    rollback TEXT,
    detail TEXT
);
CREATE TABLE monitor_rounds (
    monitor_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    per_check TEXT NOT NULL,
    sketch BLOB NOT NULL,
    PRIMARY KEY (monitor_id, round)
);
",
    ),
    (
        3,
        "
DROP TABLE results;
CREATE TABLE result_batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL,
    region TEXT NOT NULL,
    probe TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    results INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX result_batches_run_idx ON result_batches (run_id, seq);
",
    ),
    (
        4,
        "
ALTER TABLE rollbacks ADD COLUMN action_kind TEXT;
CREATE INDEX rollbacks_pending_idx ON rollbacks (executed_by) WHERE outcome IS NULL OR outcome = 'pending';
ALTER TABLE monitor_rounds ADD COLUMN regions TEXT;
ALTER TABLE monitor_rounds ADD COLUMN counted INTEGER NOT NULL DEFAULT 0;
",
    ),
];

/// The SQLite engine.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The result writer's own connection (see [`WriterConnection`]).
    writer: WriterConnection<sqlx::Sqlite>,
    /// One connection with `synchronous=FULL` for rollback claims and outcomes: a claim must
    /// survive a power loss right after it is taken (the action starts then), which WAL's
    /// `NORMAL` does not promise. Everything else keeps `NORMAL`, which loses nothing on a
    /// process crash.
    claims: SqlitePool,
}

impl SqliteStore {
    /// Opens `sqlite://FILE` (or `sqlite:FILE`), creating and migrating it as needed.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Checkpoints copy the WAL into the database and fsync it; every 64 MB instead of
            // every 4 MB keeps a burst of results from stalling on them.
            .pragma("wal_autocheckpoint", "16384")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let claims = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.synchronous(SqliteSynchronous::Full))
            .await?;
        let store = Self {
            pool,
            writer: WriterConnection::default(),
            claims,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A transaction that holds SQLite's write lock from its start, so claims are serialised,
    /// on the fully synchronous connection.
    async fn begin_claim(
        &self,
        _plan: &str,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.claims.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Where claims' outcomes are written (durably, as the claims themselves).
    fn claims_pool(&self) -> &SqlitePool {
        &self.claims
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        for (version, sql) in MIGRATIONS {
            if *version > current {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)")
                    .bind(version)
                    .bind(postflight_ops::host::now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

row_ext!(sqlx::sqlite::SqliteRow);
store_impl!(SqliteStore);

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims are committed on a fully synchronous connection (durable through a power loss
    /// before the action starts); everything else keeps WAL's `NORMAL`.
    #[tokio::test]
    async fn claims_are_written_fully_synchronously() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        let level = |pool: &SqlitePool| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(level(&store.claims).await, 2, "FULL");
        assert_eq!(level(&store.pool).await, 1, "NORMAL");
        let mut claim = store.begin_claim("p").await.unwrap();
        let inside: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *claim)
            .await
            .unwrap();
        assert_eq!(
            inside, 2,
            "the claim's transaction runs on the FULL connection"
        );
    }
}
