//! What the coordinator stores, one type per table: probes, runs, assignments, result
//! batches, monitors and their rounds. The engines read and write them in `sql.rs`.

use std::collections::BTreeMap;

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
    /// The migration the run belongs to.
    pub migration: Option<String>,
    /// The baseline the run is compared with (an id: `latest` is resolved at submission).
    pub against: Option<String>,
    /// Keep what the run measured as a baseline if it passes.
    pub take_baseline: bool,
    /// The baseline the run took, once stored.
    pub baseline_id: Option<String>,
    /// Why the run took no baseline although it was asked to.
    pub baseline_refused: Option<String>,
    /// The stage the run is at.
    pub stage: Option<String>,
    /// The stage gate's refusal that `force` overrode.
    pub forced: Option<String>,
    /// The coordinator instance that drives the run while it is unfinished.
    pub owner: Option<String>,
    /// Until when (Unix ms) the owner's claim holds; another coordinator may adopt the run
    /// after it.
    pub lease_until_ms: Option<i64>,
}

/// What a coordinator's scan may adopt: ids of unfinished runs and running monitors whose
/// owner's lease expired (or that have none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adoptable {
    /// Runs, oldest first.
    pub runs: Vec<String>,
    /// Monitors, oldest first.
    pub monitors: Vec<String>,
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
    /// The coordinator that relays it to its probe, when the probe is connected to another
    /// coordinator than the run's owner (`None`: the owner serves the probe itself).
    pub relay: Option<String>,
}

/// The results of one probe message, stored as one row: a batch of probe results in
/// storage's own encoding ([`super::results`], secrets masked, run and assignment ids in
/// the row's columns). One row
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
    /// The results, encoded by [`super::results::encode`].
    pub data: Vec<u8>,
    /// Its position in the table, set by the database (0 in a batch not stored yet): a run's
    /// owner reads the batches a relay stored after the last one it read.
    pub seq: i64,
}

/// A probe connected to another live coordinator on the same database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteProbe {
    /// The probe's name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// The coordinator it is connected to, which relays its assignments.
    pub coordinator: String,
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
    /// The baseline every round is compared with.
    pub against: Option<String>,
    /// The migration the monitor belongs to.
    pub migration: Option<String>,
    /// The coordinator that runs the monitor's rounds.
    pub owner: Option<String>,
    /// Until when (Unix ms) the owner's claim holds.
    pub lease_until_ms: Option<i64>,
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

/// A baseline: what a passing run measured, to compare later runs of its plan with.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRecord {
    /// Unique id (UUID v7).
    pub baseline_id: String,
    /// The plan's name.
    pub plan_name: String,
    /// Its migration label.
    pub migration: Option<String>,
    /// When it was taken, Unix milliseconds.
    pub created_ms: i64,
    /// The run it was taken from.
    pub run_id: String,
    /// That run's verdict (PASS or WARN).
    pub status: String,
    /// Checks kept.
    pub checks: i64,
    /// Latencies kept.
    pub latencies: i64,
    /// The baseline as JSON (`postflight_plan::baseline::Baseline`).
    pub data: String,
}

/// A feedback report about a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackRecord {
    /// Unique id (UUID v7).
    pub feedback_id: String,
    /// The migration.
    pub migration: String,
    /// regression, bug or info.
    pub kind: String,
    /// What was seen.
    pub text: String,
    /// Who reported it (may be empty).
    pub source: String,
    /// When it arrived, Unix milliseconds.
    pub created_ms: i64,
}
