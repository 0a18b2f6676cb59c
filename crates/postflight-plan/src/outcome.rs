//! What executing one check in one place produced: the input of the verdict and the report.

use std::time::Duration;

use crate::verdict::CheckStatus;

/// One HTTP request a check made: its latency and whether it met its check's expectations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Time from sending the request to the end of the answer (or to the error).
    pub latency: Duration,
    /// `false` when the request errored or its answer broke the check's expectations.
    pub ok: bool,
}

/// The result of one check execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// `Pass`, `Warn` or `Fail`.
    pub status: CheckStatus,
    /// What was expected and what was seen.
    pub message: String,
    /// The HTTP requests made, in order (empty for database checks).
    pub samples: Vec<Sample>,
    /// Requests the check would have made but never attempted because its deadline passed:
    /// missing data, not failures.
    pub missing: u64,
    /// Wall time of the whole check.
    pub duration: Duration,
    /// The shape of the JSON answer (`http` checks whose answer is JSON), for baselines'
    /// `answers: same_shape`.
    pub answer_shape: Option<crate::baseline::JsonShape>,
}

impl CheckOutcome {
    /// A failure with no requests, e.g. a database that could not be reached.
    pub fn fail(message: impl Into<String>, duration: Duration) -> Self {
        Self {
            status: CheckStatus::Fail,
            message: message.into(),
            samples: Vec::new(),
            missing: 0,
            duration,
            answer_shape: None,
        }
    }
}
