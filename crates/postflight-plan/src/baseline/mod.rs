//! Comparing a run with a baseline taken before the change: "does it still behave at least as
//! well as before?", where fixed thresholds only ask "is it under 3 s?".
//!
//! A baseline keeps, per check and region, the latencies of successful requests (at most
//! [`MAX_SAMPLES`]) and the request and error counts. A later run is compared with it per check
//! and region:
//!
//! - latency: slower when p50 or p95 grew by more than `max_latency_increase` **and** the
//!   one-sided Mann-Whitney U test gives p below `significance`;
//! - errors: worse when the error rate grew by more than `max_error_rate_increase` **and** the
//!   one-sided Fisher exact test gives p below `significance`.
//!
//! Both conditions are needed: the size gate keeps a statistically certain 2% slowdown from
//! failing a check, the test keeps noise from doing so. Fewer than `min_samples` on either side
//! make that comparison inconclusive, which never fails a check. Only a run that passed (or
//! warned) may become a baseline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{AnswerComparison, BaselinePolicy, Plan};
use crate::outcome::CheckOutcome;
use crate::report::{RegionResult, Report};
use crate::stats::{fisher_greater, mann_whitney_greater, nearest_rank};
use crate::verdict::{CheckStatus, Overall};

mod shape;
#[cfg(test)]
mod tests;

pub use shape::{
    JsonShape, MAX_SHAPE_PATH_BYTES, MAX_SHAPE_PATHS, SHAPE_TYPES, shape_changes, shape_of,
};

/// Latencies kept per check and region: enough for the tests' power, bounded in size.
pub const MAX_SAMPLES: usize = 2000;

/// What one check measured in one region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Latencies of the successful requests in milliseconds, sorted; evenly thinned to at most
    /// [`MAX_SAMPLES`] (every value a real observation).
    pub latencies_ms: Vec<f64>,
    /// Requests made.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The shape of the JSON answer, for `answers: same_shape`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_shape: Option<JsonShape>,
}

impl Measured {
    /// What a check's outcome measured.
    pub fn of(outcome: &CheckOutcome) -> Self {
        let latencies = outcome
            .samples
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.latency.as_secs_f64() * 1e3)
            .collect();
        Self {
            latencies_ms: thin(latencies),
            requests: outcome.samples.len() as u64,
            errors: outcome.samples.iter().filter(|s| !s.ok).count() as u64,
            answer_shape: outcome.answer_shape.clone(),
        }
    }
}

/// Sorted, and at most [`MAX_SAMPLES`] values taken at even ranks (the shape of the
/// distribution is kept).
pub fn thin(mut values: Vec<f64>) -> Vec<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    if values.len() <= MAX_SAMPLES {
        return values;
    }
    let n = values.len();
    (0..MAX_SAMPLES)
        .map(|i| values[i * (n - 1) / (MAX_SAMPLES - 1)])
        .collect()
}

/// Per check name, per region: what a run measured.
pub type Measurements = BTreeMap<String, BTreeMap<String, Measured>>;

impl Measured {
    /// What a region's result measured (its latencies are kept only where a baseline is
    /// taken or compared with).
    pub fn of_region(result: &RegionResult) -> Self {
        Self {
            latencies_ms: result.latencies_ms.clone(),
            requests: result.requests.count,
            errors: result.requests.errors,
            answer_shape: result.answer_shape.clone(),
        }
    }
}

/// What a run of `plan` measured, from its per-check region results (plan order).
pub fn measurements(plan: &Plan, results: &[BTreeMap<String, RegionResult>]) -> Measurements {
    plan.checks
        .iter()
        .zip(results)
        .filter(|(_, regions)| !regions.is_empty())
        .map(|(check, regions)| {
            let measured = regions
                .iter()
                .map(|(region, r)| (region.clone(), Measured::of_region(r)))
                .collect();
            (check.name.clone(), measured)
        })
        .collect()
}

/// A run kept to compare later runs of the same plan with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Unique id (UUID v7: ids sort by creation).
    pub baseline_id: String,
    /// The plan's name.
    pub plan: String,
    /// The migration it was taken for, when labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
    /// When the run ended (RFC 3339).
    pub created_at: String,
    /// The run it was taken from.
    pub run_id: String,
    /// That run's verdict: PASS or WARN.
    pub status: Overall,
    /// What it measured.
    pub checks: Measurements,
}

/// Why a run cannot become a baseline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaselineRefused {
    /// Comparing with a failed or incomplete run would excuse the same failure later.
    #[error(
        "not stored as a baseline: the run was {0}; a baseline must be a run that passed (or only warned)"
    )]
    NotPassed(Overall),
    /// Nothing to compare: no check made requests.
    #[error("not stored as a baseline: no check of the plan made requests to compare")]
    NothingMeasured,
}

