//! Verdict rules: from per-region check results to check statuses, counts and the overall
//! status, exactly as the contract (README, "How a verdict is reached") states them.
//!
//! Pure functions only. A local run is the special case of one region named `local`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Quorum, Severity};

#[cfg(test)]
mod tests;

/// The region name of `--local` runs.
pub const LOCAL_REGION: &str = "local";

/// Status of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Everything expected was seen.
    Pass,
    /// Degraded but not failing (latency between thresholds, or failing in too few regions).
    Warn,
    /// Expected behaviour not seen, or the check could not run.
    Fail,
    /// Not enough data to decide; never counted as a pass.
    Inconclusive,
}

impl CheckStatus {
    /// The lower-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
            CheckStatus::Inconclusive => "inconclusive",
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Overall status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Overall {
    /// Nothing needs attention.
    Pass,
    /// More warnings than the policy tolerates: a human should look.
    Warn,
    /// A critical check failed: roll back.
    Fail,
    /// A critical check has no usable data.
    Inconclusive,
}

impl Overall {
    /// The upper-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Overall::Pass => "PASS",
            Overall::Warn => "WARN",
            Overall::Fail => "FAIL",
            Overall::Inconclusive => "INCONCLUSIVE",
        }
    }

    /// The report's summary line.
    pub fn summary(self) -> &'static str {
        match self {
            Overall::Pass => "PASS",
            Overall::Warn => "WARN — manual review needed",
            Overall::Fail => "FAIL — rollback recommended",
            Overall::Inconclusive => "INCONCLUSIVE — not enough data",
        }
    }

    /// Exit code of `run`, `report` and `check`: 0 PASS, 1 FAIL, 3 WARN, 4 INCONCLUSIVE.
    pub fn exit_code(self) -> u8 {
        match self {
            Overall::Pass => 0,
            Overall::Fail => 1,
            Overall::Warn => 3,
            Overall::Inconclusive => 4,
        }
    }

    /// Parses the report name back.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "PASS" => Some(Overall::Pass),
            "WARN" => Some(Overall::Warn),
            "FAIL" => Some(Overall::Fail),
            "INCONCLUSIVE" => Some(Overall::Inconclusive),
            _ => None,
        }
    }
}

impl fmt::Display for Overall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one region reported for one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionOutcome {
    /// `Pass`, `Warn` or `Fail` (a region either ran the check or has no outcome).
    pub status: CheckStatus,
    /// The executor's explanation.
    pub message: String,
}

/// A check's status across regions, and the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The check's status.
    pub status: CheckStatus,
    /// Why.
    pub message: String,
    /// Regions whose result was `fail`.
    pub failing: Vec<String>,
    /// Required regions without a result.
    pub missing: Vec<String>,
}

/// Merges one check's results over the required `regions` under `quorum`.
///
/// A check fails when at least `quorum` regions failed it; fewer failures (or any warning) make
/// it `warn`, naming the failing regions. A missing region makes it `inconclusive` unless the
/// status would be the same whatever the missing regions report. Results of regions that are
/// not required are ignored here (they still appear in the report).
pub fn merge_regions(
    regions: &[String],
    results: &BTreeMap<String, RegionOutcome>,
    quorum: Quorum,
) -> Merged {
    let needed = quorum.needed(regions.len());
    let mut failing = Vec::new();
    let mut warning = Vec::new();
    let mut missing = Vec::new();
    for region in regions {
        match results.get(region).map(|r| r.status) {
            Some(CheckStatus::Fail) => failing.push(region.clone()),
            Some(CheckStatus::Warn) => warning.push(region.clone()),
            Some(CheckStatus::Pass) => {}
            Some(CheckStatus::Inconclusive) | None => missing.push(region.clone()),
        }
    }
    let status_for = |fails: usize, warns: usize| {
        if fails >= needed {
            CheckStatus::Fail
        } else if fails > 0 || warns > 0 {
            CheckStatus::Warn
        } else {
            CheckStatus::Pass
        }
    };
    let best = status_for(failing.len(), warning.len());
    let worst = status_for(failing.len() + missing.len(), warning.len());
    let status = if missing.is_empty() || best == worst {
        best
    } else {
        CheckStatus::Inconclusive
    };
    let message = explain(
        regions, results, needed, status, &failing, &warning, &missing,
    );
    Merged {
        status,
        message,
        failing,
        missing,
    }
}

