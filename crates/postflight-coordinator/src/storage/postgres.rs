//! PostgreSQL: for production, and for several coordinators sharing one history.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

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
    last_seen_ms BIGINT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    plan_sealed BYTEA NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL,
    regions TEXT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
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
    expected_results BIGINT,
    detail TEXT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX assignments_run_idx ON assignments (run_id);
CREATE TABLE results (
    seq BIGSERIAL PRIMARY KEY,
    result_id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL,
    region TEXT NOT NULL,
    probe TEXT NOT NULL,
    check_index BIGINT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    requests BIGINT NOT NULL,
    request_errors BIGINT NOT NULL,
    latency TEXT,
    sketch BYTEA NOT NULL,
    received_ms BIGINT NOT NULL
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
    claimed_ms BIGINT NOT NULL,
    executed_by TEXT NOT NULL,
    outcome TEXT,
    error TEXT,
    finished_ms BIGINT
);
CREATE INDEX rollbacks_plan_idx ON rollbacks (plan_name, claimed_ms);
CREATE TABLE monitors (
    monitor_id TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    plan_sealed BYTEA NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL,
    regions TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ends_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    rounds BIGINT NOT NULL,
    rollback TEXT,
    detail TEXT
);
CREATE TABLE monitor_rounds (
    monitor_id TEXT NOT NULL,
    round BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    verdict TEXT NOT NULL,
    per_check TEXT NOT NULL,
    sketch BYTEA NOT NULL,
    PRIMARY KEY (monitor_id, round)
);
",
    ),
    (
        3,
        "
DROP TABLE results;
CREATE TABLE result_batches (
    seq BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL,
    region TEXT NOT NULL,
    probe TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    results BIGINT NOT NULL,
    data BYTEA NOT NULL
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
ALTER TABLE monitor_rounds ADD COLUMN counted BOOLEAN NOT NULL DEFAULT FALSE;
",
    ),
];

/// The PostgreSQL engine.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The result writer's own connection (see [`WriterConnection`]).
    writer: WriterConnection<sqlx::Postgres>,
}

impl PostgresStore {
    /// Connects to `postgres://…` and migrates the schema.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("postflight-coordinator");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let store = Self {
            pool,
            writer: WriterConnection::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A transaction in which claims on `plan` are serialised across every coordinator
    /// sharing this database (a transaction-scoped advisory lock on the plan's name).
    async fn begin_claim(
        &self,
        plan: &str,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(plan)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Where claims' outcomes are written: a committed transaction is durable already.
    fn claims_pool(&self) -> &PgPool {
        &self.pool
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // Coordinators starting together must not migrate twice.
        sqlx::query("SELECT pg_advisory_xact_lock(7700770077)")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::bigint FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        for (version, sql) in MIGRATIONS {
            if *version > current {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)")
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

row_ext!(sqlx::postgres::PgRow);
store_impl!(PostgresStore);
