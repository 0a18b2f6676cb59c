//! Wire ↔ domain conversions, all in one place: the rest of the code works with
//! `postflight-plan` types and never interprets a wire message itself.

use std::collections::BTreeMap;
use std::time::Duration;

use postflight_plan::model::Severity;
use postflight_plan::report::{
    CheckReport, LatencySummary, RegionReport, RegionResult, Report, RequestCount, RequestStats,
};
use postflight_plan::rollback::{ActionOutcome, RollbackReport};
use postflight_plan::sketch::LatencySketch;
use postflight_plan::{CheckOutcome, CheckStatus, Overall};

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
                                },
                            )
                        })
                        .collect(),
                    kind: c.kind.clone(),
                    requests: Some(request_count(c.requests)),
                    duration_ms: c.duration_ms,
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
        }
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
}

/// A probe's check outcome as sent to the coordinator.
pub fn check_result(ids: ResultIds<'_>, outcome: &CheckOutcome) -> v1::CheckResult {
    let region = RegionResult::from_outcome(outcome);
    v1::CheckResult {
        result_id: ids.result_id,
        run_id: ids.run_id.to_owned(),
        assignment_id: ids.assignment_id.to_owned(),
        check_index: ids.check_index,
        check_name: ids.check_name.to_owned(),
        status: result_status(outcome.status).into(),
        message: outcome.message.clone(),
        duration_ms: outcome.duration.as_secs_f64() * 1e3,
        requests: region.requests.count,
        request_errors: region.requests.errors,
        requests_missing: region.requests.missing,
        latency_ms: region.latency.map(Into::into),
        latency_sketch: if region.sketch.count() > 0 {
            region.sketch.to_bytes()
        } else {
            Vec::new()
        },
        finished_at_unix_ms: ids.finished_at_unix_ms,
    }
}

/// A probe's result as the report builder consumes it; rejects what a well-behaved probe
/// never sends. `max_requests` is the most requests the result's check can make
/// ([`postflight_plan::Check::max_requests`]): a result claiming more would outweigh honest
/// regions in error rates.
pub fn region_result(r: &v1::CheckResult, max_requests: u64) -> Result<RegionResult, ConvertError> {
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
    check_counts(r, max_requests)?;
    if !(r.duration_ms.is_finite() && r.duration_ms >= 0.0) {
        return Err(ConvertError::new("duration_ms", "not a duration"));
    }
    let sketch = LatencySketch::from_bytes(&r.latency_sketch)
        .map_err(|e| ConvertError::new("latency_sketch", e))?;
    if sketch.count() > r.requests {
        return Err(ConvertError::new(
            "latency_sketch",
            format!(
                "holds {} latencies for {} requests",
                sketch.count(),
                r.requests
            ),
        ));
    }
    Ok(RegionResult {
        status,
        message: r.message.clone(),
        duration: Duration::from_secs_f64(r.duration_ms / 1e3),
        requests: RequestCount {
            count: r.requests,
            errors: r.request_errors,
            missing: r.requests_missing,
        },
        latency: r.latency_ms.map(Into::into),
        sketch,
    })
}

/// The request counts of a result: no more failures than requests, and no more requests
/// (made and missing) than its check can make.
pub fn check_counts(r: &v1::CheckResult, max_requests: u64) -> Result<(), ConvertError> {
    if r.request_errors > r.requests {
        return Err(ConvertError::new(
            "request_errors",
            "more failed requests than requests",
        ));
    }
    if r.requests.saturating_add(r.requests_missing) > max_requests {
        return Err(ConvertError::new(
            "requests",
            format!(
                "{} requests and {} missing, but the check makes at most {max_requests}",
                r.requests, r.requests_missing
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
        };
        let wire = check_result(
            ResultIds {
                result_id: "r1".into(),
                run_id: "run",
                assignment_id: "a",
                check_index: 2,
                check_name: "latency",
                finished_at_unix_ms: 1,
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
