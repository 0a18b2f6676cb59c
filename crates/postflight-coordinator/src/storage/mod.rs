//! The coordinator's history: probes, runs (with their plans), assignments, results with
//! their latency sketches, and reports. One trait, two engines: SQLite (default, one file)
//! and PostgreSQL (production, shared by several coordinators).

mod migrations;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

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

/// A probe as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    /// Unique name.
    pub name: String,
    /// Region it executes in.
    pub region: String,
    /// Free labels.
    pub labels: BTreeMap<String, String>,
    /// Probe version.
    pub version: String,
    /// Unix milliseconds.
    pub last_seen_ms: i64,
}

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting for a probe.
    Pending,
    /// At least one probe works on it.
    Running,
    /// Every required region reported.
    Completed,
    /// Stopped by an operator.
    Cancelled,
    /// Ended at its timeout with data missing.
    TimedOut,
}

impl RunStatus {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed_out",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "cancelled" => RunStatus::Cancelled,
            "timed_out" => RunStatus::TimedOut,
            _ => return None,
        })
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Cancelled | RunStatus::TimedOut
        )
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Unique id (UUID v7, so ids sort by creation).
    pub run_id: String,
    /// The plan's name.
    pub plan_name: String,
    /// The canonical plan, sealed (see `crate::seal`): it may hold secrets.
    pub plan_sealed: Vec<u8>,
    /// Where the plan came from (file name), for messages.
    pub origin: String,
    /// Lifecycle state.
    pub status: RunStatus,
    /// Rollback is decided but never executed.
    pub dry_run: bool,
    /// Regions that must report.
    pub regions: Vec<String>,
    /// Bound on the run.
    pub timeout_ms: i64,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// When the first probe got it.
    pub started_ms: Option<i64>,
    /// When it ended.
    pub finished_ms: Option<i64>,
    /// PASS, WARN, FAIL or INCONCLUSIVE once ended.
    pub verdict: Option<String>,
    /// The report as JSON once ended.
    pub report_json: Option<String>,
    /// The rollback decision as JSON once ended.
    pub rollback_json: Option<String>,
    /// The monitor this run is a round of.
    pub monitor_id: Option<String>,
}

/// State of an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentStatus {
    /// The probe is executing it.
    Active,
    /// The probe sent all its results.
    Finished,
    /// The probe could not execute it.
    Rejected,
    /// Its probe went away and the work moved elsewhere, or the run ended.
    Abandoned,
}

impl AssignmentStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentStatus::Active => "active",
            AssignmentStatus::Finished => "finished",
            AssignmentStatus::Rejected => "rejected",
            AssignmentStatus::Abandoned => "abandoned",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "active" => AssignmentStatus::Active,
            "finished" => AssignmentStatus::Finished,
            "rejected" => AssignmentStatus::Rejected,
            "abandoned" => AssignmentStatus::Abandoned,
            _ => return None,
        })
    }
}

/// One probe's share of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRecord {
    /// Unique id.
    pub assignment_id: String,
    /// The run.
    pub run_id: String,
    /// Region it covers.
    pub region: String,
    /// The probe executing it.
    pub probe: String,
    /// State.
    pub status: AssignmentStatus,
    /// Results the probe announced when it finished.
    pub expected_results: Option<i64>,
    /// Why it was rejected or abandoned.
    pub detail: Option<String>,
    /// Unix milliseconds.
    pub created_ms: i64,
}

/// The results of one probe message, stored as one row: a batch of probe results in their
/// wire encoding (`ResultBatch`, secrets masked, run and assignment ids factored out). One row
/// per batch rather than per result is what lets one coordinator ingest hundreds of
/// thousands of results a second; the coordinator removes replays before storing.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// The run.
    pub run_id: String,
    /// The assignment the results belong to.
    pub assignment_id: String,
    /// Region of the probe.
    pub region: String,
    /// The probe.
    pub probe: String,
    /// Unix milliseconds.
    pub received_ms: i64,
    /// Results in the batch.
    pub results: i64,
    /// The encoded `postflight.v1.ResultBatch`.
    pub data: Vec<u8>,
}

