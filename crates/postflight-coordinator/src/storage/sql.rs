//! The one implementation of [`Store`] for both engines: the statements are portable SQL
//! (`$n` placeholders, numbered in order of first use, which SQLite also accepts), written
//! once over sqlx's database traits. Only opening, the schema and how rollback claims are
//! serialised differ per engine ([`Engine`], in `sqlite.rs` and `postgres.rs`).

use std::future::Future;

use postflight_plan::rollback::ActionOutcome;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};

use super::records::*;
use super::{ClaimOutcome, RollbackClaim, Store, StoreError, StoreResult};

/// What differs between the engines once a database is open.
pub trait Engine: Database {
    /// A transaction on `claims` in which claims on `plan` are serialised across everyone
    /// sharing the database.
    fn begin_claim<'a>(
        claims: &'a Pool<Self>,
        plan: &'a str,
    ) -> impl Future<Output = StoreResult<Transaction<'static, Self>>> + Send + 'a;

    /// Rows a statement changed (each engine's result type has its own method).
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// The database's clock in Unix milliseconds, as SQL: leases are set and compared on the
    /// one clock every coordinator sharing the database reads, not on each one's own.
    const NOW_MS: &'static str;
}

/// A coordinator's database: the pool, the connection the result writer keeps, and where
/// rollback claims are written (SQLite: a fully synchronous connection of its own;
/// PostgreSQL: the pool, a committed transaction being durable already).
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    pub(super) claims: Pool<DB>,
    pub(super) writer: WriterConnection<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            claims: self.claims.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("engine", &DB::NAME)
            .finish_non_exhaustive()
    }
}

impl<DB: Database> SqlStore<DB> {
    pub(super) fn new(pool: Pool<DB>, claims: Pool<DB>) -> Self {
        Self {
            pool,
            claims,
            writer: WriterConnection::default(),
        }
    }
}

/// A connection kept for the result writer. Taking one from the pool for every group commit
/// cost about 0.6 ms of a 1 ms cycle under load (the pool's bookkeeping and wake-ups), which
/// bounded ingest; the writer is a single task, so one connection of its own serves it. A
/// connection that failed is dropped and the next write takes a fresh one.
pub struct WriterConnection<DB: sqlx::Database>(
    std::sync::Arc<tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<DB>>>>,
);

impl<DB: sqlx::Database> Default for WriterConnection<DB> {
    fn default() -> Self {
        Self(std::sync::Arc::new(tokio::sync::Mutex::new(None)))
    }
}

impl<DB: sqlx::Database> Clone for WriterConnection<DB> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<DB: sqlx::Database> std::fmt::Debug for WriterConnection<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterConnection")
    }
}

/// Rows per INSERT statement of result batches (7 parameters each: well within both
/// engines' limits on bound parameters).
const INSERT_CHUNK: usize = 256;