impl Baseline {
    /// Latencies kept, over every check and region.
    pub fn latencies(&self) -> usize {
        self.checks
            .values()
            .flat_map(BTreeMap::values)
            .map(|m| m.latencies_ms.len())
            .sum()
    }

    /// A baseline of the run that produced `report` and `measured`, or why it cannot be one.
    pub fn of_run(
        baseline_id: String,
        report: &Report,
        migration: Option<String>,
        measured: Measurements,
    ) -> Result<Self, BaselineRefused> {
        if !matches!(report.status, Overall::Pass | Overall::Warn) {
            return Err(BaselineRefused::NotPassed(report.status));
        }
        if measured
            .values()
            .flat_map(BTreeMap::values)
            .all(|m| m.requests == 0)
        {
            return Err(BaselineRefused::NothingMeasured);
        }
        Ok(Self {
            baseline_id,
            plan: report.plan.clone(),
            migration,
            created_at: report.finished_at.clone(),
            run_id: report.run_id.clone(),
            status: report.status,
            checks: measured,
        })
    }
}

/// How one comparison came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Worse than before: fails the check.
    Worse,
    /// No evidence of worse.
    Same,
    /// Too few samples on one side to tell: never fails the check.
    Inconclusive,
}

/// Latencies before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyComparison {
    /// Samples in the baseline.
    pub samples_before: usize,
    /// Samples now.
    pub samples_after: usize,
    /// p50 before, ms (`None` without samples).
    pub p50_before: Option<f64>,
    /// p50 now, ms.
    pub p50_after: Option<f64>,
    /// p95 before, ms.
    pub p95_before: Option<f64>,
    /// p95 now, ms.
    pub p95_after: Option<f64>,
    /// The larger relative growth of p50 and p95 (0.59 = +59%).
    pub increase: Option<f64>,
    /// `mann-whitney-u`.
    pub test: String,
    /// U of the later sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u: Option<f64>,
    /// One-sided p-value (later slower).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// U / (n_after × n_before): the chance a later latency exceeds an earlier one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    /// The outcome.
    pub decision: Decision,
}

/// Error counts before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorComparison {
    /// Requests in the baseline.
    pub requests_before: u64,
    /// Of which failed.
    pub errors_before: u64,
    /// Requests now.
    pub requests_after: u64,
    /// Of which failed.
    pub errors_after: u64,
    /// Error rate now minus before (0.05 = 5 points).
    pub increase: f64,
    /// `fisher-exact`.
    pub test: String,
    /// One-sided p-value (more errors now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The outcome.
    pub decision: Decision,
}

/// JSON answers before and after (`answers: same_shape`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswersComparison {
    /// Worse when the answer lost a path or changed a type; inconclusive without an answer
    /// on one side.
    pub decision: Decision,
    /// What changed, in words (`$.total was number, now string`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

/// One check in one region, compared with the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The check.
    pub check: String,
    /// The region.
    pub region: String,
    /// Latencies, when the check makes requests.
    pub latency: LatencyComparison,
    /// Error counts.
    pub errors: ErrorComparison,
    /// JSON answers, with `answers: same_shape`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<AnswersComparison>,
    /// Worse when any comparison is; inconclusive when none could tell.
    pub decision: Decision,
    /// The decision in words: "p95 412 ms → 655 ms (+59%), Mann-Whitney p = 0.0003: slower".
    pub reason: String,
}

/// The report's `baseline` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineReport {
    /// The baseline compared with.
    pub baseline_id: String,
    /// When it was taken.
    pub created_at: String,
    /// Its migration label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
    /// The rules applied.
    pub max_latency_increase: f64,
    /// The rules applied.
    pub max_error_rate_increase: f64,
    /// The rules applied.
    pub significance: f64,
    /// The rules applied.
    pub min_samples: u32,
    /// Per check and region, in plan order.
    pub comparisons: Vec<Comparison>,
}

/// Why a baseline cannot be compared with a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotComparable {
    /// A baseline of another plan.
    #[error("baseline {id} is of plan {baseline}, not {plan}")]
    OtherPlan {
        /// The baseline.
        id: String,
        /// Its plan.
        baseline: String,
        /// This run's plan.
        plan: String,
    },
}