/// Lifecycle of a monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorStatus {
    /// Rounds are running.
    Running,
    /// The last phase ended without rollback.
    Completed,
    /// A rollback fired and ended it.
    RolledBack,
    /// Stopped by an operator.
    Stopped,
}

impl MonitorStatus {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorStatus::Running => "running",
            MonitorStatus::Completed => "completed",
            MonitorStatus::RolledBack => "rolled_back",
            MonitorStatus::Stopped => "stopped",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => MonitorStatus::Running,
            "completed" => MonitorStatus::Completed,
            "rolled_back" => MonitorStatus::RolledBack,
            "stopped" => MonitorStatus::Stopped,
            _ => return None,
        })
    }
}

/// A monitor as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorRecord {
    /// Unique id (UUID v7).
    pub monitor_id: String,
    /// The plan's name.
    pub plan_name: String,
    /// The canonical plan, sealed.
    pub plan_sealed: Vec<u8>,
    /// Where the plan came from.
    pub origin: String,
    /// Lifecycle state.
    pub status: MonitorStatus,
    /// Rollback is decided but never executed.
    pub dry_run: bool,
    /// Regions that must report in every round.
    pub regions: Vec<String>,
    /// Unix milliseconds.
    pub started_ms: i64,
    /// When the last phase ends.
    pub ends_ms: i64,
    /// When it ended.
    pub ended_ms: Option<i64>,
    /// Rounds completed.
    pub rounds: i64,
    /// The rollback decision that ended it, as JSON.
    pub rollback_json: Option<String>,
    /// Why it ended.
    pub detail: Option<String>,
}

/// What one monitoring round contributed to the window.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    /// The monitor.
    pub monitor_id: String,
    /// 1, 2, …
    pub round: i64,
    /// The round's run.
    pub run_id: String,
    /// When the round ended, Unix milliseconds.
    pub at_ms: i64,
    /// PASS, WARN, FAIL or INCONCLUSIVE.
    pub verdict: String,
    /// Requests per check as JSON `[[name, {count, errors}], …]`.
    pub per_check_json: String,
    /// Latency sketch of the round's requests.
    pub sketch: Vec<u8>,
    /// Requests and latencies per region (a `RoundSample`'s regions as JSON); `None` for
    /// rounds stored before regions were kept apart.
    pub regions_json: Option<String>,
    /// Whether the round counted towards `rollback.failing_rounds`.
    pub counted: bool,
}

use postflight_plan::rollback::ActionOutcome;
pub use postflight_rollback::{ClaimOutcome, RollbackClaim};