impl<DB> Store for SqlStore<DB>
where
    DB: Engine,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    DB::Row: RowExt,
{
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

    async fn probe_arrived(&self, p: &ProbeRecord, coordinator: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO probes (name, region, labels, version, last_seen_ms, coordinator) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET region = excluded.region, labels = excluded.labels, \
             version = excluded.version, last_seen_ms = excluded.last_seen_ms, \
             coordinator = excluded.coordinator",
        )
        .bind(&p.name)
        .bind(&p.region)
        .bind(json_of(&p.labels))
        .bind(&p.version)
        .bind(p.last_seen_ms)
        .bind(coordinator)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_probes(&self, after: &str, limit: u32) -> StoreResult<Vec<ProbeRecord>> {
        let rows = sqlx::query("SELECT * FROM probes WHERE name > $1 ORDER BY name LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(probe_of).collect()
    }

    async fn forget_probes(&self, seen_before_ms: i64, keep: u32) -> StoreResult<u64> {
        let old = sqlx::query("DELETE FROM probes WHERE last_seen_ms < $1")
            .bind(seen_before_ms)
            .execute(&self.pool)
            .await?;
        let surplus = sqlx::query(
            "DELETE FROM probes WHERE name IN \
             (SELECT name FROM probes ORDER BY last_seen_ms DESC, name LIMIT $1 OFFSET $2)",
        )
        .bind(i64::MAX)
        .bind(i64::from(keep))
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&old) + DB::rows_affected(&surplus))
    }

    async fn insert_run(&self, r: &RunRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO runs (run_id, plan_name, plan_sealed, origin, status, dry_run, regions, timeout_ms, \
             created_ms, started_ms, finished_ms, verdict, report, rollback, monitor_id, migration, against, \
             take_baseline, baseline_id, baseline_refused, stage, forced, owner, lease_until_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
             $21, $22, $23, $24)",
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
        .bind(&r.monitor_id)
        .bind(&r.migration)
        .bind(&r.against)
        .bind(r.take_baseline)
        .bind(&r.baseline_id)
        .bind(&r.baseline_refused)
        .bind(&r.stage)
        .bind(&r.forced)
        .bind(&r.owner)
        .bind(r.lease_until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn update_run(&self, r: &RunRecord) -> StoreResult<bool> {
        // Only the run's owner writes it: a coordinator whose run was adopted by another (it
        // stalled past its lease) must not overwrite what the adopter decides.
        let done = sqlx::query(
            "UPDATE runs SET status = $2, started_ms = $3, finished_ms = $4, verdict = $5, report = $6, \
             rollback = $7, baseline_id = $8, baseline_refused = $9 \
             WHERE run_id = $1 AND (owner IS NULL OR $10 IS NULL OR owner = $10)",
        )
        .bind(&r.run_id)
        .bind(r.status.as_str())
        .bind(r.started_ms)
        .bind(r.finished_ms)
        .bind(&r.verdict)
        .bind(&r.report_json)
        .bind(&r.rollback_json)
        .bind(&r.baseline_id)
        .bind(&r.baseline_refused)
        .bind(&r.owner)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn claim_run(&self, run_id: &str, owner: &str, lease_ms: i64) -> StoreResult<bool> {
        let now = DB::NOW_MS;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET owner = $2, lease_until_ms = {now} + $3 \
             WHERE run_id = $1 AND status IN ('pending', 'running') \
             AND (owner IS NULL OR owner = $2 OR lease_until_ms IS NULL OR lease_until_ms < {now})"
        )))
        .bind(run_id)
        .bind(owner)
        .bind(lease_ms)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn renew_run_leases(&self, owner: &str, lease_ms: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET lease_until_ms = {} + $2 \
             WHERE owner = $1 AND status IN ('pending', 'running') RETURNING run_id",
            DB::NOW_MS
        )))
        .bind(owner)
        .bind(lease_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.text("run_id")).collect()
    }

    async fn adoptable(&self) -> StoreResult<Adoptable> {
        let now = DB::NOW_MS;
        let free = format!("(owner IS NULL OR lease_until_ms IS NULL OR lease_until_ms < {now})");
        let runs = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT run_id FROM runs WHERE status IN ('pending', 'running') AND {free} \
             ORDER BY created_ms"
        )))
        .fetch_all(&self.pool)
        .await?;
        let monitors = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT monitor_id FROM monitors WHERE status = 'running' AND {free} ORDER BY started_ms"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(Adoptable {
            runs: runs
                .iter()
                .map(|r| r.text("run_id"))
                .collect::<StoreResult<_>>()?,
            monitors: monitors
                .iter()
                .map(|r| r.text("monitor_id"))
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn release_run(&self, run_id: &str, owner: &str) -> StoreResult<()> {
        sqlx::query("UPDATE runs SET lease_until_ms = 0 WHERE run_id = $1 AND owner = $2")
            .bind(run_id)
            .bind(owner)
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
        let rows = match plan {
            Some(plan) => {
                sqlx::query("SELECT * FROM runs WHERE plan_name = $1 ORDER BY created_ms DESC, run_id DESC LIMIT $2")
                    .bind(plan)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM runs ORDER BY created_ms DESC, run_id DESC LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
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
            "INSERT INTO assignments (assignment_id, run_id, region, probe, status, expected_results, detail, created_ms, relay) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&a.assignment_id)
        .bind(&a.run_id)
        .bind(&a.region)
        .bind(&a.probe)
        .bind(a.status.as_str())
        .bind(a.expected_results)
        .bind(&a.detail)
        .bind(a.created_ms)
        .bind(&a.relay)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_assignments(&self, assignments: &[AssignmentRecord]) -> StoreResult<()> {
        use sqlx::Connection;
        if assignments.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for chunk in assignments.chunks(INSERT_CHUNK) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO assignments (assignment_id, run_id, region, probe, status, expected_results, detail, created_ms, relay) ",
            );
            insert.push_values(chunk, |mut row, a| {
                row.push_bind(&a.assignment_id)
                    .push_bind(&a.run_id)
                    .push_bind(&a.region)
                    .push_bind(&a.probe)
                    .push_bind(a.status.as_str())
                    .push_bind(a.expected_results)
                    .push_bind(&a.detail)
                    .push_bind(a.created_ms)
                    .push_bind(&a.relay);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn update_assignment(&self, a: &AssignmentRecord) -> StoreResult<()> {
        sqlx::query("UPDATE assignments SET status = $2, expected_results = $3, detail = $4 WHERE assignment_id = $1")
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

    async fn insert_batches(&self, batches: &[BatchRecord]) -> StoreResult<()> {
        use sqlx::Connection;
        let mut held = self.writer.0.lock().await;
        let conn = match held.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        let conn = held.insert(conn);
        // One statement is atomic on its own: most group commits need no BEGIN and
        // COMMIT, each a round trip to the database's thread.
        let chunks: Vec<&[BatchRecord]> = batches.chunks(INSERT_CHUNK).collect();
        let statement = |chunk: &[BatchRecord]| {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO result_batches (run_id, assignment_id, region, probe, received_ms, results, data) ",
            );
            insert.push_values(chunk, |mut row, b| {
                row.push_bind(&b.run_id)
                    .push_bind(&b.assignment_id)
                    .push_bind(&b.region)
                    .push_bind(&b.probe)
                    .push_bind(b.received_ms)
                    .push_bind(b.results)
                    .push_bind(&b.data);
            });
            insert
        };
        let written: StoreResult<()> = async {
            if let [only] = chunks.as_slice() {
                statement(only).build().execute(&mut **conn).await?;
                return Ok(());
            }
            let mut tx = conn.begin().await?;
            for chunk in chunks {
                statement(chunk).build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        if written.is_err() {
            // Possibly broken: the next write starts from a fresh connection.
            *held = None;
        }
        written
    }

    async fn announce_coordinator(&self, identity: &str, lease_ms: i64) -> StoreResult<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO coordinators (identity, lease_until_ms) VALUES ($1, {now} + $2) \
             ON CONFLICT (identity) DO UPDATE SET lease_until_ms = excluded.lease_until_ms",
            now = DB::NOW_MS
        )))
        .bind(identity)
        .bind(lease_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn connect_probe(
        &self,
        name: &str,
        coordinator: Option<&str>,
        only_if: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE probes SET coordinator = $2 WHERE name = $1 AND ($3 IS NULL OR coordinator = $3)",
        )
        .bind(name)
        .bind(coordinator)
        .bind(only_if)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn withdraw_coordinator(&self, identity: &str) -> StoreResult<()> {
        sqlx::query("UPDATE probes SET coordinator = NULL WHERE coordinator = $1")
            .bind(identity)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM coordinators WHERE identity = $1")
            .bind(identity)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn remote_probes(&self, identity: &str) -> StoreResult<Vec<RemoteProbe>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT p.name, p.region, p.coordinator FROM probes p \
             JOIN coordinators c ON c.identity = p.coordinator \
             WHERE p.coordinator <> $1 AND c.lease_until_ms > {now} ORDER BY p.name",
            now = DB::NOW_MS
        )))
        .bind(identity)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RemoteProbe {
                    name: r.text("name")?,
                    region: r.text("region")?,
                    coordinator: r.text("coordinator")?,
                })
            })
            .collect()
    }

    async fn relayed_by(&self, identity: &str) -> StoreResult<Vec<AssignmentRecord>> {
        let rows = sqlx::query(
            "SELECT a.* FROM assignments a JOIN runs r ON r.run_id = a.run_id \
             WHERE a.relay = $1 AND a.status IN ('active', 'finished') \
             AND r.status IN ('pending', 'running') ORDER BY a.created_ms, a.assignment_id",
        )
        .bind(identity)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_of).collect()
    }

    async fn strays_for(&self, identity: &str) -> StoreResult<Vec<AssignmentRecord>> {
        let rows = sqlx::query(
            "SELECT a.* FROM assignments a JOIN probes p ON p.name = a.probe \
             JOIN runs r ON r.run_id = a.run_id \
             WHERE a.status = 'active' AND p.coordinator = $1 \
             AND (a.relay IS NULL OR a.relay <> $1) \
             AND r.status IN ('pending', 'running') AND (r.owner IS NULL OR r.owner <> $1) \
             ORDER BY a.created_ms, a.assignment_id",
        )
        .bind(identity)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_of).collect()
    }

    async fn take_relay(
        &self,
        assignment_id: &str,
        probe: &str,
        relay: Option<&str>,
    ) -> StoreResult<Option<AssignmentRecord>> {
        let row = sqlx::query(
            "UPDATE assignments SET relay = $3 \
             WHERE assignment_id = $1 AND probe = $2 AND status = 'active' RETURNING *",
        )
        .bind(assignment_id)
        .bind(probe)
        .bind(relay)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(assignment_of).transpose()
    }

    async fn settle_relayed(&self, a: &AssignmentRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE assignments SET status = $2, expected_results = $3, detail = $4 \
             WHERE assignment_id = $1 AND status = 'active'",
        )
        .bind(&a.assignment_id)
        .bind(a.status.as_str())
        .bind(a.expected_results)
        .bind(&a.detail)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn batches_after(
        &self,
        run_id: &str,
        assignment_id: &str,
        after_seq: i64,
    ) -> StoreResult<Vec<BatchRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM result_batches WHERE run_id = $1 AND assignment_id = $2 AND seq > $3 \
             ORDER BY seq",
        )
        .bind(run_id)
        .bind(assignment_id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_of).collect()
    }

    async fn batches(&self, run_id: &str) -> StoreResult<Vec<BatchRecord>> {
        let rows = sqlx::query("SELECT * FROM result_batches WHERE run_id = $1 ORDER BY seq")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(batch_of).collect()
    }

    async fn count_results(&self, run_id: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(results), 0) AS BIGINT) AS n FROM result_batches WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?;
        row.int("n")
    }

    async fn claim_rollback(
        &self,
        c: &RollbackClaim,
        cooldown_ms: i64,
    ) -> StoreResult<ClaimOutcome> {
        let mut tx = DB::begin_claim(&self.claims, &c.plan_name).await?;
        let taken = sqlx::query("SELECT executed_by, claimed_ms FROM rollbacks WHERE subject = $1")
            .bind(&c.subject)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = taken {
            return Ok(ClaimOutcome::AlreadyClaimed {
                by: row.text("executed_by")?,
                at_ms: row.int("claimed_ms")?,
            });
        }
        let recent = sqlx::query(
            "SELECT executed_by, claimed_ms, run_id FROM rollbacks WHERE plan_name = $1 AND claimed_ms > $2 \
             ORDER BY claimed_ms DESC LIMIT 1",
        )
        .bind(&c.plan_name)
        .bind(c.claimed_ms - cooldown_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = recent {
            return Ok(ClaimOutcome::CoolingDown {
                by: row.text("executed_by")?,
                at_ms: row.int("claimed_ms")?,
                run_id: row.text("run_id")?,
            });
        }
        sqlx::query(
            "INSERT INTO rollbacks (subject, plan_name, run_id, claimed_ms, executed_by, action_kind, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
        )
        .bind(&c.subject)
        .bind(&c.plan_name)
        .bind(&c.run_id)
        .bind(c.claimed_ms)
        .bind(&c.executed_by)
        .bind(&c.action_kind)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ClaimOutcome::Claimed)
    }

    async fn finish_rollback(
        &self,
        subject: &str,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE rollbacks SET outcome = $2, error = $3, finished_ms = $4 WHERE subject = $1",
        )
        .bind(subject)
        .bind(outcome.as_str())
        .bind(error)
        .bind(postflight_ops::host::now_ms())
        .execute(&self.claims)
        .await?;
        Ok(())
    }

    async fn pending_rollbacks(
        &self,
        executed_by: &str,
        stale_before_ms: i64,
    ) -> StoreResult<Vec<RollbackClaim>> {
        let rows = sqlx::query(
            "SELECT * FROM rollbacks WHERE (outcome IS NULL OR outcome = 'pending') \
             AND (executed_by = $1 OR claimed_ms < $2) ORDER BY claimed_ms",
        )
        .bind(executed_by)
        .bind(stale_before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(claim_of).collect()
    }

    async fn release_rollback(&self, subject: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM rollbacks WHERE subject = $1 AND (outcome IS NULL OR outcome = 'pending')",
        )
        .bind(subject)
        .execute(&self.claims)
        .await?;
        Ok(())
    }

    async fn insert_monitor(&self, m: &MonitorRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO monitors (monitor_id, plan_name, plan_sealed, origin, status, dry_run, regions, \
             started_ms, ends_ms, ended_ms, rounds, rollback, detail, against, migration, owner, \
             lease_until_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&m.monitor_id)
        .bind(&m.plan_name)
        .bind(&m.plan_sealed)
        .bind(&m.origin)
        .bind(m.status.as_str())
        .bind(m.dry_run)
        .bind(json_of(&m.regions))
        .bind(m.started_ms)
        .bind(m.ends_ms)
        .bind(m.ended_ms)
        .bind(m.rounds)
        .bind(&m.rollback_json)
        .bind(&m.detail)
        .bind(&m.against)
        .bind(&m.migration)
        .bind(&m.owner)
        .bind(m.lease_until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_monitor(
        &self,
        monitor_id: &str,
        owner: &str,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        let now = DB::NOW_MS;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE monitors SET owner = $2, lease_until_ms = {now} + $3 \
             WHERE monitor_id = $1 AND status = 'running' \
             AND (owner IS NULL OR owner = $2 OR lease_until_ms IS NULL OR lease_until_ms < {now})"
        )))
        .bind(monitor_id)
        .bind(owner)
        .bind(lease_ms)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn renew_monitor_leases(&self, owner: &str, lease_ms: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE monitors SET lease_until_ms = {} + $2 \
             WHERE owner = $1 AND status = 'running' RETURNING monitor_id",
            DB::NOW_MS
        )))
        .bind(owner)
        .bind(lease_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.text("monitor_id")).collect()
    }

    async fn update_monitor(&self, m: &MonitorRecord) -> StoreResult<()> {
        // Only the monitor's owner writes it (see `update_run`).
        sqlx::query(
            "UPDATE monitors SET status = $2, ended_ms = $3, rounds = $4, rollback = $5, detail = $6 \
             WHERE monitor_id = $1 AND (owner IS NULL OR $7 IS NULL OR owner = $7)",
        )
        .bind(&m.monitor_id)
        .bind(m.status.as_str())
        .bind(m.ended_ms)
        .bind(m.rounds)
        .bind(&m.rollback_json)
        .bind(&m.detail)
        .bind(&m.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_monitor(&self, monitor_id: &str) -> StoreResult<Option<MonitorRecord>> {
        let row = sqlx::query("SELECT * FROM monitors WHERE monitor_id = $1")
            .bind(monitor_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(monitor_of).transpose()
    }

    async fn list_monitors(&self, limit: u32) -> StoreResult<Vec<MonitorRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM monitors ORDER BY started_ms DESC, monitor_id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(monitor_of).collect()
    }

    async fn running_monitors(&self) -> StoreResult<Vec<MonitorRecord>> {
        let rows =
            sqlx::query("SELECT * FROM monitors WHERE status = 'running' ORDER BY started_ms")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(monitor_of).collect()
    }

    async fn insert_round(&self, r: &RoundRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO monitor_rounds (monitor_id, round, run_id, at_ms, verdict, per_check, sketch, regions, counted) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (monitor_id, round) DO NOTHING",
        )
        .bind(&r.monitor_id)
        .bind(r.round)
        .bind(&r.run_id)
        .bind(r.at_ms)
        .bind(&r.verdict)
        .bind(&r.per_check_json)
        .bind(&r.sketch)
        .bind(&r.regions_json)
        .bind(r.counted)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn rounds_since(&self, monitor_id: &str, since_ms: i64) -> StoreResult<Vec<RoundRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM monitor_rounds WHERE monitor_id = $1 AND at_ms > $2 ORDER BY round",
        )
        .bind(monitor_id)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(round_of).collect()
    }

    async fn last_rounds(&self, monitor_id: &str, limit: u32) -> StoreResult<Vec<RoundRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM monitor_rounds WHERE monitor_id = $1 ORDER BY round DESC LIMIT $2",
        )
        .bind(monitor_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(round_of).collect()
    }

    async fn migration_runs(&self, plan: &str, migration: &str) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE plan_name = $1 AND migration = $2 \
             ORDER BY created_ms DESC, run_id DESC LIMIT 1000",
        )
        .bind(plan)
        .bind(migration)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_of).collect()
    }

    async fn insert_feedback(&self, f: &FeedbackRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO feedback (feedback_id, migration, kind, text, source, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&f.feedback_id)
        .bind(&f.migration)
        .bind(&f.kind)
        .bind(&f.text)
        .bind(&f.source)
        .bind(f.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_feedback(
        &self,
        migration: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<FeedbackRecord>> {
        let rows =
            match migration {
                Some(migration) => {
                    sqlx::query(
                        "SELECT * FROM feedback WHERE migration = $1 \
                     ORDER BY created_ms DESC, feedback_id DESC LIMIT $2",
                    )
                    .bind(migration)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                }
                None => sqlx::query(
                    "SELECT * FROM feedback ORDER BY created_ms DESC, feedback_id DESC LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?,
            };
        rows.iter().map(feedback_of).collect()
    }

    async fn count_feedback(&self, migration: &str, kind: &str, since_ms: i64) -> StoreResult<u64> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM feedback \
             WHERE migration = $1 AND kind = $2 AND created_ms > $3",
        )
        .bind(migration)
        .bind(kind)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(row.int("n")?).unwrap_or(0))
    }

    async fn insert_baseline(&self, b: &BaselineRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO baselines (baseline_id, plan_name, migration, created_ms, run_id, status, checks, \
             latencies, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&b.baseline_id)
        .bind(&b.plan_name)
        .bind(&b.migration)
        .bind(b.created_ms)
        .bind(&b.run_id)
        .bind(&b.status)
        .bind(b.checks)
        .bind(b.latencies)
        .bind(&b.data)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_baseline(&self, baseline_id: &str) -> StoreResult<Option<BaselineRecord>> {
        let row = sqlx::query("SELECT * FROM baselines WHERE baseline_id = $1")
            .bind(baseline_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(baseline_of).transpose()
    }

    async fn list_baselines(
        &self,
        plan: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<BaselineRecord>> {
        let rows =
            match plan {
                Some(plan) => {
                    sqlx::query(
                        "SELECT * FROM baselines WHERE plan_name = $1 \
                     ORDER BY created_ms DESC, baseline_id DESC LIMIT $2",
                    )
                    .bind(plan)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                }
                None => sqlx::query(
                    "SELECT * FROM baselines ORDER BY created_ms DESC, baseline_id DESC LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?,
            };
        rows.iter().map(baseline_of).collect()
    }
}

fn json_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn parse_json<T: serde::de::DeserializeOwned>(field: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        field,
        reason: e.to_string(),
    })
}

fn corrupt(field: &'static str, text: &str) -> StoreError {
    StoreError::Corrupt {
        field,
        reason: format!("unknown value `{text}`"),
    }
}

/// Reading a column of either engine's rows, so that row decoding is written once.
pub trait RowExt {
    /// A text column.
    fn text(&self, column: &str) -> StoreResult<String>;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    /// An integer column.
    fn int(&self, column: &str) -> StoreResult<i64>;
    /// A nullable integer column.
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    /// A boolean column.
    fn flag(&self, column: &str) -> StoreResult<bool>;
    /// A binary column.
    fn blob(&self, column: &str) -> StoreResult<Vec<u8>>;
}

impl<R> RowExt for R
where
    R: sqlx::Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn text(&self, c: &str) -> StoreResult<String> {
        Ok(self.try_get(c)?)
    }
    fn opt_text(&self, c: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(c)?)
    }
    fn int(&self, c: &str) -> StoreResult<i64> {
        Ok(self.try_get(c)?)
    }
    fn opt_int(&self, c: &str) -> StoreResult<Option<i64>> {
        Ok(self.try_get(c)?)
    }
    fn flag(&self, c: &str) -> StoreResult<bool> {
        Ok(self.try_get(c)?)
    }
    fn blob(&self, c: &str) -> StoreResult<Vec<u8>> {
        Ok(self.try_get(c)?)
    }
}

