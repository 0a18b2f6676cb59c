//! What watchers of a run are told, in the engine's own terms: the gRPC layer turns these into
//! wire messages (`grpc/validation_service.rs`), so a change of the proto never reaches here.

use std::sync::Arc;

use postflight_ops::host::now_ms;
use postflight_plan::{CheckStatus, Report};

use crate::storage::RunStatus;

/// One event of a run.
#[derive(Debug, Clone)]
pub struct RunEvent {
    /// The run.
    pub run_id: String,
    /// When it happened (Unix milliseconds).
    pub at_ms: i64,
    /// What happened.
    pub kind: RunEventKind,
}

/// What happened to a run.
#[derive(Debug, Clone)]
pub enum RunEventKind {
    /// Its status changed (or, first in a backlog, what it is now).
    Status {
        /// The status.
        status: RunStatus,
        /// Why, when there is more to say.
        detail: String,
    },
    /// A region delivered a check's result.
    Result(ResultEvent),
    /// The run ended with this report: the last event.
    Report(Arc<Report>),
}

/// A check's result from one region.
#[derive(Debug, Clone)]
pub struct ResultEvent {
    /// Where it ran.
    pub region: String,
    /// Which probe ran it.
    pub probe: String,
    /// The check's index in the plan.
    pub check_index: u32,
    /// The check's name.
    pub check_name: String,
    /// Its status in that region.
    pub status: CheckStatus,
    /// The probe's explanation (secrets masked).
    pub message: String,
    /// How long the check took.
    pub duration_ms: f64,
}

impl RunEvent {
    /// An event of `run_id`, now.
    pub fn now(run_id: &str, kind: RunEventKind) -> Self {
        Self {
            run_id: run_id.to_owned(),
            at_ms: now_ms(),
            kind,
        }
    }

    /// A status event of `run_id`, now.
    pub fn status(run_id: &str, status: RunStatus, detail: impl Into<String>) -> Self {
        Self::now(
            run_id,
            RunEventKind::Status {
                status,
                detail: detail.into(),
            },
        )
    }

    /// Whether this is a run's last event.
    pub fn is_last(&self) -> bool {
        matches!(self.kind, RunEventKind::Report(_))
    }
}

/// One event of a monitor.
#[derive(Debug, Clone)]
pub struct MonitorEvent {
    /// The monitor.
    pub monitor_id: String,
    /// When it happened (Unix milliseconds).
    pub at_ms: i64,
    /// What happened.
    pub kind: MonitorEventKind,
}

/// What happened to a monitor.
#[derive(Debug, Clone)]
pub enum MonitorEventKind {
    /// A round was judged.
    Round(RoundEvent),
    /// The monitor ended: the last event.
    Ended {
        /// How.
        status: crate::storage::MonitorStatus,
        /// Why.
        detail: String,
        /// The rollback decision, when one was taken.
        rollback: Option<postflight_plan::rollback::RollbackReport>,
    },
}

/// A judged round and what the window says after it.
#[derive(Debug, Clone)]
pub struct RoundEvent {
    /// 1-based.
    pub round: u32,
    /// The round's run.
    pub run_id: String,
    /// The round's verdict.
    pub verdict: postflight_plan::Overall,
    /// Requests over the window.
    pub requests: postflight_plan::report::RequestCount,
    /// Error rate over the window.
    pub error_rate: f64,
    /// Request p99 over the window; `None` without requests.
    pub p99_ms: Option<f64>,
    /// Rounds in the window.
    pub window_rounds: u32,
    /// The current phase's interval.
    pub every: std::time::Duration,
    /// Why a rollback is called for, if it is.
    pub reasons: Vec<String>,
    /// Why it is held back, if it is.
    pub held_back: Vec<String>,
    /// Failing rounds in a row so far.
    pub failing_rounds_held: u32,
    /// Failing rounds in a row needed to act.
    pub failing_rounds: u32,
}

impl MonitorEvent {
    /// An event of `monitor_id`, now.
    pub fn now(monitor_id: &str, kind: MonitorEventKind) -> Self {
        Self {
            monitor_id: monitor_id.to_owned(),
            at_ms: now_ms(),
            kind,
        }
    }

    /// Whether this is a monitor's last event.
    pub fn is_last(&self) -> bool {
        matches!(self.kind, MonitorEventKind::Ended { .. })
    }
}
