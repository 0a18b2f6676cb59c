//! A probe's result as the coordinator takes it in, and the one set of rules it must satisfy
//! wherever it comes from: a probe's message (after the gRPC conversion) or the coordinator's
//! own database (rows written by an earlier version are held to today's rules).

use crate::model::Plan;
use crate::report::{LatencySummary, RegionResult, RequestCount};

/// The longest result id (probes make UUIDs), run id or assignment id.
pub const MAX_RESULT_ID_BYTES: usize = 128;
/// The longest check message a probe may send; probes cut theirs to fit.
pub const MAX_CHECK_MESSAGE_BYTES: usize = 16 * 1024;
/// The longest check duration or latency, in milliseconds (about 11.6 days): a longer one is
/// a broken clock or a forged message.
pub const MAX_DURATION_MS: f64 = crate::sketch::MAX_LATENCY_MS;

/// One check's result as a probe delivers it: which run, assignment and check it answers,
/// and what the probe found there.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// Made by the probe, unique: a replay after a reconnect is recognised by it.
    pub result_id: String,
    /// The run.
    pub run_id: String,
    /// The probe's share of the run.
    pub assignment_id: String,
    /// Index of the check in the run's plan.
    pub check_index: u32,
    /// When the probe finished the check, Unix milliseconds.
    pub finished_at_ms: u64,
    /// What it found.
    pub result: RegionResult,
}

/// What is wrong with a result: the field (as the API names it) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultProblem {
    /// `result_id`, `requests`, `latency_ms.p95`, …
    pub field: String,
    /// The sentence.
    pub reason: String,
}