fn probe_of(row: &impl RowExt) -> StoreResult<ProbeRecord> {
    Ok(ProbeRecord {
        name: row.text("name")?,
        region: row.text("region")?,
        labels: parse_json("probes.labels", &row.text("labels")?)?,
        version: row.text("version")?,
        last_seen_ms: row.int("last_seen_ms")?,
    })
}

fn run_of(row: &impl RowExt) -> StoreResult<RunRecord> {
    let status = row.text("status")?;
    Ok(RunRecord {
        run_id: row.text("run_id")?,
        plan_name: row.text("plan_name")?,
        plan_sealed: row.blob("plan_sealed")?,
        origin: row.text("origin")?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt("runs.status", &status))?,
        dry_run: row.flag("dry_run")?,
        regions: parse_json("runs.regions", &row.text("regions")?)?,
        timeout_ms: row.int("timeout_ms")?,
        created_ms: row.int("created_ms")?,
        started_ms: row.opt_int("started_ms")?,
        finished_ms: row.opt_int("finished_ms")?,
        verdict: row.opt_text("verdict")?,
        report_json: row.opt_text("report")?,
        rollback_json: row.opt_text("rollback")?,
        monitor_id: row.opt_text("monitor_id")?,
        migration: row.opt_text("migration")?,
        against: row.opt_text("against")?,
        take_baseline: row.flag("take_baseline")?,
        baseline_id: row.opt_text("baseline_id")?,
        baseline_refused: row.opt_text("baseline_refused")?,
        stage: row.opt_text("stage")?,
        forced: row.opt_text("forced")?,
        owner: row.opt_text("owner")?,
        lease_until_ms: row.opt_int("lease_until_ms")?,
    })
}