/// Compares what a run of `plan` measured with `baseline`, per check and region, in plan
/// order. Checks or regions the baseline does not have are not compared.
pub fn compare(
    plan: &Plan,
    baseline: &Baseline,
    now: &Measurements,
) -> Result<BaselineReport, NotComparable> {
    if baseline.plan != plan.name {
        return Err(NotComparable::OtherPlan {
            id: baseline.baseline_id.clone(),
            baseline: baseline.plan.clone(),
            plan: plan.name.clone(),
        });
    }
    let policy = plan.baseline.unwrap_or_default();
    let mut comparisons = Vec::new();
    for check in &plan.checks {
        let (Some(before), Some(after)) = (baseline.checks.get(&check.name), now.get(&check.name))
        else {
            continue;
        };
        for (region, after) in after {
            let Some(before) = before.get(region) else {
                continue;
            };
            if before.requests == 0 && after.requests == 0 {
                continue;
            }
            comparisons.push(compare_one(&policy, &check.name, region, before, after));
        }
    }
    Ok(BaselineReport {
        baseline_id: baseline.baseline_id.clone(),
        created_at: baseline.created_at.clone(),
        migration: baseline.migration.clone(),
        max_latency_increase: policy.max_latency_increase,
        max_error_rate_increase: policy.max_error_rate_increase,
        significance: policy.significance,
        min_samples: policy.min_samples,
        comparisons,
    })
}

fn compare_one(
    policy: &BaselinePolicy,
    check: &str,
    region: &str,
    before: &Measured,
    after: &Measured,
) -> Comparison {
    let latency = compare_latency(policy, before, after);
    let errors = compare_errors(policy, before, after);
    let answers = (policy.answers == AnswerComparison::SameShape)
        .then(|| compare_answers(before, after))
        .flatten();
    let answers_decision = answers.as_ref().map(|a| a.decision);
    let decision = match (latency.decision, errors.decision, answers_decision) {
        (Decision::Worse, _, _) | (_, Decision::Worse, _) | (_, _, Some(Decision::Worse)) => {
            Decision::Worse
        }
        (_, _, Some(Decision::Same)) => Decision::Same,
        (Decision::Inconclusive, Decision::Inconclusive, _) => Decision::Inconclusive,
        _ => Decision::Same,
    };
    let mut reason = format!(
        "{}; {}",
        latency_words(policy, &latency),
        error_words(policy, &errors)
    );
    if let Some(a) = &answers {
        reason.push_str("; ");
        reason.push_str(&answer_words(a));
    }
    Comparison {
        check: check.to_owned(),
        region: region.to_owned(),
        latency,
        errors,
        answers,
        decision,
        reason,
    }
}

fn compare_latency(
    policy: &BaselinePolicy,
    before: &Measured,
    after: &Measured,
) -> LatencyComparison {
    let (b, a) = (&before.latencies_ms, &after.latencies_ms);
    let p = |v: &[f64], q: f64| nearest_rank(v, q);
    let (p50_before, p50_after) = (p(b, 50.0), p(a, 50.0));
    let (p95_before, p95_after) = (p(b, 95.0), p(a, 95.0));
    let growth = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) if b > 0.0 => Some(a / b - 1.0),
        _ => None,
    };
    let increase = match (growth(p50_before, p50_after), growth(p95_before, p95_after)) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let mut comparison = LatencyComparison {
        samples_before: b.len(),
        samples_after: a.len(),
        p50_before,
        p50_after,
        p95_before,
        p95_after,
        increase,
        test: "mann-whitney-u".to_owned(),
        u: None,
        p_value: None,
        effect: None,
        decision: Decision::Inconclusive,
    };
    let enough = policy.min_samples as usize;
    if b.len() < enough || a.len() < enough {
        return comparison;
    }
    let Some(test) = mann_whitney_greater(a, b) else {
        return comparison;
    };
    comparison.u = Some(test.u);
    comparison.p_value = Some(test.p_value);
    comparison.effect = Some(test.effect);
    let grew = increase.is_some_and(|i| i > policy.max_latency_increase);
    comparison.decision = if grew && test.p_value < policy.significance {
        Decision::Worse
    } else {
        Decision::Same
    };
    comparison
}

fn compare_errors(policy: &BaselinePolicy, before: &Measured, after: &Measured) -> ErrorComparison {
    let rate = |m: &Measured| {
        if m.requests == 0 {
            0.0
        } else {
            m.errors.min(m.requests) as f64 / m.requests as f64
        }
    };
    let mut comparison = ErrorComparison {
        requests_before: before.requests,
        errors_before: before.errors,
        requests_after: after.requests,
        errors_after: after.errors,
        increase: rate(after) - rate(before),
        test: "fisher-exact".to_owned(),
        p_value: None,
        decision: Decision::Inconclusive,
    };
    let enough = u64::from(policy.min_samples);
    if before.requests < enough || after.requests < enough {
        return comparison;
    }
    let p = fisher_greater(after.errors, after.requests, before.errors, before.requests);
    comparison.p_value = Some(p);
    comparison.decision =
        if comparison.increase > policy.max_error_rate_increase && p < policy.significance {
            Decision::Worse
        } else {
            Decision::Same
        };
    comparison
}

