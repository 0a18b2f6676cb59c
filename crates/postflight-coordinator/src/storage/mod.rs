//! The coordinator's history: probes, runs (with their plans), assignments, results with
//! their latency sketches, and reports. One trait, two engines: SQLite (default, one file)
//! and PostgreSQL (production, shared by several coordinators).

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

/// One check result from one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRecord {
    /// Probe-made unique id: a replay is stored once.
    pub result_id: String,
    /// The run.
    pub run_id: String,
    /// The assignment it belongs to.
    pub assignment_id: String,
    /// Region of the probe.
    pub region: String,
    /// The probe.
    pub probe: String,
    /// Position of the check in the plan.
    pub check_index: i64,
    /// pass, warn or fail.
    pub status: String,
    /// The executor's explanation (secrets already masked).
    pub message: String,
    /// Wall time of the check.
    pub duration_ms: f64,
    /// HTTP requests.
    pub requests: i64,
    /// Failed HTTP requests.
    pub request_errors: i64,
    /// Exact latency figures as JSON.
    pub latency_json: Option<String>,
    /// DDSketch bytes.
    pub sketch: Vec<u8>,
    /// Unix milliseconds.
    pub received_ms: i64,
}

/// What the coordinator persists. Every method is one short transaction.
pub trait Store: Send + Sync + 'static {
    /// Creates or updates a probe.
    fn upsert_probe(&self, probe: &ProbeRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every probe ever seen, by name.
    fn list_probes(&self) -> impl Future<Output = StoreResult<Vec<ProbeRecord>>> + Send;
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
    /// Stores results in one transaction; returns, per result, whether it was new (a replay
    /// of a stored result id is skipped).
    fn insert_results(
        &self,
        results: &[ResultRecord],
    ) -> impl Future<Output = StoreResult<Vec<bool>>> + Send;
    /// A run's results in arrival order.
    fn results(&self, run_id: &str) -> impl Future<Output = StoreResult<Vec<ResultRecord>>> + Send;
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
    async fn list_probes(&self) -> StoreResult<Vec<ProbeRecord>> {
        dispatch!(self, s => s.list_probes())
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
    async fn insert_results(&self, results: &[ResultRecord]) -> StoreResult<Vec<bool>> {
        dispatch!(self, s => s.insert_results(results))
    }
    async fn results(&self, run_id: &str) -> StoreResult<Vec<ResultRecord>> {
        dispatch!(self, s => s.results(run_id))
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

fn parse_run_status(text: &str) -> StoreResult<RunStatus> {
    RunStatus::parse(text).ok_or_else(|| StoreError::Corrupt {
        field: "runs.status",
        reason: format!("unknown status `{text}`"),
    })
}

fn parse_assignment_status(text: &str) -> StoreResult<AssignmentStatus> {
    AssignmentStatus::parse(text).ok_or_else(|| StoreError::Corrupt {
        field: "assignments.status",
        reason: format!("unknown status `{text}`"),
    })
}

#[cfg(test)]
mod tests;