fn feedback_of(row: &impl RowExt) -> StoreResult<FeedbackRecord> {
    Ok(FeedbackRecord {
        feedback_id: row.text("feedback_id")?,
        migration: row.text("migration")?,
        kind: row.text("kind")?,
        text: row.text("text")?,
        source: row.text("source")?,
        created_ms: row.int("created_ms")?,
    })
}

fn baseline_of(row: &impl RowExt) -> StoreResult<BaselineRecord> {
    Ok(BaselineRecord {
        baseline_id: row.text("baseline_id")?,
        plan_name: row.text("plan_name")?,
        migration: row.opt_text("migration")?,
        created_ms: row.int("created_ms")?,
        run_id: row.text("run_id")?,
        status: row.text("status")?,
        checks: row.int("checks")?,
        latencies: row.int("latencies")?,
        data: row.text("data")?,
    })
}

fn assignment_of(row: &impl RowExt) -> StoreResult<AssignmentRecord> {
    let status = row.text("status")?;
    Ok(AssignmentRecord {
        assignment_id: row.text("assignment_id")?,
        run_id: row.text("run_id")?,
        region: row.text("region")?,
        probe: row.text("probe")?,
        status: AssignmentStatus::parse(&status)
            .ok_or_else(|| corrupt("assignments.status", &status))?,
        expected_results: row.opt_int("expected_results")?,
        detail: row.opt_text("detail")?,
        created_ms: row.int("created_ms")?,
        relay: row.opt_text("relay")?,
    })
}

