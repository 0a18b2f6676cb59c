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