/// The answers' shapes; `None` when the check had a JSON answer on neither side (nothing to
/// compare, not even inconclusively).
fn compare_answers(before: &Measured, after: &Measured) -> Option<AnswersComparison> {
    match (&before.answer_shape, &after.answer_shape) {
        (None, None) => None,
        (Some(b), Some(a)) => {
            let changes = shape_changes(b, a);
            Some(AnswersComparison {
                decision: if changes.is_empty() {
                    Decision::Same
                } else {
                    Decision::Worse
                },
                changes,
            })
        }
        _ => Some(AnswersComparison {
            decision: Decision::Inconclusive,
            changes: Vec::new(),
        }),
    }
}

fn answer_words(a: &AnswersComparison) -> String {
    match a.decision {
        Decision::Worse => {
            const SHOWN: usize = 3;
            let more = a.changes.len().saturating_sub(SHOWN);
            let mut words = a.changes[..a.changes.len().min(SHOWN)].join(", ");
            if more > 0 {
                words.push_str(&format!(" and {more} more"));
            }
            format!("answer changed shape: {words}")
        }
        Decision::Same => "answer keeps its shape".to_owned(),
        Decision::Inconclusive => "answer: no JSON answer on one side to compare".to_owned(),
    }
}

/// Milliseconds for people: 3 significant figures at most.
fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}

fn p_value(p: f64) -> String {
    if p < 0.0001 {
        "p < 0.0001".to_owned()
    } else {
        format!(
            "p = {}",
            format!("{p:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
        )
    }
}

fn percent(share: f64) -> String {
    format!("{:+.0}%", share * 100.0)
}

fn latency_words(policy: &BaselinePolicy, c: &LatencyComparison) -> String {
    let (Some(b95), Some(a95)) = (c.p95_before, c.p95_after) else {
        return format!(
            "latency: too few samples ({} before, {} now)",
            c.samples_before, c.samples_after
        );
    };
    let change = match (c.p50_before, c.p50_after) {
        (Some(b50), Some(a50)) => format!(
            "p50 {} → {}, p95 {} → {} ({})",
            ms(b50),
            ms(a50),
            ms(b95),
            ms(a95),
            c.increase.map_or_else(|| "—".to_owned(), percent)
        ),
        _ => format!("p95 {} → {}", ms(b95), ms(a95)),
    };
    match (c.decision, c.p_value) {
        (Decision::Inconclusive, _) | (_, None) => format!(
            "{change}: too few samples to tell ({} before, {} now, {} needed)",
            c.samples_before, c.samples_after, policy.min_samples
        ),
        (Decision::Worse, Some(p)) => format!("{change}, Mann-Whitney {}: slower", p_value(p)),
        (Decision::Same, Some(p)) => {
            let why = if p < policy.significance {
                format!(
                    "within the allowed {}",
                    percent(policy.max_latency_increase)
                )
            } else {
                "no evidence of slower".to_owned()
            };
            format!("{change}, Mann-Whitney {}: {why}", p_value(p))
        }
    }
}

fn error_words(policy: &BaselinePolicy, c: &ErrorComparison) -> String {
    let counts = format!(
        "errors {}/{} → {}/{}",
        c.errors_before, c.requests_before, c.errors_after, c.requests_after
    );
    match (c.decision, c.p_value) {
        (Decision::Inconclusive, _) | (_, None) => format!(
            "{counts}: too few requests to tell ({} needed)",
            policy.min_samples
        ),
        (Decision::Worse, Some(p)) => format!(
            "{counts} ({:+.1} points), Fisher {}: more errors",
            c.increase * 100.0,
            p_value(p)
        ),
        (Decision::Same, Some(p)) => format!("{counts}, Fisher {}: no more errors", p_value(p)),
    }
}

/// Fails, in `results`, the regions of checks that compared worse, with the comparison's
/// words in their message, so the verdict, the report and any rollback decision see them as
/// any other failure. Inconclusive comparisons change nothing.
pub fn apply(plan: &Plan, report: &BaselineReport, results: &mut [BTreeMap<String, RegionResult>]) {
    for c in report
        .comparisons
        .iter()
        .filter(|c| c.decision == Decision::Worse)
    {
        let Some(index) = plan.checks.iter().position(|k| k.name == c.check) else {
            continue;
        };
        let Some(result) = results.get_mut(index).and_then(|r| r.get_mut(&c.region)) else {
            continue;
        };
        result.status = CheckStatus::Fail;
        let words = format!("worse than baseline {}: {}", report.baseline_id, c.reason);
        result.message = if result.message.is_empty() {
            words
        } else {
            format!("{}; {words}", result.message)
        };
    }
}