fn problem(field: &str, reason: impl Into<String>) -> ResultProblem {
    ResultProblem {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn bounded(field: &str, text: &str, max: usize) -> Result<(), ResultProblem> {
    if text.len() > max {
        return Err(problem(
            field,
            format!("{} bytes, at most {max}", text.len()),
        ));
    }
    Ok(())
}

impl ProbeResult {
    /// What a well-behaved probe always satisfies, whatever the plan: bounded ids and text,
    /// no more failures than requests, a duration in range, a latency summary in order for
    /// no more requests than were made, and a sketch with at most one latency per request.
    /// Nothing that passes can make the report builder panic or outweigh honest regions.
    pub fn check(&self) -> Result<(), ResultProblem> {
        if self.result_id.is_empty() || self.result_id.len() > MAX_RESULT_ID_BYTES {
            return Err(problem(
                "result_id",
                format!(
                    "{} bytes, must be 1 to {MAX_RESULT_ID_BYTES}",
                    self.result_id.len()
                ),
            ));
        }
        bounded("run_id", &self.run_id, MAX_RESULT_ID_BYTES)?;
        bounded("assignment_id", &self.assignment_id, MAX_RESULT_ID_BYTES)?;
        let r = &self.result;
        bounded("message", &r.message, MAX_CHECK_MESSAGE_BYTES)?;
        if r.requests.errors > r.requests.count {
            return Err(problem(
                "request_errors",
                "more failed requests than requests",
            ));
        }
        if let Some(t) = r.tally
            && t.passed > t.total
        {
            return Err(problem(
                "tally_passed",
                format!("{} passed of {}", t.passed, t.total),
            ));
        }
        let duration_ms = r.duration.as_secs_f64() * 1e3;
        if duration_ms > MAX_DURATION_MS {
            return Err(problem(
                "duration_ms",
                format!("{duration_ms} is not a duration in [0, {MAX_DURATION_MS}]"),
            ));
        }
        if let Some(l) = &r.latency {
            check_summary(l, r.requests.count).map_err(|p| ResultProblem {
                field: format!("latency_ms.{}", p.field),
                reason: p.reason,
            })?;
        }
        let ok = r.requests.count - r.requests.errors;
        if r.latencies_ms.len() as u64 > ok.min(crate::baseline::MAX_SAMPLES as u64) {
            return Err(problem(
                "latencies_ms",
                format!(
                    "{} latencies for {ok} successful requests (at most {} are kept)",
                    r.latencies_ms.len(),
                    crate::baseline::MAX_SAMPLES
                ),
            ));
        }
        if let Some(bad) = r
            .latencies_ms
            .iter()
            .find(|v| !(0.0..=MAX_DURATION_MS).contains(*v))
        {
            return Err(problem(
                "latencies_ms",
                format!("{bad} is not a latency in [0, {MAX_DURATION_MS}] ms"),
            ));
        }
        if let Some(shape) = &r.answer_shape {
            if shape.len() > crate::baseline::MAX_SHAPE_PATHS {
                return Err(problem(
                    "answer_shape",
                    format!(
                        "{} paths, at most {}",
                        shape.len(),
                        crate::baseline::MAX_SHAPE_PATHS
                    ),
                ));
            }
            for (path, kind) in shape {
                if path.len() > crate::baseline::MAX_SHAPE_PATH_BYTES
                    || !crate::baseline::SHAPE_TYPES.contains(&kind.as_str())
                {
                    return Err(problem(
                        "answer_shape",
                        format!(
                            "`{}` → `{}` is not a path of at most {} bytes and a JSON type",
                            path.chars().take(64).collect::<String>(),
                            kind.chars().take(16).collect::<String>(),
                            crate::baseline::MAX_SHAPE_PATH_BYTES
                        ),
                    ));
                }
            }
        }
        let values = r.sketch.count();
        if values > r.requests.count {
            return Err(problem(
                "latency_sketch",
                format!("holds {values} latencies for {} requests", r.requests.count),
            ));
        }
        Ok(())
    }

    /// Whether the result can belong to `plan`: a check of the plan, with no more requests
    /// (made and missing) than that check makes. A result claiming more would outweigh honest
    /// regions in error rates.
    pub fn fits(&self, plan: &Plan) -> Result<(), ResultProblem> {
        let Some(check) = plan.checks.get(self.check_index as usize) else {
            return Err(problem(
                "check_index",
                format!("the plan has {} checks", plan.checks.len()),
            ));
        };
        self.result.requests.fits_within(check.max_requests())?;
        // A tally counts the check's runs when it repeats, else its golden set's cases.
        let most = if check.repeat > 1 {
            check.repeat
        } else {
            check
                .cases
                .as_ref()
                .map_or(0, |c| u32::try_from(c.cases.len()).unwrap_or(u32::MAX))
        };
        match self.result.tally {
            Some(t) if t.total > most => Err(problem(
                "tally_total",
                format!(
                    "{} runs or cases, but the check has at most {most}",
                    t.total
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl RequestCount {
    /// Whether these counts (made and missing) stay within the `most` requests their check
    /// makes.
    pub fn fits_within(&self, most: u64) -> Result<(), ResultProblem> {
        if self.count.saturating_add(self.missing) > most {
            return Err(problem(
                "requests",
                format!(
                    "{} requests and {} missing, but the check makes at most {most}",
                    self.count, self.missing
                ),
            ));
        }
        Ok(())
    }
}

/// A latency summary: finite latencies in range, in order, for no more requests than were
/// made.
fn check_summary(l: &LatencySummary, requests: u64) -> Result<(), ResultProblem> {
    if l.count > requests {
        return Err(problem(
            "count",
            format!("{} latencies for {requests} requests", l.count),
        ));
    }
    let mut previous = 0.0;
    for (field, value) in [
        ("p50", l.p50),
        ("p95", l.p95),
        ("p99", l.p99),
        ("max", l.max),
    ] {
        if !(0.0..=MAX_DURATION_MS).contains(&value) {
            return Err(problem(
                field,
                format!("{value} is not a latency in [0, {MAX_DURATION_MS}] ms"),
            ));
        }
        if value < previous {
            return Err(problem(
                field,
                format!("{value} is below a lower percentile ({previous})"),
            ));
        }
        previous = value;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::sketch::LatencySketch;
    use crate::{CheckStatus, Expander, parse_plan};

    fn taken(check_index: u32, requests: u64, missing: u64) -> ProbeResult {
        ProbeResult {
            result_id: "r1".into(),
            run_id: "run".into(),
            assignment_id: "a".into(),
            check_index,
            finished_at_ms: 1,
            result: RegionResult {
                status: CheckStatus::Pass,
                message: String::new(),
                duration: Duration::from_millis(5),
                requests: RequestCount {
                    count: requests,
                    errors: 0,
                    missing,
                },
                latency: None,
                sketch: LatencySketch::new(),
                latencies_ms: Vec::new(),
                answer_shape: None,
                tally: None,
            },
        }
    }

    #[test]
    fn a_result_fits_only_a_check_of_the_plan_within_its_requests() {
        let env: HashMap<String, String> = HashMap::new();
        let plan = parse_plan(
            "name: p\nchecks:\n  - name: up\n    http: {url: \"http://x/\"}\n  - name: fast\n    latency: {request: {url: \"http://x/\"}, samples: 5, pass_below: 1s}\n",
            "p.yaml",
            Expander::plan(&env),
        )
        .unwrap();
        assert_eq!(taken(0, 1, 0).fits(&plan), Ok(()));
        assert_eq!(taken(1, 3, 2).fits(&plan), Ok(()));
        let beyond = taken(2, 1, 0).fits(&plan).unwrap_err();
        assert_eq!(beyond.field, "check_index");
        assert_eq!(beyond.reason, "the plan has 2 checks");
        let inflated = taken(0, 2, 0).fits(&plan).unwrap_err();
        assert_eq!(inflated.field, "requests");
        assert_eq!(taken(1, 5, 1).fits(&plan).unwrap_err().field, "requests");
    }

    #[test]
    fn the_rules_name_the_field_that_breaks_them() {
        assert_eq!(taken(0, 1, 0).check(), Ok(()));
        let mut r = taken(0, 1, 0);
        r.result_id = "x".repeat(MAX_RESULT_ID_BYTES + 1);
        assert_eq!(r.check().unwrap_err().field, "result_id");
        let mut r = taken(0, 1, 0);
        r.result.requests.errors = 2;
        assert_eq!(r.check().unwrap_err().field, "request_errors");
        let mut r = taken(0, 1, 0);
        r.result.latency = Some(LatencySummary {
            count: 1,
            p50: 5.0,
            p95: 4.0,
            p99: 6.0,
            max: 6.0,
        });
        assert_eq!(r.check().unwrap_err().field, "latency_ms.p95");
        let mut r = taken(0, 1, 0);
        r.result.sketch.add(1.0);
        r.result.sketch.add(2.0);
        assert_eq!(r.check().unwrap_err().field, "latency_sketch");
        let mut r = taken(0, 1, 0);
        r.result.duration = Duration::from_secs(2_000_000);
        assert_eq!(r.check().unwrap_err().field, "duration_ms");
    }
}