fn explain(
    regions: &[String],
    results: &BTreeMap<String, RegionOutcome>,
    needed: usize,
    status: CheckStatus,
    failing: &[String],
    warning: &[String],
    missing: &[String],
) -> String {
    let first_message = |names: &[String]| {
        names
            .iter()
            .find_map(|n| results.get(n))
            .map(|r| r.message.clone())
            .unwrap_or_default()
    };
    // A missing region may come with the reason it could not report (its probe refused the
    // plan); the others simply did not report in time.
    let (explained, silent): (Vec<&String>, Vec<&String>) = missing
        .iter()
        .partition(|n| results.get(*n).is_some_and(|r| !r.message.is_empty()));
    let mut notes: Vec<String> = Vec::new();
    if !silent.is_empty() {
        let names: Vec<&str> = silent.iter().map(|n| n.as_str()).collect();
        notes.push(format!(
            "no result from {} (the run ended before {} reported)",
            names.join(", "),
            if names.len() == 1 { "it" } else { "they" }
        ));
    }
    for name in explained {
        if let Some(r) = results.get(name) {
            notes.push(format!("no result from {name}: {}", r.message));
        }
    }
    let missing_note = notes.join("; ");
    if regions.len() == 1 {
        return match results.get(&regions[0]) {
            Some(r) if status != CheckStatus::Inconclusive => r.message.clone(),
            _ => missing_note,
        };
    }
    let total = regions.len();
    let mut parts = Vec::new();
    match status {
        CheckStatus::Fail => parts.push(format!(
            "failed in {} of {total} regions ({}): {}",
            failing.len(),
            failing.join(", "),
            first_message(failing)
        )),
        CheckStatus::Warn if !failing.is_empty() => parts.push(format!(
            "failed in {} of {total} regions ({}), fewer than the {needed} needed to fail: {}",
            failing.len(),
            failing.join(", "),
            first_message(failing)
        )),
        CheckStatus::Warn => parts.push(format!(
            "warned in {} of {total} regions ({}): {}",
            warning.len(),
            warning.join(", "),
            first_message(warning)
        )),
        CheckStatus::Pass => parts.push(format!(
            "passed in {} of {total} regions: {}",
            total - missing.len(),
            first_message(regions)
        )),
        CheckStatus::Inconclusive => {
            if !failing.is_empty() {
                parts.push(format!(
                    "failed in {} ({} of {needed} needed to fail): {}",
                    failing.join(", "),
                    failing.len(),
                    first_message(failing)
                ));
            } else if !warning.is_empty() {
                parts.push(format!(
                    "warned in {}: {}",
                    warning.join(", "),
                    first_message(warning)
                ));
            }
        }
    }
    if !missing_note.is_empty() {
        parts.insert(
            usize::from(status != CheckStatus::Inconclusive),
            missing_note,
        );
    }
    parts.join("; ")
}

/// The four numbers of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Checks with status pass.
    pub passed: u32,
    /// Critical checks with status fail.
    pub failed: u32,
    /// Checks with status warn, plus warning-severity checks with status fail.
    pub warnings: u32,
    /// Checks with status inconclusive.
    pub inconclusive: u32,
}

/// Counts and overall status of a run from its checks' severities and statuses.
pub fn judge(
    checks: impl IntoIterator<Item = (Severity, CheckStatus)>,
    max_warnings: u32,
) -> (Counts, Overall) {
    let mut counts = Counts::default();
    let mut critical_inconclusive = false;
    for (severity, status) in checks {
        match (severity, status) {
            (_, CheckStatus::Pass) => counts.passed += 1,
            (Severity::Critical, CheckStatus::Fail) => counts.failed += 1,
            (Severity::Warning, CheckStatus::Fail) | (_, CheckStatus::Warn) => counts.warnings += 1,
            (severity, CheckStatus::Inconclusive) => {
                counts.inconclusive += 1;
                critical_inconclusive |= severity == Severity::Critical;
            }
        }
    }
    let overall = if counts.failed > 0 {
        Overall::Fail
    } else if critical_inconclusive {
        Overall::Inconclusive
    } else if counts.warnings > max_warnings {
        Overall::Warn
    } else {
        Overall::Pass
    };
    (counts, overall)
}
