//! The triggers: a FAIL verdict, the request error rate and the request p99, each evaluated
//! as the README's "When a verdict may act" states them.
//!
//! The verdict already weighs regions (a check fails when `policy.quorum` regions failed it).
//! The rate and p99 triggers are evaluated per required region and fire only when at least
//! `policy.quorum` regions exceed them, so one sick region — or one probe that cannot reach the
//! service — never rolls back alone under `quorum: majority`. A region's error rate exceeds its
//! threshold only when its Wilson lower bound at `rollback.confidence` does: a few failures
//! among a few requests are not evidence. Merged figures are still computed and quoted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{percent, window_scope};
use crate::duration::{PlanDuration, human_duration};
use crate::model::{Plan, Severity};
use crate::report::{CheckReport, RegionResult, RequestCount};
use crate::sketch::LatencySketch;
use crate::stats::wilson_lower_bound;
use crate::verdict::{CheckStatus, Overall};

/// One region's requests over a run or a monitor's window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegionFigures {
    /// Requests made, failed and never attempted.
    pub requests: RequestCount,
    /// Latency of the requests made.
    #[serde(with = "crate::sketch::hex")]
    pub sketch: LatencySketch,
}

impl RegionFigures {
    /// Adds `other`'s requests and latencies.
    pub fn add(&mut self, other: &RegionFigures) {
        self.requests.add(other.requests);
        self.sketch.merge(&other.sketch);
    }

    /// Per region: every request of a run's results (per check, per region).
    pub fn of_results(results: &[BTreeMap<String, RegionResult>]) -> BTreeMap<String, Self> {
        Self::by_region(
            results
                .iter()
                .flatten()
                .map(|(region, r)| (region.as_str(), r.requests, &r.sketch)),
        )
    }

    /// Requests and latencies added up per region.
    pub fn by_region<'a>(
        items: impl IntoIterator<Item = (&'a str, RequestCount, &'a LatencySketch)>,
    ) -> BTreeMap<String, Self> {
        let mut regions: BTreeMap<String, Self> = BTreeMap::new();
        for (region, requests, sketch) in items {
            let figures = regions.entry(region.to_owned()).or_default();
            figures.requests.add(requests);
            figures.sketch.merge(sketch);
        }
        regions
    }

    /// Every region's figures together.
    pub fn total<'a>(figures: impl IntoIterator<Item = &'a RegionFigures>) -> Self {
        let mut all = Self::default();
        for f in figures {
            all.add(f);
        }
        all
    }

    /// Failed / made requests, 0 without requests.
    pub fn error_ratio(&self) -> f64 {
        self.requests.error_rate()
    }
}

/// What the triggers look at: the latest verdict, and the requests of the run (or, while
/// monitoring, of the sliding window) per region.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// Verdict of the latest run.
    pub overall: Overall,
    /// Checks of the latest run (to name what failed).
    pub checks: &'a [CheckReport],
    /// Regions that had to report: the rate and p99 triggers count these.
    pub required: &'a [String],
    /// Requests per region (regions that are not required still count in merged figures).
    pub regions: &'a BTreeMap<String, RegionFigures>,
    /// Failed and total requests per check, to name where errors came from.
    pub per_check: &'a [(String, RequestCount)],
    /// `None` for one run, else the window's span and rounds.
    pub window: Option<(Duration, usize)>,
}

/// Figures merged over every region.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Merged {
    /// Requests made, failed and never attempted.
    pub requests: RequestCount,
    /// Request p99 in milliseconds; `None` without requests.
    pub p99_ms: Option<f64>,
}

impl Merged {
    /// Failed / made requests, 0 without requests.
    pub fn error_rate(&self) -> f64 {
        self.requests.error_rate()
    }
}

impl Evidence<'_> {
    /// Every region's requests together.
    pub fn merged(&self) -> Merged {
        let all = RegionFigures::total(self.regions.values());
        Merged {
            requests: all.requests,
            p99_ms: all.sketch.percentile(99.0),
        }
    }

    fn scope(&self) -> String {
        let regions = format!("regions: {}", self.required.join(", "));
        match window_scope(self.window) {
            Some(window) => format!("{window}, {regions}"),
            None => regions,
        }
    }

    fn sources(&self) -> String {
        let sources: Vec<String> = self
            .per_check
            .iter()
            .filter(|(_, c)| c.errors > 0)
            .map(|(name, c)| format!("{name} {}/{}", c.errors, c.count))
            .collect();
        sources.join(", ")
    }
}

