//! The run report: the JSON document of DESIGN.md ("Report"), and how it is built from check
//! outcomes. Field names are a contract; fields may be added, never renamed or dropped.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{Plan, Severity};
use crate::outcome::{CheckOutcome, Sample};
use crate::rollback::{RollbackReport, recommend};
use crate::secrets::Secrets;
use crate::stats::nearest_rank;
use crate::vars::Lookup;
use crate::verdict::{CheckStatus, Overall, RegionOutcome, judge, merge_regions};

#[cfg(test)]
mod tests;

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

/// Requests and failed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestCount {
    /// Requests made.
    pub count: u64,
    /// Requests that errored or broke their check's expectations.
    pub errors: u64,
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
    pub outcomes: &'a [BTreeMap<String, CheckOutcome>],
    /// Resolves the rollback action's defaults for its description.
    pub env: &'a dyn Lookup,
}

/// Builds the report: merges regions, applies the verdict rules and the rollback triggers, and
/// masks every secret of the plan in every message.
pub fn build_report(results: &RunResults<'_>) -> Report {
    let plan = results.plan;
    let secrets = Secrets::of_plan(plan);
    let mut reported: Vec<String> = Vec::new();
    let mut all_samples: Vec<Sample> = Vec::new();
    let mut checks = Vec::with_capacity(plan.checks.len());
    for (index, check) in plan.checks.iter().enumerate() {
        let empty = BTreeMap::new();
        let per_region = results.outcomes.get(index).unwrap_or(&empty);
        let region_outcomes: BTreeMap<String, RegionOutcome> = per_region
            .iter()
            .map(|(region, o)| {
                (
                    region.clone(),
                    RegionOutcome {
                        status: o.status,
                        message: secrets.scrub(&o.message),
                    },
                )
            })
            .collect();
        let merged = merge_regions(
            results.required_regions,
            &region_outcomes,
            plan.policy.quorum,
        );
        let mut samples: Vec<Sample> = Vec::new();
        let mut duration = Duration::ZERO;
        let mut regions = BTreeMap::new();
        for (region, outcome) in per_region {
            if !reported.contains(region) {
                reported.push(region.clone());
            }
            samples.extend_from_slice(&outcome.samples);
            duration = duration.max(outcome.duration);
            regions.insert(
                region.clone(),
                RegionReport {
                    status: outcome.status,
                    message: secrets.scrub(&outcome.message),
                    latency_ms: LatencySummary::of(outcome.samples.iter().map(|s| s.latency)),
                },
            );
        }
        all_samples.extend_from_slice(&samples);
        checks.push(CheckReport {
            name: check.name.clone(),
            severity: check.severity,
            status: merged.status,
            message: merged.message,
            latency_ms: LatencySummary::of(samples.iter().map(|s| s.latency)),
            regions,
            kind: check.kind.as_str().to_owned(),
            requests: count_requests(&samples),
            duration_ms: round3(duration.as_secs_f64() * 1e3),
        });
    }
    reported.sort();
    let (counts, overall) = judge(
        checks.iter().map(|c| (c.severity, c.status)),
        plan.policy.max_warnings,
    );
    let total = count_requests(&all_samples);
    let requests = RequestStats {
        count: total.count,
        errors: total.errors,
        error_rate: if total.count == 0 {
            0.0
        } else {
            round4(total.errors as f64 / total.count as f64)
        },
        latency_ms: LatencySummary::of(all_samples.iter().map(|s| s.latency)),
    };
    let rollback = recommend(
        plan,
        overall,
        &checks,
        &requests,
        results.required_regions,
        results.env,
    );
    Report {
        run_id: results.run_id.to_owned(),
        plan: plan.name.clone(),
        status: overall,
        summary: overall.summary().to_owned(),
        passed: counts.passed,
        failed: counts.failed,
        warnings: counts.warnings,
        inconclusive: counts.inconclusive,
        started_at: rfc3339(results.started_at),
        finished_at: rfc3339(results.finished_at),
        regions: reported,
        checks,
        requests,
        rollback,
    }
}

fn count_requests(samples: &[Sample]) -> RequestCount {
    RequestCount {
        count: samples.len() as u64,
        errors: samples.iter().filter(|s| !s.ok).count() as u64,
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
