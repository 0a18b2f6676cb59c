//! The run report: the JSON document of the contract (README, "The report"), and how it is built from check
//! outcomes. Field names are a contract; fields may be added, never renamed or dropped.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{Plan, Severity};
use crate::outcome::CheckOutcome;
use crate::rollback::{Evidence, RegionFigures, RollbackReport, RunEnd, decide_run};
use crate::secrets::Secrets;
use crate::sketch::LatencySketch;
use crate::stats::nearest_rank;
use crate::vars::Lookup;
use crate::verdict::{CheckStatus, Overall, RegionOutcome, judge, merge_regions};

mod probe_result;
#[cfg(test)]
mod tests;

pub use probe_result::{
    MAX_CHECK_MESSAGE_BYTES, MAX_DURATION_MS, MAX_RESULT_ID_BYTES, ProbeResult, ResultProblem,
};

/// A run's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unique id of the run.
    pub run_id: String,
    /// The plan's name.
    pub plan: String,
    /// Overall status.
    pub status: Overall,
    /// The status's summary line.
    pub summary: String,
    /// Checks with status pass.
    pub passed: u32,
    /// Critical checks with status fail.
    pub failed: u32,
    /// Checks with status warn plus warning-severity checks with status fail.
    pub warnings: u32,
    /// Checks with status inconclusive.
    pub inconclusive: u32,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Regions that reported, sorted.
    pub regions: Vec<String>,
    /// In plan order.
    pub checks: Vec<CheckReport>,
    /// Every HTTP request of the run.
    pub requests: RequestStats,
    /// The rollback decision.
    pub rollback: RollbackReport,
    /// The comparison with a baseline (`--against`), when one was asked for (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::baseline::BaselineReport>,
    /// The migration the run belongs to (`--migration`, addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
    /// The stage it ran at (`--stage`, addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The stage gate's refusal that `--force` overrode (addition): a run that skipped an
    /// earlier stage says so in its report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<String>,
    /// Feedback about the run's migration when it ended, newest first (addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback: Vec<crate::feedback::FeedbackItem>,
}

/// One check in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// `critical` or `warning`.
    pub severity: Severity,
    /// Status across regions.
    pub status: CheckStatus,
    /// What was expected and what was seen.
    pub message: String,
    /// Latency of the check's requests; `null` when it made none.
    pub latency_ms: Option<LatencySummary>,
    /// Per region.
    pub regions: BTreeMap<String, RegionReport>,
    /// `http`, `latency` or `database` (addition to the contract).
    #[serde(default)]
    pub kind: String,
    /// The check's own requests (addition to the contract).
    #[serde(default)]
    pub requests: RequestCount,
    /// Longest wall time of the check in any region, in milliseconds (addition).
    #[serde(default)]
    pub duration_ms: f64,
    /// Runs (`repeat`) or golden-set cases (`cases`) that passed, of how many, added over
    /// the regions (addition; absent for other checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<crate::outcome::Tally>,
}

/// One region's result for one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionReport {
    /// The region's status for the check.
    pub status: CheckStatus,
    /// The region's explanation.
    pub message: String,
    /// The region's latency for the check.
    pub latency_ms: Option<LatencySummary>,
    /// Runs or golden-set cases that passed in the region, of how many (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<crate::outcome::Tally>,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of requests.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl LatencySummary {
    /// Exact nearest-rank figures of these latencies; `None` when there are none.
    pub fn of(latencies: impl IntoIterator<Item = Duration>) -> Option<Self> {
        let mut ms: Vec<f64> = latencies
            .into_iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        ms.sort_by(f64::total_cmp);
        Some(Self {
            count: ms.len() as u64,
            p50: round3(nearest_rank(&ms, 50.0)?),
            p95: round3(nearest_rank(&ms, 95.0)?),
            p99: round3(nearest_rank(&ms, 99.0)?),
            max: round3(*ms.last()?),
        })
    }
}

/// Requests made, failed, and never attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestCount {
    /// Requests made.
    pub count: u64,
    /// Requests that errored or broke their check's expectations.
    pub errors: u64,
    /// Requests never attempted because a deadline passed: missing data, neither made nor
    /// failed (addition).
    #[serde(default)]
    pub missing: u64,
}

impl RequestCount {
    /// Adds `other`'s counts (saturating: counts come from probes).
    pub fn add(&mut self, other: RequestCount) {
        self.count = self.count.saturating_add(other.count);
        self.errors = self.errors.saturating_add(other.errors);
        self.missing = self.missing.saturating_add(other.missing);
    }

    /// Failed requests over requests made (0 when none were made: no evidence of errors,
    /// which the verdict treats as missing data, never as health).
    pub fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors as f64 / self.count as f64
        }
    }
}