/// The outcome of the triggers: the reasons to roll back (empty when none fires) and, for the
/// triggers that came close, why they did not fire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    /// One sentence per trigger that fires, naming the measured value and the threshold.
    pub reasons: Vec<String>,
    /// One sentence per region or trigger that exceeded a threshold without firing.
    pub held_back: Vec<String>,
}

/// Evaluates every trigger. Without a `rollback:` section only the verdict counts (a FAIL
/// recommends rollback, as its summary says).
pub fn evaluate(plan: &Plan, evidence: &Evidence<'_>) -> Evaluation {
    evaluate_at(plan, evidence, plan.confidence())
}

/// [`evaluate`] with another confidence for the rate trigger (0: the raw ratio).
pub fn evaluate_at(plan: &Plan, evidence: &Evidence<'_>, confidence: f64) -> Evaluation {
    let mut out = Evaluation::default();
    let config = plan.rollback.as_ref();
    if config.is_none_or(|r| r.on_fail) && evidence.overall == Overall::Fail {
        out.reasons
            .push(fail_reason(evidence.checks, evidence.required));
    }
    let Some(config) = config else {
        return out;
    };
    let gate = Gate {
        needed: plan.policy.quorum.needed(evidence.required.len()),
        required: evidence.required.len(),
    };
    if let Some(threshold) = config.error_rate_above {
        error_rate(evidence, threshold, confidence, gate, &mut out);
    }
    if let Some(threshold) = config.p99_latency_above {
        p99(evidence, threshold, gate, &mut out);
    }
    out
}

/// How many of how many required regions must exceed a threshold.
#[derive(Debug, Clone, Copy)]
struct Gate {
    needed: usize,
    required: usize,
}

impl Gate {
    fn passes(self, exceeding: usize) -> bool {
        exceeding > 0 && exceeding >= self.needed
    }

    /// Why `names` (fewer regions than needed) do not act.
    fn short(self, names: &[&str], what: &str) -> String {
        let who = match names {
            [one] => format!("{one} alone"),
            _ => and_list(names),
        };
        format!(
            "{who} {what}: {} of {} regions, the quorum needs {}",
            names.len(),
            self.required,
            self.needed
        )
    }
}

