//! Wire ↔ domain conversions, all in one place: the rest of the code works with
//! `postflight-plan` types and never interprets a wire message itself.

use std::collections::BTreeMap;
use std::time::Duration;

use postflight_plan::baseline::{
    AnswersComparison, BaselineReport, Comparison, Decision, ErrorComparison, LatencyComparison,
};
use postflight_plan::feedback::{FeedbackItem, FeedbackKind};
use postflight_plan::model::Severity;
use postflight_plan::report::{
    CheckReport, LatencySummary, ProbeResult, RegionReport, RegionResult, Report, RequestCount,
    RequestStats,
};
use postflight_plan::rollback::{ActionOutcome, RollbackReport};
use postflight_plan::sketch::LatencySketch;
use postflight_plan::{CheckOutcome, CheckStatus, Overall, Tally};

use crate::v1;

/// A wire message that does not make a valid domain value; `field` names the culprit so the
/// caller can answer `INVALID_ARGUMENT` precisely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConvertError {
    /// The offending field, dotted (e.g. `results[3].status`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConvertError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error under a parent field (`checks[2]` + `status` → `checks[2].status`).
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            reason: self.reason,
        }
    }
}

fn check_status(text: &str, field: &str) -> Result<CheckStatus, ConvertError> {
    match text {
        "pass" => Ok(CheckStatus::Pass),
        "warn" => Ok(CheckStatus::Warn),
        "fail" => Ok(CheckStatus::Fail),
        "inconclusive" => Ok(CheckStatus::Inconclusive),
        other => Err(ConvertError::new(
            field,
            format!("`{other}` is not pass, warn, fail or inconclusive"),
        )),
    }
}

impl From<LatencySummary> for v1::LatencySummary {
    fn from(l: LatencySummary) -> Self {
        Self {
            count: l.count,
            p50: l.p50,
            p95: l.p95,
            p99: l.p99,
            max: l.max,
        }
    }
}

impl From<v1::LatencySummary> for LatencySummary {
    fn from(l: v1::LatencySummary) -> Self {
        Self {
            count: l.count,
            p50: l.p50,
            p95: l.p95,
            p99: l.p99,
            max: l.max,
        }
    }
}

impl From<&RollbackReport> for v1::RollbackReport {
    fn from(r: &RollbackReport) -> Self {
        Self {
            recommended: r.recommended,
            triggered: r.triggered,
            dry_run: r.dry_run,
            reasons: r.reasons.clone(),
            action: r.action.clone(),
            outcome: r.outcome.map(|o| o.as_str().to_owned()),
            error: r.error.clone(),
            detail: r.detail.clone(),
            executed_by: r.executed_by.clone(),
            held_back: r.held_back.clone(),
        }
    }
}

impl TryFrom<v1::RollbackReport> for RollbackReport {
    type Error = ConvertError;

    fn try_from(r: v1::RollbackReport) -> Result<Self, ConvertError> {
        let outcome = match r.outcome.as_deref() {
            None => None,
            Some(text) => Some(ActionOutcome::parse(text).ok_or_else(|| {
                ConvertError::new(
                    "outcome",
                    format!("`{text}` is not pending, succeeded, failed, dry_run, skipped or interrupted"),
                )
            })?),
        };
        Ok(Self {
            recommended: r.recommended,
            triggered: r.triggered,
            dry_run: r.dry_run,
            reasons: r.reasons,
            action: r.action,
            outcome,
            error: r.error,
            detail: r.detail,
            executed_by: r.executed_by,
            held_back: r.held_back,
        })
    }
}

fn request_count(c: RequestCount) -> v1::RequestCount {
    v1::RequestCount {
        count: c.count,
        errors: c.errors,
        missing: c.missing,
    }
}

