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

/// How many runs (`repeat`) or golden-set cases (`cases`) of a check passed: the count the
/// message gives, kept as numbers for the report and the tools that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Runs or cases that passed (a warning counts as passing).
    pub passed: u32,
    /// Runs or cases in all.
    pub total: u32,
}

impl Tally {
    /// Tallies of several probes of one region, or of several regions, added up.
    pub fn sum(tallies: impl IntoIterator<Item = Option<Tally>>) -> Option<Tally> {
        let mut sum: Option<Tally> = None;
        for tally in tallies.into_iter().flatten() {
            let s = sum.get_or_insert(Tally {
                passed: 0,
                total: 0,
            });
            s.passed = s.passed.saturating_add(tally.passed);
            s.total = s.total.saturating_add(tally.total);
        }
        sum
    }
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
    /// Runs or cases that passed, for repeated checks and golden sets.
    pub tally: Option<Tally>,
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
            tally: None,
        }
    }
}

impl CheckOutcome {
    /// One outcome for a check run `outcomes.len()` times: it passes when at least `needed`
    /// runs passed (or warned), warns when a warning was among them, and fails otherwise. Its
    /// message gives the pass count (pass^K when every run had to pass) and the first
    /// failure; samples, missing requests and durations add up.
    pub fn of_repeats(outcomes: Vec<CheckOutcome>, pass_when: crate::model::PassWhen) -> Self {
        let runs = outcomes.len() as u32;
        let needed = pass_when.needed(runs);
        let passed = outcomes
            .iter()
            .filter(|o| matches!(o.status, CheckStatus::Pass | CheckStatus::Warn))
            .count() as u32;
        let warned = outcomes.iter().any(|o| o.status == CheckStatus::Warn);
        let status = if passed >= needed {
            if warned {
                CheckStatus::Warn
            } else {
                CheckStatus::Pass
            }
        } else {
            CheckStatus::Fail
        };
        let rule = match pass_when {
            crate::model::PassWhen::All => format!("pass^{runs}"),
            other => format!("pass_when {}: {needed} needed", other.describe()),
        };
        let first_failure = outcomes
            .iter()
            .position(|o| !matches!(o.status, CheckStatus::Pass | CheckStatus::Warn));
        let mut message = format!("passed {passed} of {runs} runs ({rule})");
        match first_failure {
            Some(i) => message.push_str(&format!(
                "; run {} of {runs}: {}",
                i + 1,
                outcomes[i].message
            )),
            None => {
                if let Some(first) = outcomes.first() {
                    message.push_str(&format!("; {}", first.message));
                }
            }
        }
        Self {
            status,
            message,
            samples: outcomes.iter().flat_map(|o| o.samples.clone()).collect(),
            missing: outcomes.iter().map(|o| o.missing).sum(),
            duration: outcomes.iter().map(|o| o.duration).sum(),
            answer_shape: outcomes.iter().find_map(|o| o.answer_shape.clone()),
            tally: Some(Tally {
                passed,
                total: runs,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PassWhen;

    fn run(status: CheckStatus, message: &str) -> CheckOutcome {
        CheckOutcome {
            status,
            message: message.into(),
            samples: vec![Sample {
                latency: Duration::from_millis(10),
                ok: status == CheckStatus::Pass,
            }],
            missing: 0,
            duration: Duration::from_millis(10),
            answer_shape: None,
            tally: None,
        }
    }

    #[test]
    fn repeats_pass_by_their_rule_and_say_how_many_passed() {
        let one_in_three = || {
            vec![
                run(CheckStatus::Fail, "status 500"),
                run(CheckStatus::Pass, "status 200"),
                run(CheckStatus::Pass, "status 200"),
            ]
        };
        let all = CheckOutcome::of_repeats(one_in_three(), PassWhen::All);
        assert_eq!(all.status, CheckStatus::Fail);
        assert_eq!(
            all.message,
            "passed 2 of 3 runs (pass^3); run 1 of 3: status 500"
        );
        assert_eq!(all.samples.len(), 3);
        assert_eq!(
            all.tally,
            Some(Tally {
                passed: 2,
                total: 3
            })
        );
        assert_eq!(all.duration, Duration::from_millis(30));
        let majority = CheckOutcome::of_repeats(one_in_three(), PassWhen::Majority);
        assert_eq!(majority.status, CheckStatus::Pass);
        assert_eq!(
            majority.message,
            "passed 2 of 3 runs (pass_when majority: 2 needed); run 1 of 3: status 500"
        );
        let three = CheckOutcome::of_repeats(one_in_three(), PassWhen::AtLeast(3));
        assert_eq!(three.status, CheckStatus::Fail);
        let warned = CheckOutcome::of_repeats(
            vec![run(CheckStatus::Warn, "slow"), run(CheckStatus::Pass, "ok")],
            PassWhen::All,
        );
        assert_eq!(warned.status, CheckStatus::Warn);
        assert_eq!(warned.message, "passed 2 of 2 runs (pass^2); slow");
    }
}