/// What the coordinator persists. Every method is one short transaction.
pub trait Store: Send + Sync + 'static {
    /// Creates or updates a probe.
    fn upsert_probe(&self, probe: &ProbeRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// Up to `limit` probes by name, after the name `after` (`""` for the first page).
    fn list_probes(
        &self,
        after: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<ProbeRecord>>> + Send;
    /// Forgets probes last seen before `seen_before_ms`, and beyond the `keep` most recently
    /// seen; returns how many were forgotten.
    fn forget_probes(
        &self,
        seen_before_ms: i64,
        keep: u32,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Stores a new run.
    fn insert_run(&self, run: &RunRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replaces a run's mutable fields (status, times, verdict, report, rollback).
    fn update_run(&self, run: &RunRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// One run.
    fn get_run(&self, run_id: &str) -> impl Future<Output = StoreResult<Option<RunRecord>>> + Send;
    /// Most recent first, optionally of one plan.
    fn list_runs(
        &self,
        limit: u32,
        plan: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<RunRecord>>> + Send;
    /// Runs that have not ended (to resume after a restart).
    fn unfinished_runs(&self) -> impl Future<Output = StoreResult<Vec<RunRecord>>> + Send;
    /// Stores a new assignment.
    fn insert_assignment(
        &self,
        assignment: &AssignmentRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Updates an assignment's status, expected result count and detail.
    fn update_assignment(
        &self,
        assignment: &AssignmentRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A run's assignments, oldest first.
    fn assignments(
        &self,
        run_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<AssignmentRecord>>> + Send;
    /// Stores result batches in one transaction (one multi-row insert).
    fn insert_batches(
        &self,
        batches: &[BatchRecord],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A run's result batches in arrival order.
    fn batches(&self, run_id: &str) -> impl Future<Output = StoreResult<Vec<BatchRecord>>> + Send;
    /// How many results a run has stored.
    fn count_results(&self, run_id: &str) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Claims a rollback: exactly one caller gets `Claimed` per subject, and none while the
    /// plan's last rollback is younger than `cooldown_ms`, however many coordinators ask at once.
    fn claim_rollback(
        &self,
        claim: &RollbackClaim,
        cooldown_ms: i64,
    ) -> impl Future<Output = StoreResult<ClaimOutcome>> + Send;
    /// Records how a claimed rollback went.
    fn finish_rollback(
        &self,
        subject: &str,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Claims without an outcome, oldest first, taken by `executed_by` (after a restart: what
    /// was running when this coordinator stopped) or before `stale_before_ms` by anyone (older
    /// than any action may run: their executor stopped).
    fn pending_rollbacks(
        &self,
        executed_by: &str,
        stale_before_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<RollbackClaim>>> + Send;
    /// Withdraws a claim that has no outcome: its action never started (the decision was
    /// never stored), so the run or monitor may decide again.
    fn release_rollback(&self, subject: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Stores a new monitor.
    fn insert_monitor(
        &self,
        monitor: &MonitorRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replaces a monitor's mutable fields (status, end, rounds, rollback, detail).
    fn update_monitor(
        &self,
        monitor: &MonitorRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// One monitor.
    fn get_monitor(
        &self,
        monitor_id: &str,
    ) -> impl Future<Output = StoreResult<Option<MonitorRecord>>> + Send;
    /// Most recent first.
    fn list_monitors(
        &self,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<MonitorRecord>>> + Send;
    /// Monitors still running (to resume after a restart).
    fn running_monitors(&self) -> impl Future<Output = StoreResult<Vec<MonitorRecord>>> + Send;
    /// Stores a round (once: a second coordinator's copy of the same round is skipped).
    fn insert_round(&self, round: &RoundRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// A monitor's rounds that ended after `since_ms`, oldest first.
    fn rounds_since(
        &self,
        monitor_id: &str,
        since_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<RoundRecord>>> + Send;
    /// A monitor's last `limit` rounds, newest first.
    fn last_rounds(
        &self,
        monitor_id: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<RoundRecord>>> + Send;
}

/// Either engine, chosen by URL at start-up.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// `sqlite://FILE`.
    Sqlite(SqliteStore),
    /// `postgres://…`.
    Postgres(PostgresStore),
}

impl AnyStore {
    /// Opens (and migrates) the database named by `url`.
    pub async fn open(url: &str) -> StoreResult<Self> {
        if url.starts_with("sqlite:") {
            Ok(AnyStore::Sqlite(SqliteStore::open(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(AnyStore::Postgres(PostgresStore::open(url).await?))
        } else {
            Err(StoreError::UnsupportedUrl(
                postflight_plan::secrets::redact_url(url),
            ))
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call.await,
            AnyStore::Postgres($store) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn upsert_probe(&self, probe: &ProbeRecord) -> StoreResult<()> {
        dispatch!(self, s => s.upsert_probe(probe))
    }
    async fn list_probes(&self, after: &str, limit: u32) -> StoreResult<Vec<ProbeRecord>> {
        dispatch!(self, s => s.list_probes(after, limit))
    }
    async fn forget_probes(&self, seen_before_ms: i64, keep: u32) -> StoreResult<u64> {
        dispatch!(self, s => s.forget_probes(seen_before_ms, keep))
    }
    async fn insert_run(&self, run: &RunRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_run(run))
    }
    async fn update_run(&self, run: &RunRecord) -> StoreResult<()> {
        dispatch!(self, s => s.update_run(run))
    }
    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        dispatch!(self, s => s.get_run(run_id))
    }
    async fn list_runs(&self, limit: u32, plan: Option<&str>) -> StoreResult<Vec<RunRecord>> {
        dispatch!(self, s => s.list_runs(limit, plan))
    }
    async fn unfinished_runs(&self) -> StoreResult<Vec<RunRecord>> {
        dispatch!(self, s => s.unfinished_runs())
    }
    async fn insert_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_assignment(assignment))
    }
    async fn update_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        dispatch!(self, s => s.update_assignment(assignment))
    }
    async fn assignments(&self, run_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
        dispatch!(self, s => s.assignments(run_id))
    }
    async fn insert_batches(&self, batches: &[BatchRecord]) -> StoreResult<()> {
        dispatch!(self, s => s.insert_batches(batches))
    }
    async fn batches(&self, run_id: &str) -> StoreResult<Vec<BatchRecord>> {
        dispatch!(self, s => s.batches(run_id))
    }
    async fn count_results(&self, run_id: &str) -> StoreResult<i64> {
        dispatch!(self, s => s.count_results(run_id))
    }
    async fn claim_rollback(
        &self,
        claim: &RollbackClaim,
        cooldown_ms: i64,
    ) -> StoreResult<ClaimOutcome> {
        dispatch!(self, s => s.claim_rollback(claim, cooldown_ms))
    }
    async fn finish_rollback(
        &self,
        subject: &str,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) -> StoreResult<()> {
        dispatch!(self, s => s.finish_rollback(subject, outcome, error))
    }
    async fn pending_rollbacks(
        &self,
        executed_by: &str,
        stale_before_ms: i64,
    ) -> StoreResult<Vec<RollbackClaim>> {
        dispatch!(self, s => s.pending_rollbacks(executed_by, stale_before_ms))
    }
    async fn release_rollback(&self, subject: &str) -> StoreResult<()> {
        dispatch!(self, s => s.release_rollback(subject))
    }
    async fn insert_monitor(&self, monitor: &MonitorRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_monitor(monitor))
    }
    async fn update_monitor(&self, monitor: &MonitorRecord) -> StoreResult<()> {
        dispatch!(self, s => s.update_monitor(monitor))
    }
    async fn get_monitor(&self, monitor_id: &str) -> StoreResult<Option<MonitorRecord>> {
        dispatch!(self, s => s.get_monitor(monitor_id))
    }
    async fn list_monitors(&self, limit: u32) -> StoreResult<Vec<MonitorRecord>> {
        dispatch!(self, s => s.list_monitors(limit))
    }
    async fn running_monitors(&self) -> StoreResult<Vec<MonitorRecord>> {
        dispatch!(self, s => s.running_monitors())
    }
    async fn insert_round(&self, round: &RoundRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_round(round))
    }
    async fn rounds_since(&self, monitor_id: &str, since_ms: i64) -> StoreResult<Vec<RoundRecord>> {
        dispatch!(self, s => s.rounds_since(monitor_id, since_ms))
    }
    async fn last_rounds(&self, monitor_id: &str, limit: u32) -> StoreResult<Vec<RoundRecord>> {
        dispatch!(self, s => s.last_rounds(monitor_id, limit))
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
pub(crate) trait RowExt {
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

macro_rules! row_ext {
    ($row:ty) => {
        impl $crate::storage::RowExt for $row {
            fn text(&self, c: &str) -> StoreResult<String> {
                Ok(sqlx::Row::try_get(self, c)?)
            }
            fn opt_text(&self, c: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::Row::try_get(self, c)?)
            }
            fn int(&self, c: &str) -> StoreResult<i64> {
                Ok(sqlx::Row::try_get(self, c)?)
            }
            fn opt_int(&self, c: &str) -> StoreResult<Option<i64>> {
                Ok(sqlx::Row::try_get(self, c)?)
            }
            fn flag(&self, c: &str) -> StoreResult<bool> {
                Ok(sqlx::Row::try_get(self, c)?)
            }
            fn blob(&self, c: &str) -> StoreResult<Vec<u8>> {
                Ok(sqlx::Row::try_get(self, c)?)
            }
        }
    };
}
pub(crate) use row_ext;

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

/// The one implementation of [`Store`] for both engines: the statements are portable SQL
/// (`$n` placeholders, numbered in order of first use, which SQLite also accepts); only the
/// pool, the schema and the claim lock differ per engine.
macro_rules! store_impl {
    ($engine:ty) => {
        impl $crate::storage::Store for $engine {
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
                    .await?
                    .rows_affected();
                let surplus = sqlx::query(
                    "DELETE FROM probes WHERE name IN \
                     (SELECT name FROM probes ORDER BY last_seen_ms DESC, name LIMIT $1 OFFSET $2)",
                )
                .bind(i64::MAX)
                .bind(i64::from(keep))
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(old + surplus)
            }

            async fn insert_run(&self, r: &RunRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO runs (run_id, plan_name, plan_sealed, origin, status, dry_run, regions, timeout_ms, \
                     created_ms, started_ms, finished_ms, verdict, report, rollback, monitor_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
                let rows = sqlx::query("SELECT * FROM runs WHERE status IN ('pending', 'running') ORDER BY created_ms")
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
                let rows = sqlx::query("SELECT * FROM assignments WHERE run_id = $1 ORDER BY created_ms, assignment_id")
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

            async fn claim_rollback(&self, c: &RollbackClaim, cooldown_ms: i64) -> StoreResult<ClaimOutcome> {
                let mut tx = self.begin_claim(&c.plan_name).await?;
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

            async fn finish_rollback(&self, subject: &str, outcome: ActionOutcome, error: Option<&str>) -> StoreResult<()> {
                sqlx::query("UPDATE rollbacks SET outcome = $2, error = $3, finished_ms = $4 WHERE subject = $1")
                    .bind(subject)
                    .bind(outcome.as_str())
                    .bind(error)
                    .bind(postflight_ops::host::now_ms())
                    .execute(self.claims_pool())
                    .await?;
                Ok(())
            }

            async fn pending_rollbacks(&self, executed_by: &str, stale_before_ms: i64) -> StoreResult<Vec<RollbackClaim>> {
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
                sqlx::query("DELETE FROM rollbacks WHERE subject = $1 AND (outcome IS NULL OR outcome = 'pending')")
                    .bind(subject)
                    .execute(self.claims_pool())
                    .await?;
                Ok(())
            }

            async fn insert_monitor(&self, m: &MonitorRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO monitors (monitor_id, plan_name, plan_sealed, origin, status, dry_run, regions, \
                     started_ms, ends_ms, ended_ms, rounds, rollback, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn update_monitor(&self, m: &MonitorRecord) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE monitors SET status = $2, ended_ms = $3, rounds = $4, rollback = $5, detail = $6 \
                     WHERE monitor_id = $1",
                )
                .bind(&m.monitor_id)
                .bind(m.status.as_str())
                .bind(m.ended_ms)
                .bind(m.rounds)
                .bind(&m.rollback_json)
                .bind(&m.detail)
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
                let rows = sqlx::query("SELECT * FROM monitors ORDER BY started_ms DESC, monitor_id DESC LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(monitor_of).collect()
            }

            async fn running_monitors(&self) -> StoreResult<Vec<MonitorRecord>> {
                let rows = sqlx::query("SELECT * FROM monitors WHERE status = 'running' ORDER BY started_ms")
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
                let rows = sqlx::query("SELECT * FROM monitor_rounds WHERE monitor_id = $1 AND at_ms > $2 ORDER BY round")
                    .bind(monitor_id)
                    .bind(since_ms)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(round_of).collect()
            }

            async fn last_rounds(&self, monitor_id: &str, limit: u32) -> StoreResult<Vec<RoundRecord>> {
                let rows = sqlx::query("SELECT * FROM monitor_rounds WHERE monitor_id = $1 ORDER BY round DESC LIMIT $2")
                    .bind(monitor_id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(round_of).collect()
            }
        }
    };
}
pub(crate) use store_impl;

#[cfg(test)]
mod tests;