/// Every HTTP request of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    /// Requests made.
    pub count: u64,
    /// Requests that errored or broke their check's expectations.
    pub errors: u64,
    /// errors / count, 0 when there were no requests.
    pub error_rate: f64,
    /// Latency of all requests.
    pub latency_ms: Option<LatencySummary>,
    /// Requests never attempted because a deadline passed (addition).
    #[serde(default)]
    pub missing: u64,
}

/// One region's result for one check, as the report builder consumes it: what a local
/// executor produced, or what a probe sent.
#[derive(Debug, Clone)]
pub struct RegionResult {
    /// `Pass`, `Warn` or `Fail`.
    pub status: CheckStatus,
    /// The executor's explanation.
    pub message: String,
    /// Wall time of the check.
    pub duration: Duration,
    /// HTTP requests made and failed.
    pub requests: RequestCount,
    /// Exact latency figures of this region's requests.
    pub latency: Option<LatencySummary>,
    /// The same latencies, mergeable with other regions'.
    pub sketch: LatencySketch,
    /// The successful requests' latencies in milliseconds, sorted, at most
    /// [`crate::baseline::MAX_SAMPLES`]: kept only where a baseline is taken or compared with
    /// (the statistical tests need the values, not a sketch); empty otherwise.
    pub latencies_ms: Vec<f64>,
    /// The shape of the JSON answer, kept like `latencies_ms`.
    pub answer_shape: Option<crate::baseline::JsonShape>,
    /// Runs or cases that passed (repeated checks, golden sets).
    pub tally: Option<crate::outcome::Tally>,
}

impl RegionResult {
    /// The result of a local execution.
    pub fn from_outcome(outcome: &CheckOutcome) -> Self {
        let mut sketch = LatencySketch::new();
        for sample in &outcome.samples {
            sketch.add(sample.latency.as_secs_f64() * 1e3);
        }
        Self {
            status: outcome.status,
            message: outcome.message.clone(),
            duration: outcome.duration,
            requests: count_requests(outcome),
            latency: LatencySummary::of(outcome.samples.iter().map(|s| s.latency)),
            sketch,
            latencies_ms: crate::baseline::Measured::of(outcome).latencies_ms,
            answer_shape: outcome.answer_shape.clone(),
            tally: outcome.tally,
        }
    }

    /// Several probes of one region (`probes_per_region: all`) as one region result: the
    /// worst status with its message, every request, merged latencies.
    pub fn combine(results: &[RegionResult]) -> Option<RegionResult> {
        let worst = results.iter().max_by_key(|r| severity_rank(r.status))?;
        if results.len() == 1 {
            return Some(worst.clone());
        }
        let mut sketch = LatencySketch::new();
        let mut requests = RequestCount::default();
        let mut duration = Duration::ZERO;
        let mut latencies = Vec::new();
        for r in results {
            sketch.merge(&r.sketch);
            requests.add(r.requests);
            duration = duration.max(r.duration);
            latencies.extend_from_slice(&r.latencies_ms);
        }
        Some(RegionResult {
            status: worst.status,
            message: worst.message.clone(),
            duration,
            requests,
            latency: sketch.summary(),
            sketch,
            latencies_ms: crate::baseline::thin(latencies),
            answer_shape: results.iter().find_map(|r| r.answer_shape.clone()),
            tally: crate::outcome::Tally::sum(results.iter().map(|r| r.tally)),
        })
    }
}

fn severity_rank(status: CheckStatus) -> u8 {
    match status {
        CheckStatus::Pass => 0,
        CheckStatus::Warn => 1,
        CheckStatus::Inconclusive => 2,
        CheckStatus::Fail => 3,
    }
}

/// Everything needed to build a report.
pub struct RunResults<'a> {
    /// The plan that ran.
    pub plan: &'a Plan,
    /// The run's id.
    pub run_id: &'a str,
    /// When the run started.
    pub started_at: SystemTime,
    /// When it ended.
    pub finished_at: SystemTime,
    /// Regions that had to report.
    pub required_regions: &'a [String],
    /// Per check (plan order): what each region produced. A region absent from a map has no
    /// result for that check.
    pub results: &'a [BTreeMap<String, RegionResult>],
    /// Required regions known to be unable to report, with the reason (their probes refused
    /// the plan): the report says why instead of only that nothing came.
    pub unreported: &'a BTreeMap<String, String>,
    /// How the run ended: a run cut off by its deadline, or cancelled, never acts on its
    /// verdict (unless the plan says `on_inconclusive: true`).
    pub end: RunEnd,
    /// Resolves the rollback action's defaults for its description.
    pub env: &'a dyn Lookup,
}