impl From<&Report> for v1::Report {
    fn from(r: &Report) -> Self {
        Self {
            run_id: r.run_id.clone(),
            plan: r.plan.clone(),
            status: r.status.as_str().to_owned(),
            summary: r.summary.clone(),
            passed: r.passed,
            failed: r.failed,
            warnings: r.warnings,
            inconclusive: r.inconclusive,
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            regions: r.regions.clone(),
            checks: r
                .checks
                .iter()
                .map(|c| v1::CheckReport {
                    name: c.name.clone(),
                    severity: c.severity.as_str().to_owned(),
                    status: c.status.as_str().to_owned(),
                    message: c.message.clone(),
                    latency_ms: c.latency_ms.map(Into::into),
                    regions: c
                        .regions
                        .iter()
                        .map(|(name, region)| {
                            (
                                name.clone(),
                                v1::RegionReport {
                                    status: region.status.as_str().to_owned(),
                                    message: region.message.clone(),
                                    latency_ms: region.latency_ms.map(Into::into),
                                    tally: region.tally.map(tally),
                                },
                            )
                        })
                        .collect(),
                    kind: c.kind.clone(),
                    requests: Some(request_count(c.requests)),
                    duration_ms: c.duration_ms,
                    tally: c.tally.map(tally),
                })
                .collect(),
            requests: Some(v1::RequestStats {
                count: r.requests.count,
                errors: r.requests.errors,
                error_rate: r.requests.error_rate,
                latency_ms: r.requests.latency_ms.map(Into::into),
                missing: r.requests.missing,
            }),
            rollback: Some((&r.rollback).into()),
            baseline: r.baseline.as_ref().map(Into::into),
            migration: r.migration.clone().unwrap_or_default(),
            stage: r.stage.clone().unwrap_or_default(),
            forced: r.forced.clone().unwrap_or_default(),
            feedback: r
                .feedback
                .iter()
                .map(|f| v1::FeedbackItem {
                    kind: f.kind.as_str().to_owned(),
                    text: f.text.clone(),
                    source: f.source.clone(),
                    created_at: f.created_at.clone(),
                })
                .collect(),
        }
    }
}

fn decision_text(d: Decision) -> String {
    match d {
        Decision::Worse => "worse",
        Decision::Same => "same",
        Decision::Inconclusive => "inconclusive",
    }
    .to_owned()
}

fn decision(field: &str, text: &str) -> Result<Decision, ConvertError> {
    match text {
        "worse" => Ok(Decision::Worse),
        "same" => Ok(Decision::Same),
        "inconclusive" => Ok(Decision::Inconclusive),
        other => Err(ConvertError::new(
            field,
            format!("`{other}` is not worse, same or inconclusive"),
        )),
    }
}

