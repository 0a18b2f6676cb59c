//! PostgreSQL: for production, and for several coordinators sharing one history.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::*;

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[(
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
)];

/// The PostgreSQL engine.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
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
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
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
                    .bind(crate::now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

fn probe_of(row: &PgRow) -> StoreResult<ProbeRecord> {
    Ok(ProbeRecord {
        name: row.try_get("name")?,
        region: row.try_get("region")?,
        labels: parse_json("probes.labels", &row.try_get::<String, _>("labels")?)?,
        version: row.try_get("version")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
    })
}

fn run_of(row: &PgRow) -> StoreResult<RunRecord> {
    Ok(RunRecord {
        run_id: row.try_get("run_id")?,
        plan_name: row.try_get("plan_name")?,
        plan_sealed: row.try_get("plan_sealed")?,
        origin: row.try_get("origin")?,
        status: parse_run_status(&row.try_get::<String, _>("status")?)?,
        dry_run: row.try_get("dry_run")?,
        regions: parse_json("runs.regions", &row.try_get::<String, _>("regions")?)?,
        timeout_ms: row.try_get("timeout_ms")?,
        created_ms: row.try_get("created_ms")?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        verdict: row.try_get("verdict")?,
        report_json: row.try_get("report")?,
        rollback_json: row.try_get("rollback")?,
    })
}

fn assignment_of(row: &PgRow) -> StoreResult<AssignmentRecord> {
    Ok(AssignmentRecord {
        assignment_id: row.try_get("assignment_id")?,
        run_id: row.try_get("run_id")?,
        region: row.try_get("region")?,
        probe: row.try_get("probe")?,
        status: parse_assignment_status(&row.try_get::<String, _>("status")?)?,
        expected_results: row.try_get("expected_results")?,
        detail: row.try_get("detail")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn result_of(row: &PgRow) -> StoreResult<ResultRecord> {
    Ok(ResultRecord {
        result_id: row.try_get("result_id")?,
        run_id: row.try_get("run_id")?,
        assignment_id: row.try_get("assignment_id")?,
        region: row.try_get("region")?,
        probe: row.try_get("probe")?,
        check_index: row.try_get("check_index")?,
        status: row.try_get("status")?,
        message: row.try_get("message")?,
        duration_ms: row.try_get("duration_ms")?,
        requests: row.try_get("requests")?,
        request_errors: row.try_get("request_errors")?,
        latency_json: row.try_get("latency")?,
        sketch: row.try_get("sketch")?,
        received_ms: row.try_get("received_ms")?,
    })
}

async fn insert_result(tx: &mut Transaction<'_, Postgres>, r: &ResultRecord) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO results (result_id, run_id, assignment_id, region, probe, check_index, status, \
         message, duration_ms, requests, request_errors, latency, sketch, received_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (result_id) DO NOTHING",
    )
    .bind(&r.result_id)
    .bind(&r.run_id)
    .bind(&r.assignment_id)
    .bind(&r.region)
    .bind(&r.probe)
    .bind(r.check_index)
    .bind(&r.status)
    .bind(&r.message)
    .bind(r.duration_ms)
    .bind(r.requests)
    .bind(r.request_errors)
    .bind(&r.latency_json)
    .bind(&r.sketch)
    .bind(r.received_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Store for PostgresStore {
    async fn upsert_probe(&self, p: &ProbeRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO probes (name, region, labels, version, last_seen_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET region = excluded.region, labels = excluded.labels, \
             version = excluded.version, last_seen_ms = excluded.last_seen_ms",
        )
        .bind(&p.name)
        .bind(&p.region)
        .bind(json_of(&p.labels))
        .bind(&p.version)
        .bind(p.last_seen_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_probes(&self) -> StoreResult<Vec<ProbeRecord>> {
        let rows = sqlx::query("SELECT * FROM probes ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(probe_of).collect()
    }

    async fn insert_run(&self, r: &RunRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO runs (run_id, plan_name, plan_sealed, origin, status, dry_run, regions, timeout_ms, \
             created_ms, started_ms, finished_ms, verdict, report, rollback) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&r.run_id)
        .bind(&r.plan_name)
        .bind(&r.plan_sealed)
        .bind(&r.origin)
        .bind(r.status.as_str())
        .bind(r.dry_run)
        .bind(json_of(&r.regions))
        .bind(r.timeout_ms)
        .bind(r.created_ms)
        .bind(r.started_ms)
        .bind(r.finished_ms)
        .bind(&r.verdict)
        .bind(&r.report_json)
        .bind(&r.rollback_json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn update_run(&self, r: &RunRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE runs SET status = $2, started_ms = $3, finished_ms = $4, verdict = $5, report = $6, \
             rollback = $7 WHERE run_id = $1",
        )
        .bind(&r.run_id)
        .bind(r.status.as_str())
        .bind(r.started_ms)
        .bind(r.finished_ms)
        .bind(&r.verdict)
        .bind(&r.report_json)
        .bind(&r.rollback_json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_of).transpose()
    }

    async fn list_runs(&self, limit: u32, plan: Option<&str>) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE ($1::text IS NULL OR plan_name = $1) \
             ORDER BY created_ms DESC, run_id DESC LIMIT $2",
        )
        .bind(plan)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_of).collect()
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE status IN ('pending', 'running') ORDER BY created_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_of).collect()
    }

    async fn insert_assignment(&self, a: &AssignmentRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO assignments (assignment_id, run_id, region, probe, status, expected_results, detail, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&a.assignment_id)
        .bind(&a.run_id)
        .bind(&a.region)
        .bind(&a.probe)
        .bind(a.status.as_str())
        .bind(a.expected_results)
        .bind(&a.detail)
        .bind(a.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn update_assignment(&self, a: &AssignmentRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE assignments SET status = $2, expected_results = $3, detail = $4 WHERE assignment_id = $1",
        )
        .bind(&a.assignment_id)
        .bind(a.status.as_str())
        .bind(a.expected_results)
        .bind(&a.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn assignments(&self, run_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM assignments WHERE run_id = $1 ORDER BY created_ms, assignment_id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_of).collect()
    }

    async fn insert_results(&self, results: &[ResultRecord]) -> StoreResult<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = Vec::with_capacity(results.len());
        for r in results {
            inserted.push(insert_result(&mut tx, r).await?);
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn results(&self, run_id: &str) -> StoreResult<Vec<ResultRecord>> {
        let rows = sqlx::query("SELECT * FROM results WHERE run_id = $1 ORDER BY seq")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(result_of).collect()
    }
}