fn batch_of(row: &impl RowExt) -> StoreResult<BatchRecord> {
    Ok(BatchRecord {
        run_id: row.text("run_id")?,
        assignment_id: row.text("assignment_id")?,
        region: row.text("region")?,
        probe: row.text("probe")?,
        received_ms: row.int("received_ms")?,
        results: row.int("results")?,
        data: row.blob("data")?,
        seq: row.int("seq")?,
    })
}

fn monitor_of(row: &impl RowExt) -> StoreResult<MonitorRecord> {
    let status = row.text("status")?;
    Ok(MonitorRecord {
        monitor_id: row.text("monitor_id")?,
        plan_name: row.text("plan_name")?,
        plan_sealed: row.blob("plan_sealed")?,
        origin: row.text("origin")?,
        status: MonitorStatus::parse(&status).ok_or_else(|| corrupt("monitors.status", &status))?,
        dry_run: row.flag("dry_run")?,
        regions: parse_json("monitors.regions", &row.text("regions")?)?,
        started_ms: row.int("started_ms")?,
        ends_ms: row.int("ends_ms")?,
        ended_ms: row.opt_int("ended_ms")?,
        rounds: row.int("rounds")?,
        rollback_json: row.opt_text("rollback")?,
        detail: row.opt_text("detail")?,
        against: row.opt_text("against")?,
        migration: row.opt_text("migration")?,
        owner: row.opt_text("owner")?,
        lease_until_ms: row.opt_int("lease_until_ms")?,
    })
}

fn round_of(row: &impl RowExt) -> StoreResult<RoundRecord> {
    Ok(RoundRecord {
        monitor_id: row.text("monitor_id")?,
        round: row.int("round")?,
        run_id: row.text("run_id")?,
        at_ms: row.int("at_ms")?,
        verdict: row.text("verdict")?,
        per_check_json: row.text("per_check")?,
        sketch: row.blob("sketch")?,
        regions_json: row.opt_text("regions")?,
        counted: row.flag("counted")?,
    })
}

fn claim_of(row: &impl RowExt) -> StoreResult<RollbackClaim> {
    Ok(RollbackClaim {
        subject: row.text("subject")?,
        plan_name: row.text("plan_name")?,
        run_id: row.text("run_id")?,
        executed_by: row.text("executed_by")?,
        claimed_ms: row.int("claimed_ms")?,
        action_kind: row.opt_text("action_kind")?.unwrap_or_default(),
    })
}