fn and_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn error_rate(
    evidence: &Evidence<'_>,
    threshold: f64,
    confidence: f64,
    gate: Gate,
    out: &mut Evaluation,
) {
    let bound_label = format!("{:.0}% lower bound", confidence * 100.0);
    // (region, "7 of 7 failed", "95% lower bound 64.6%" or nothing when confidence is 0)
    let mut exceeding: Vec<(&str, String, Option<String>)> = Vec::new();
    let mut weak: Vec<String> = Vec::new();
    for region in evidence.required {
        let Some(figures) = evidence.regions.get(region) else {
            continue;
        };
        let RequestCount { count, errors, .. } = figures.requests;
        if count == 0 {
            continue;
        }
        let ratio = figures.error_ratio();
        let bound = wilson_lower_bound(errors, count, confidence);
        if bound > threshold {
            exceeding.push((
                region.as_str(),
                format!("{errors} of {count}"),
                (confidence > 0.0).then(|| format!("{bound_label} {}", percent(bound))),
            ));
        } else if ratio > threshold {
            weak.push(format!(
                "error rate in {region}: {errors} of {count} failed ({}), but the {bound_label} {} is not above {}",
                percent(ratio),
                percent(bound),
                percent(threshold)
            ));
        }
    }
    let each = |list: &[(&str, String, Option<String>)]| -> String {
        list.iter()
            .map(|(region, counted, bound)| match bound {
                Some(bound) => format!("{region} {counted} failed ({bound})"),
                None => format!("{region} {counted} failed"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let merged = evidence.merged();
    if gate.passes(exceeding.len()) {
        let sources = evidence.sources();
        let sources = if sources.is_empty() {
            String::new()
        } else {
            format!("; {sources}")
        };
        let reason = if gate.required <= 1 {
            let (region, counted, bound) = &exceeding[0];
            let bound = bound.as_ref().map_or(String::new(), |b| format!(", {b}"));
            let own = evidence
                .regions
                .get(*region)
                .map_or(0.0, RegionFigures::error_ratio);
            format!(
                "request error rate {} is above {} ({counted} requests failed{bound}{sources}; {})",
                percent(own),
                percent(threshold),
                evidence.scope()
            )
        } else {
            format!(
                "request error rate above {} in {} of {} regions (the quorum needs {}): {}; all regions {} of {} failed ({}){sources}; {}",
                percent(threshold),
                exceeding.len(),
                gate.required,
                gate.needed,
                each(&exceeding),
                merged.requests.errors,
                merged.requests.count,
                percent(merged.error_rate()),
                evidence.scope()
            )
        };
        out.reasons.push(reason);
        return;
    }
    if !exceeding.is_empty() {
        let names: Vec<&str> = exceeding.iter().map(|(r, _, _)| *r).collect();
        out.held_back.push(format!(
            "error rate: {} ({})",
            gate.short(
                &names,
                &format!(
                    "{} {}",
                    if names.len() == 1 {
                        "exceeds"
                    } else {
                        "exceed"
                    },
                    percent(threshold)
                )
            ),
            each(&exceeding)
        ));
    }
    out.held_back.extend(weak);
}

fn p99(evidence: &Evidence<'_>, threshold: Duration, gate: Gate, out: &mut Evaluation) {
    let limit_ms = threshold.as_secs_f64() * 1e3;
    // `from_secs_f64` panics on NaN or huge values.
    let shown = |ms: f64| {
        human_duration(Duration::from_secs_f64(
            crate::sketch::latency_in_range(ms) / 1e3,
        ))
    };
    let mut exceeding: Vec<(&str, f64)> = Vec::new();
    for region in evidence.required {
        if let Some(p99) = evidence
            .regions
            .get(region)
            .and_then(|f| f.sketch.percentile(99.0))
            && p99 > limit_ms
        {
            exceeding.push((region.as_str(), p99));
        }
    }
    let merged = evidence.merged();
    if gate.passes(exceeding.len()) {
        let reason = if gate.required <= 1 {
            let (region, p99) = exceeding[0];
            let requests = evidence.regions.get(region).map_or(0, |f| f.requests.count);
            format!(
                "request p99 {} is above {} (over {requests} requests, {})",
                shown(p99),
                PlanDuration(threshold),
                evidence.scope()
            )
        } else {
            let each: Vec<String> = exceeding
                .iter()
                .map(|(region, p99)| format!("{region} {}", shown(*p99)))
                .collect();
            format!(
                "request p99 above {} in {} of {} regions (the quorum needs {}): {}; all regions {} over {} requests; {}",
                PlanDuration(threshold),
                exceeding.len(),
                gate.required,
                gate.needed,
                each.join(", "),
                merged.p99_ms.map_or_else(|| "—".to_owned(), shown),
                merged.requests.count,
                evidence.scope()
            )
        };
        out.reasons.push(reason);
    } else if !exceeding.is_empty() {
        let names: Vec<&str> = exceeding.iter().map(|(r, _)| *r).collect();
        let details: Vec<String> = exceeding
            .iter()
            .map(|(region, p99)| format!("{region} {}", shown(*p99)))
            .collect();
        out.held_back.push(format!(
            "p99: {} ({})",
            gate.short(
                &names,
                &format!(
                    "{} above {}",
                    if names.len() == 1 { "is" } else { "are" },
                    PlanDuration(threshold)
                )
            ),
            details.join(", ")
        ));
    }
}

fn fail_reason(checks: &[CheckReport], regions: &[String]) -> String {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail && c.severity == Severity::Critical)
        .map(|c| {
            let failing = c
                .regions
                .iter()
                .filter(|(region, r)| r.status == CheckStatus::Fail && regions.contains(region))
                .count();
            if regions.len() > 1 {
                format!(
                    "{} failed in {failing} of {} regions",
                    c.name,
                    regions.len()
                )
            } else {
                format!("{} failed", c.name)
            }
        })
        .collect();
    format!("verdict FAIL: {}", failed.join(", "))
}