impl From<&BaselineReport> for v1::BaselineReport {
    fn from(b: &BaselineReport) -> Self {
        Self {
            baseline_id: b.baseline_id.clone(),
            created_at: b.created_at.clone(),
            migration: b.migration.clone().unwrap_or_default(),
            max_latency_increase: b.max_latency_increase,
            max_error_rate_increase: b.max_error_rate_increase,
            significance: b.significance,
            min_samples: b.min_samples,
            comparisons: b
                .comparisons
                .iter()
                .map(|c| v1::BaselineComparison {
                    check: c.check.clone(),
                    region: c.region.clone(),
                    latency: Some(v1::LatencyComparison {
                        samples_before: c.latency.samples_before as u32,
                        samples_after: c.latency.samples_after as u32,
                        p50_before: c.latency.p50_before,
                        p50_after: c.latency.p50_after,
                        p95_before: c.latency.p95_before,
                        p95_after: c.latency.p95_after,
                        increase: c.latency.increase,
                        test: c.latency.test.clone(),
                        u: c.latency.u,
                        p_value: c.latency.p_value,
                        effect: c.latency.effect,
                        decision: decision_text(c.latency.decision),
                    }),
                    errors: Some(v1::ErrorComparison {
                        requests_before: c.errors.requests_before,
                        errors_before: c.errors.errors_before,
                        requests_after: c.errors.requests_after,
                        errors_after: c.errors.errors_after,
                        increase: c.errors.increase,
                        test: c.errors.test.clone(),
                        p_value: c.errors.p_value,
                        decision: decision_text(c.errors.decision),
                    }),
                    decision: decision_text(c.decision),
                    reason: c.reason.clone(),
                    answers_decision: c
                        .answers
                        .as_ref()
                        .map(|a| decision_text(a.decision))
                        .unwrap_or_default(),
                    answers_changes: c
                        .answers
                        .as_ref()
                        .map(|a| a.changes.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }
}

impl TryFrom<v1::BaselineReport> for BaselineReport {
    type Error = ConvertError;

    fn try_from(b: v1::BaselineReport) -> Result<Self, ConvertError> {
        let mut comparisons = Vec::with_capacity(b.comparisons.len());
        for (i, c) in b.comparisons.into_iter().enumerate() {
            let at = format!("comparisons[{i}]");
            let l = c.latency.unwrap_or_default();
            let e = c.errors.unwrap_or_default();
            comparisons.push(Comparison {
                check: c.check,
                region: c.region,
                latency: LatencyComparison {
                    samples_before: l.samples_before as usize,
                    samples_after: l.samples_after as usize,
                    p50_before: l.p50_before,
                    p50_after: l.p50_after,
                    p95_before: l.p95_before,
                    p95_after: l.p95_after,
                    increase: l.increase,
                    test: l.test,
                    u: l.u,
                    p_value: l.p_value,
                    effect: l.effect,
                    decision: decision(&format!("{at}.latency.decision"), &l.decision)?,
                },
                errors: ErrorComparison {
                    requests_before: e.requests_before,
                    errors_before: e.errors_before,
                    requests_after: e.requests_after,
                    errors_after: e.errors_after,
                    increase: e.increase,
                    test: e.test,
                    p_value: e.p_value,
                    decision: decision(&format!("{at}.errors.decision"), &e.decision)?,
                },
                decision: decision(&format!("{at}.decision"), &c.decision)?,
                answers: if c.answers_decision.is_empty() {
                    None
                } else {
                    Some(AnswersComparison {
                        decision: decision(&format!("{at}.answers_decision"), &c.answers_decision)?,
                        changes: c.answers_changes,
                    })
                },
                reason: c.reason,
            });
        }
        Ok(Self {
            baseline_id: b.baseline_id,
            created_at: b.created_at,
            migration: (!b.migration.is_empty()).then_some(b.migration),
            max_latency_increase: b.max_latency_increase,
            max_error_rate_increase: b.max_error_rate_increase,
            significance: b.significance,
            min_samples: b.min_samples,
            comparisons,
        })
    }
}

fn tally(t: Tally) -> v1::Tally {
    v1::Tally {
        passed: t.passed,
        total: t.total,
    }
}

impl TryFrom<v1::Report> for Report {
    type Error = ConvertError;

    fn try_from(r: v1::Report) -> Result<Self, ConvertError> {
        let status = Overall::parse(&r.status).ok_or_else(|| {
            ConvertError::new("status", format!("`{}` is not a verdict", r.status))
        })?;
        let mut checks = Vec::with_capacity(r.checks.len());
        for (i, c) in r.checks.into_iter().enumerate() {
            let at = format!("checks[{i}]");
            let severity = match c.severity.as_str() {
                "critical" => Severity::Critical,
                "warning" => Severity::Warning,
                other => {
                    return Err(ConvertError::new(
                        format!("{at}.severity"),
                        format!("`{other}` is not critical or warning"),
                    ));
                }
            };
            let mut regions = BTreeMap::new();
            for (name, region) in c.regions {
                let status = check_status(&region.status, &format!("{at}.regions[{name}].status"))?;
                regions.insert(
                    name,
                    RegionReport {
                        status,
                        message: region.message,
                        latency_ms: region.latency_ms.map(Into::into),
                        tally: region.tally.map(|t| Tally {
                            passed: t.passed,
                            total: t.total,
                        }),
                    },
                );
            }
            let requests = c.requests.unwrap_or_default();
            checks.push(CheckReport {
                name: c.name,
                severity,
                status: check_status(&c.status, &format!("{at}.status"))?,
                message: c.message,
                latency_ms: c.latency_ms.map(Into::into),
                regions,
                kind: c.kind,
                requests: RequestCount {
                    count: requests.count,
                    errors: requests.errors,
                    missing: requests.missing,
                },
                duration_ms: c.duration_ms,
                tally: c.tally.map(|t| Tally {
                    passed: t.passed,
                    total: t.total,
                }),
            });
        }
        let requests = r.requests.unwrap_or_default();
        Ok(Report {
            run_id: r.run_id,
            plan: r.plan,
            status,
            summary: r.summary,
            passed: r.passed,
            failed: r.failed,
            warnings: r.warnings,
            inconclusive: r.inconclusive,
            started_at: r.started_at,
            finished_at: r.finished_at,
            regions: r.regions,
            checks,
            requests: RequestStats {
                count: requests.count,
                errors: requests.errors,
                error_rate: requests.error_rate,
                latency_ms: requests.latency_ms.map(Into::into),
                missing: requests.missing,
            },
            rollback: match r.rollback {
                Some(rollback) => {
                    RollbackReport::try_from(rollback).map_err(|e| e.within("rollback"))?
                }
                None => RollbackReport::default(),
            },
            baseline: r
                .baseline
                .map(BaselineReport::try_from)
                .transpose()
                .map_err(|e| e.within("baseline"))?,
            migration: (!r.migration.is_empty()).then_some(r.migration),
            stage: (!r.stage.is_empty()).then_some(r.stage),
            forced: (!r.forced.is_empty()).then_some(r.forced),
            feedback: r
                .feedback
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    Ok(FeedbackItem {
                        kind: FeedbackKind::parse(&f.kind).ok_or_else(|| {
                            ConvertError::new(
                                format!("feedback[{i}].kind"),
                                format!("`{}` is not regression, bug or info", f.kind),
                            )
                        })?,
                        text: f.text,
                        source: f.source,
                        created_at: f.created_at,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
        })
    }
}

/// The wire status of an executed check (`Pass`, `Warn` or `Fail`; an execution is never
/// inconclusive).
pub fn result_status(status: CheckStatus) -> v1::CheckStatus {
    match status {
        CheckStatus::Pass => v1::CheckStatus::Pass,
        CheckStatus::Warn => v1::CheckStatus::Warn,
        CheckStatus::Fail | CheckStatus::Inconclusive => v1::CheckStatus::Fail,
    }
}

/// Identity of a result on the wire.
#[derive(Debug, Clone)]
pub struct ResultIds<'a> {
    /// Probe-made unique id.
    pub result_id: String,
    /// The run.
    pub run_id: &'a str,
    /// The assignment.
    pub assignment_id: &'a str,
    /// Position of the check in the plan.
    pub check_index: u32,
    /// Name of the check.
    pub check_name: &'a str,
    /// When it finished, in Unix milliseconds.
    pub finished_at_unix_ms: u64,
    /// Send the successful requests' latencies (the assignment asked: a baseline run).
    pub keep_latencies: bool,
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary:
/// how a probe fits its texts within the coordinator's bounds.
pub fn cut_to_bytes(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A probe's check outcome as sent to the coordinator.
pub fn check_result(ids: ResultIds<'_>, outcome: &CheckOutcome) -> v1::CheckResult {
    let region = RegionResult::from_outcome(outcome);
    v1::CheckResult {
        result_id: ids.result_id,
        run_id: ids.run_id.to_owned(),
        assignment_id: ids.assignment_id.to_owned(),
        check_index: ids.check_index,
        // Plans do not bound check names; the coordinator does: cut, like the message, so a
        // long name cannot make every batch of this assignment refused.
        check_name: cut_to_bytes(ids.check_name, MAX_CHECK_MESSAGE_BYTES).to_owned(),
        status: result_status(outcome.status).into(),
        message: cut_to_bytes(&outcome.message, MAX_CHECK_MESSAGE_BYTES).to_owned(),
        duration_ms: (outcome.duration.as_secs_f64() * 1e3).min(MAX_DURATION_MS),
        requests: region.requests.count,
        request_errors: region.requests.errors,
        requests_missing: region.requests.missing,
        latency_ms: region.latency.map(Into::into),
        latency_sketch: region.sketch.to_bytes(),
        finished_at_unix_ms: ids.finished_at_unix_ms,
        answer_shape: if ids.keep_latencies {
            region
                .answer_shape
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect()
        } else {
            Default::default()
        },
        latencies_ms: if ids.keep_latencies {
            region.latencies_ms
        } else {
            Vec::new()
        },
        tally_passed: region.tally.map_or(0, |t| t.passed),
        tally_total: region.tally.map_or(0, |t| t.total),
    }
}

pub use postflight_plan::report::{MAX_CHECK_MESSAGE_BYTES, MAX_DURATION_MS, MAX_RESULT_ID_BYTES};

/// The longest probe or region name.
pub const MAX_NAME_BYTES: usize = 128;
/// Labels one probe may announce.
pub const MAX_LABELS: usize = 32;
/// Assignments one probe may say it is still executing.
pub const MAX_ACTIVE_ASSIGNMENTS: usize = 10_000;

/// A name (probe, region): non-blank, no whitespace or control characters, bounded.
pub fn check_name(field: &str, text: &str) -> Result<(), ConvertError> {
    if text.is_empty() || text.len() > MAX_NAME_BYTES {
        return Err(ConvertError::new(
            field,
            format!("{} bytes, must be 1 to {MAX_NAME_BYTES}", text.len()),
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConvertError::new(
            field,
            "must not contain blanks or control characters",
        ));
    }
    Ok(())
}

/// Text of at most `max` bytes.
fn check_len(field: &str, text: &str, max: usize) -> Result<(), ConvertError> {
    if text.len() > max {
        return Err(ConvertError::new(
            field,
            format!("{} bytes, at most {max}", text.len()),
        ));
    }
    Ok(())
}

/// A probe's hello: names that identify it, and bounded labels and assignment lists (they
/// are stored, logged and become metric labels).
pub fn check_hello(hello: &v1::Hello) -> Result<(), ConvertError> {
    check_name("name", &hello.name)?;
    check_name("region", &hello.region)?;
    check_len("version", &hello.version, MAX_NAME_BYTES)?;
    if hello.labels.len() > MAX_LABELS {
        return Err(ConvertError::new(
            "labels",
            format!("{} labels, at most {MAX_LABELS}", hello.labels.len()),
        ));
    }
    for (key, value) in &hello.labels {
        check_name("labels", key)?;
        check_len(&format!("labels[{key}]"), value, MAX_NAME_BYTES)?;
    }
    if hello.active_assignments.len() > MAX_ACTIVE_ASSIGNMENTS {
        return Err(ConvertError::new(
            "active_assignments",
            format!(
                "{} assignments, at most {MAX_ACTIVE_ASSIGNMENTS}",
                hello.active_assignments.len()
            ),
        ));
    }
    for (i, id) in hello.active_assignments.iter().enumerate() {
        check_len(&format!("active_assignments[{i}]"), id, MAX_RESULT_ID_BYTES)?;
    }
    Ok(())
}

/// A probe's word that it cannot execute an assignment.
pub fn check_rejected(r: &v1::AssignmentRejected) -> Result<(), ConvertError> {
    check_len("assignment_id", &r.assignment_id, MAX_RESULT_ID_BYTES)?;
    check_len("run_id", &r.run_id, MAX_RESULT_ID_BYTES)?;
    check_len("reason", &r.reason, MAX_CHECK_MESSAGE_BYTES)
}

/// A probe's word that it finished an assignment.
pub fn check_finished(f: &v1::AssignmentFinished) -> Result<(), ConvertError> {
    check_len("assignment_id", &f.assignment_id, MAX_RESULT_ID_BYTES)?;
    check_len("run_id", &f.run_id, MAX_RESULT_ID_BYTES)
}

/// A probe's result as the coordinator takes it in. The wire's own checks are made here (a
/// status, a duration that converts, a sketch that decodes, a bounded check name); the rules
/// every result satisfies wherever it comes from are [`ProbeResult::check`], and what depends
/// on the run's plan is [`ProbeResult::fits`].
pub fn probe_result(r: v1::CheckResult) -> Result<ProbeResult, ConvertError> {
    let status = match v1::CheckStatus::try_from(r.status) {
        Ok(v1::CheckStatus::Pass) => CheckStatus::Pass,
        Ok(v1::CheckStatus::Warn) => CheckStatus::Warn,
        Ok(v1::CheckStatus::Fail) => CheckStatus::Fail,
        _ => {
            return Err(ConvertError::new(
                "status",
                format!("{} is not PASS, WARN or FAIL", r.status),
            ));
        }
    };
    check_len("check_name", &r.check_name, MAX_CHECK_MESSAGE_BYTES)?;
    if !(0.0..=MAX_DURATION_MS).contains(&r.duration_ms) {
        return Err(ConvertError::new(
            "duration_ms",
            format!(
                "{} is not a duration in [0, {MAX_DURATION_MS}]",
                r.duration_ms
            ),
        ));
    }
    // `from_bytes` checks the sketch's shape itself: no second reading of it here.
    let sketch = LatencySketch::from_bytes(&r.latency_sketch)
        .map_err(|e| ConvertError::new("latency_sketch", e))?;
    if r.latencies_ms.len() > postflight_plan::baseline::MAX_SAMPLES {
        return Err(ConvertError::new(
            "latencies_ms",
            format!(
                "{} latencies, at most {}",
                r.latencies_ms.len(),
                postflight_plan::baseline::MAX_SAMPLES
            ),
        ));
    }
    let mut latencies = r.latencies_ms;
    latencies.sort_by(f64::total_cmp);
    let taken = ProbeResult {
        result_id: r.result_id,
        run_id: r.run_id,
        assignment_id: r.assignment_id,
        check_index: r.check_index,
        finished_at_ms: r.finished_at_unix_ms,
        result: RegionResult {
            status,
            message: r.message,
            duration: Duration::from_secs_f64(r.duration_ms / 1e3),
            requests: RequestCount {
                count: r.requests,
                errors: r.request_errors,
                missing: r.requests_missing,
            },
            latency: r.latency_ms.map(Into::into),
            sketch,
            latencies_ms: latencies,
            answer_shape: (!r.answer_shape.is_empty())
                .then(|| r.answer_shape.into_iter().collect()),
            tally: (r.tally_total > 0).then_some(Tally {
                passed: r.tally_passed,
                total: r.tally_total,
            }),
        },
    };
    taken
        .check()
        .map_err(|p| ConvertError::new(p.field, p.reason))?;
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the coordinator does with a result of a check that makes at most `most` requests.
    fn region_result(wire: &v1::CheckResult, most: u64) -> Result<RegionResult, ConvertError> {
        let taken = probe_result(wire.clone())?;
        taken
            .result
            .requests
            .fits_within(most)
            .map_err(|m| ConvertError::new(m.field, m.reason))?;
        Ok(taken.result)
    }
    use postflight_plan::Sample;

    #[test]
    fn a_probe_result_survives_the_wire() {
        let outcome = CheckOutcome {
            status: CheckStatus::Warn,
            message: "p95 3.2 s".into(),
            samples: vec![
                Sample {
                    latency: Duration::from_millis(10),
                    ok: true,
                },
                Sample {
                    latency: Duration::from_millis(3200),
                    ok: false,
                },
            ],
            missing: 3,
            duration: Duration::from_millis(3300),
            answer_shape: None,
            tally: None,
        };
        let wire = check_result(
            ResultIds {
                result_id: "r1".into(),
                run_id: "run",
                assignment_id: "a",
                check_index: 2,
                check_name: "latency",
                finished_at_unix_ms: 1,
                keep_latencies: false,
            },
            &outcome,
        );
        let back = region_result(&wire, 5).unwrap();
        assert_eq!(back.status, CheckStatus::Warn);
        assert_eq!(
            back.requests,
            RequestCount {
                count: 2,
                errors: 1,
                missing: 3,
            }
        );
        assert_eq!(back.latency.unwrap().max, 3200.0);
        assert_eq!(back.sketch.count(), 2);
        assert_eq!(back.duration, Duration::from_millis(3300));
    }

    #[test]
    fn invalid_results_name_the_field() {
        let mut wire = v1::CheckResult {
            status: 0,
            ..Default::default()
        };
        assert_eq!(region_result(&wire, 5).unwrap_err().field, "status");
        wire.status = v1::CheckStatus::Pass.into();
        assert_eq!(region_result(&wire, 5).unwrap_err().field, "result_id");
        wire.result_id = "r1".into();
        wire.requests = 1;
        wire.request_errors = 2;
        assert_eq!(region_result(&wire, 5).unwrap_err().field, "request_errors");
        wire.request_errors = 0;
        wire.latency_sketch = vec![0xff, 1, 2];
        assert_eq!(region_result(&wire, 5).unwrap_err().field, "latency_sketch");
        // More requests than the check can make: a probe inflating its counts.
        wire.latency_sketch = Vec::new();
        wire.requests = 6;
        let err = region_result(&wire, 5).unwrap_err();
        assert_eq!(err.field, "requests");
        assert_eq!(
            err.reason,
            "6 requests and 0 missing, but the check makes at most 5"
        );
        wire.requests = 3;
        wire.requests_missing = 3;
        assert_eq!(region_result(&wire, 5).unwrap_err().field, "requests");
        // A sketch with more latencies than requests.
        wire.requests_missing = 0;
        let mut sketch = LatencySketch::new();
        for v in 0..4 {
            sketch.add(f64::from(v));
        }
        wire.latency_sketch = sketch.to_bytes();
        let err = region_result(&wire, 5).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            ("latency_sketch", "holds 4 latencies for 3 requests")
        );
    }

    /// Every figure a forged result could carry is refused with its field named, and never
    /// reaches `Duration::from_secs_f64` or a percentile's clamp.
    #[test]
    fn hostile_figures_are_refused() {
        let good = v1::CheckResult {
            result_id: "r1".into(),
            status: v1::CheckStatus::Pass.into(),
            requests: 3,
            duration_ms: 12.5,
            latency_ms: Some(v1::LatencySummary {
                count: 3,
                p50: 1.0,
                p95: 2.0,
                p99: 2.0,
                max: 3.0,
            }),
            ..Default::default()
        };
        assert!(region_result(&good, 5).is_ok());
        let summary = |f: &dyn Fn(&mut v1::LatencySummary)| {
            let mut r = good.clone();
            f(r.latency_ms.as_mut().unwrap());
            r
        };
        let cases: Vec<(v1::CheckResult, &str)> = vec![
            (
                v1::CheckResult {
                    duration_ms: 1e23,
                    ..good.clone()
                },
                "duration_ms",
            ),
            (
                v1::CheckResult {
                    duration_ms: f64::INFINITY,
                    ..good.clone()
                },
                "duration_ms",
            ),
            (
                v1::CheckResult {
                    duration_ms: f64::NAN,
                    ..good.clone()
                },
                "duration_ms",
            ),
            (
                v1::CheckResult {
                    duration_ms: -1.0,
                    ..good.clone()
                },
                "duration_ms",
            ),
            (summary(&|l| l.p99 = f64::INFINITY), "latency_ms.p99"),
            (summary(&|l| l.p50 = f64::NAN), "latency_ms.p50"),
            (summary(&|l| l.max = 1e300), "latency_ms.max"),
            (summary(&|l| l.p95 = -0.5), "latency_ms.p95"),
            (summary(&|l| l.p50 = 2.5), "latency_ms.p95"),
            (summary(&|l| l.count = u64::MAX), "latency_ms.count"),
            (
                v1::CheckResult {
                    requests: u64::MAX,
                    requests_missing: u64::MAX,
                    ..good.clone()
                },
                "requests",
            ),
            (
                v1::CheckResult {
                    message: "x".repeat(1 << 20),
                    ..good.clone()
                },
                "message",
            ),
            (
                v1::CheckResult {
                    check_name: "x".repeat(1 << 20),
                    ..good.clone()
                },
                "check_name",
            ),
            (
                v1::CheckResult {
                    result_id: "x".repeat(1024),
                    ..good.clone()
                },
                "result_id",
            ),
            (
                v1::CheckResult {
                    status: 99,
                    ..good.clone()
                },
                "status",
            ),
            (
                v1::CheckResult {
                    latency_sketch: vec![0xA0, 0x04, 0x88, 0, 0, 0, 0, 0, 0, 0xF0, 0x7F],
                    ..good.clone()
                },
                "latency_sketch",
            ),
        ];
        for (wire, field) in cases {
            let err = region_result(&wire, 5).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn a_baseline_comparison_survives_the_wire() {
        let comparison = BaselineReport {
            baseline_id: "b1".into(),
            created_at: "2026-12-01T00:00:00Z".into(),
            migration: Some("m-1".into()),
            max_latency_increase: 0.2,
            max_error_rate_increase: 0.02,
            significance: 0.01,
            min_samples: 8,
            comparisons: vec![Comparison {
                check: "fast".into(),
                region: "eu".into(),
                latency: LatencyComparison {
                    samples_before: 20,
                    samples_after: 20,
                    p50_before: Some(20.0),
                    p50_after: Some(28.0),
                    p95_before: Some(21.0),
                    p95_after: None,
                    increase: Some(0.4),
                    test: "mann-whitney-u".into(),
                    u: Some(400.0),
                    p_value: Some(1e-8),
                    effect: Some(1.0),
                    decision: Decision::Worse,
                },
                errors: ErrorComparison {
                    requests_before: 20,
                    errors_before: 0,
                    requests_after: 20,
                    errors_after: 0,
                    increase: 0.0,
                    test: "fisher-exact".into(),
                    p_value: Some(1.0),
                    decision: Decision::Same,
                },
                answers: Some(AnswersComparison {
                    decision: Decision::Worse,
                    changes: vec!["$.total was number, now string".into()],
                }),
                decision: Decision::Worse,
                reason: "slower".into(),
            }],
        };
        let wire = v1::BaselineReport::from(&comparison);
        assert_eq!(BaselineReport::try_from(wire.clone()).unwrap(), comparison);
        let mut bad = wire;
        bad.comparisons[0].decision = "better".into();
        let err = BaselineReport::try_from(bad).unwrap_err();
        assert_eq!(err.field, "comparisons[0].decision");
    }

    /// A probe cuts a long message to what the coordinator accepts, on a character boundary.
    #[test]
    fn long_messages_are_cut_before_sending() {
        let outcome = CheckOutcome {
            status: CheckStatus::Fail,
            message: "é".repeat(MAX_CHECK_MESSAGE_BYTES),
            samples: Vec::new(),
            missing: 0,
            duration: Duration::from_secs(1),
            answer_shape: None,
            tally: None,
        };
        let long_name = "n".repeat(MAX_CHECK_MESSAGE_BYTES + 10);
        let ids = ResultIds {
            result_id: "r1".into(),
            run_id: "run",
            assignment_id: "a",
            check_index: 0,
            check_name: &long_name,
            finished_at_unix_ms: 1,
            keep_latencies: false,
        };
        let wire = check_result(ids, &outcome);
        assert!(wire.message.len() <= MAX_CHECK_MESSAGE_BYTES);
        assert!(wire.message.len() >= MAX_CHECK_MESSAGE_BYTES - 1);
        assert_eq!(wire.check_name.len(), MAX_CHECK_MESSAGE_BYTES);
        assert!(region_result(&wire, 1).is_ok());
    }

    #[test]
    fn reports_round_trip_through_the_wire() {
        let json = r#"{"run_id":"r","plan":"p","status":"WARN","summary":"WARN — manual review needed",
          "passed":1,"failed":0,"warnings":3,"inconclusive":0,"started_at":"a","finished_at":"b",
          "regions":["eu","us"],"checks":[{"name":"c","severity":"warning","status":"fail","message":"m",
          "latency_ms":{"count":2,"p50":1.0,"p95":2.0,"p99":2.0,"max":2.0},
          "regions":{"eu":{"status":"fail","message":"m","latency_ms":null}},"kind":"http",
          "requests":{"count":2,"errors":1},"duration_ms":3.5}],
          "requests":{"count":2,"errors":1,"error_rate":0.5,"latency_ms":null},
          "rollback":{"recommended":true,"triggered":true,"dry_run":false,"reasons":["r"],"action":"a","outcome":"pending","error":null,
                      "held_back":["eu alone"]}}"#;
        let report: Report = serde_json::from_str(json).unwrap();
        let wire = v1::Report::from(&report);
        assert_eq!(wire.status, "WARN");
        assert_eq!(wire.checks[0].status, "fail");
        let back = Report::try_from(wire).unwrap();
        assert_eq!(back, report);
        let mut bad = v1::Report::from(&report);
        bad.checks[0].status = "great".into();
        assert_eq!(Report::try_from(bad).unwrap_err().field, "checks[0].status");
        let mut bad = v1::Report::from(&report);
        bad.rollback.as_mut().unwrap().outcome = Some("done".into());
        assert_eq!(Report::try_from(bad).unwrap_err().field, "rollback.outcome");
    }
}