/// Builds the report: merges regions (latencies through sketches), applies the verdict rules
/// and the rollback triggers, and masks every secret of the plan in every message.
pub fn build_report(run: &RunResults<'_>) -> Report {
    let plan = run.plan;
    let secrets = Secrets::of_plan(plan);
    let mut reported: std::collections::BTreeSet<&String> = std::collections::BTreeSet::new();
    let mut all_latency = LatencySketch::new();
    let mut total = RequestCount::default();
    let mut contributions = 0usize;
    let mut single_latency: Option<LatencySummary> = None;
    let mut checks = Vec::with_capacity(plan.checks.len());
    let empty = BTreeMap::new();
    for (index, check) in plan.checks.iter().enumerate() {
        let per_region = run.results.get(index).unwrap_or(&empty);
        let mut region_outcomes: BTreeMap<String, RegionOutcome> = per_region
            .iter()
            .map(|(region, r)| {
                let outcome = RegionOutcome {
                    status: r.status,
                    message: secrets.scrub(&r.message),
                };
                (region.clone(), outcome)
            })
            .collect();
        let mut regions = BTreeMap::new();
        for (region, why) in run.unreported {
            if per_region.contains_key(region) || !run.required_regions.contains(region) {
                continue;
            }
            let message = secrets.scrub(why);
            regions.insert(
                region.clone(),
                RegionReport {
                    status: CheckStatus::Inconclusive,
                    message: message.clone(),
                    latency_ms: None,
                    tally: None,
                },
            );
            region_outcomes.insert(
                region.clone(),
                RegionOutcome {
                    status: CheckStatus::Inconclusive,
                    message,
                },
            );
        }
        let merged = merge_regions(run.required_regions, &region_outcomes, plan.policy.quorum);
        let mut sketch = LatencySketch::new();
        let mut requests = RequestCount::default();
        let mut duration = Duration::ZERO;
        for (region, r) in per_region {
            reported.insert(region);
            sketch.merge(&r.sketch);
            requests.add(r.requests);
            duration = duration.max(r.duration);
            if r.sketch.count() > 0 {
                contributions += 1;
                single_latency = r.latency;
            }
            regions.insert(
                region.clone(),
                RegionReport {
                    status: r.status,
                    // Masked once, for the merge above.
                    message: region_outcomes
                        .remove(region)
                        .map_or_else(|| secrets.scrub(&r.message), |o| o.message),
                    latency_ms: r.latency,
                    tally: r.tally,
                },
            );
        }
        // One region's exact figures beat a sketch of them.
        let latency_ms = match per_region.values().filter(|r| r.sketch.count() > 0).count() {
            0 => None,
            1 => per_region
                .values()
                .find_map(|r| r.latency.filter(|_| r.sketch.count() > 0)),
            _ => sketch.summary(),
        };
        all_latency.merge(&sketch);
        total.add(requests);
        checks.push(CheckReport {
            name: check.name.clone(),
            severity: check.severity,
            status: merged.status,
            message: merged.message,
            latency_ms,
            regions,
            kind: check.kind.as_str().to_owned(),
            requests,
            duration_ms: round3(duration.as_secs_f64() * 1e3),
            tally: crate::outcome::Tally::sum(per_region.values().map(|r| r.tally)),
        });
    }
    let reported: Vec<String> = reported.into_iter().cloned().collect();
    let (counts, overall) = judge(
        checks.iter().map(|c| (c.severity, c.status)),
        plan.policy.max_warnings,
    );
    let requests = RequestStats {
        count: total.count,
        errors: total.errors,
        error_rate: round4(total.error_rate()),
        latency_ms: if contributions == 1 {
            single_latency
        } else {
            all_latency.summary()
        },
        missing: total.missing,
    };
    let regions = RegionFigures::of_results(run.results);
    let per_check: Vec<(String, RequestCount)> = checks
        .iter()
        .map(|c| (c.name.clone(), c.requests))
        .collect();
    let evidence = Evidence {
        overall,
        checks: &checks,
        required: run.required_regions,
        regions: &regions,
        per_check: &per_check,
        window: None,
    };
    let rollback = decide_run(plan, &evidence, run.end, run.env);
    Report {
        run_id: run.run_id.to_owned(),
        plan: plan.name.clone(),
        status: overall,
        summary: overall.summary().to_owned(),
        passed: counts.passed,
        failed: counts.failed,
        warnings: counts.warnings,
        inconclusive: counts.inconclusive,
        started_at: rfc3339(run.started_at),
        finished_at: rfc3339(run.finished_at),
        regions: reported,
        checks,
        requests,
        rollback,
        baseline: None,
        migration: None,
        stage: None,
        forced: None,
        feedback: Vec::new(),
    }
}

fn count_requests(outcome: &CheckOutcome) -> RequestCount {
    RequestCount {
        count: outcome.samples.len() as u64,
        errors: outcome.samples.iter().filter(|s| !s.ok).count() as u64,
        missing: outcome.missing,
    }
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}
