//! Golden sets: every case of a check's `cases` goes through the check's request template
//! (`${case:FIELD}` filled in), is judged by the check's expectations and its own, and the
//! check passes when at least `min_pass_rate` of the cases pass. The message gives the pass
//! rate and the first failing cases, so a region's regression on a golden set is read at a
//! glance.

use std::time::{Duration, Instant};

use futures::StreamExt;
use postflight_plan::model::{CaseSet, HttpCheck, HttpExpect, Plan, StatusExpect};
use postflight_plan::{CheckOutcome, CheckStatus, Sample, Tally};

use crate::expect;
use crate::fill::Refs;
use crate::http::{self, LazyClient};

/// Cases in flight at once: a golden set is replayed, not load-tested.
const CONCURRENCY: usize = 4;

/// Failing cases named in the message; the rest are counted.
const SHOWN_FAILURES: usize = 3;

/// Replays the golden set within `timeout`.
pub async fn run(
    client: &LazyClient,
    plan: &Plan,
    check: &HttpCheck,
    set: &CaseSet,
    timeout: Duration,
) -> CheckOutcome {
    let started = Instant::now();
    let deadline = started + timeout;
    // Indices, not `&Case`s, go through the stream (see `run::run_plan`): a closure over
    // borrowed items makes the future unusable in `tokio::spawn`.
    let results: Vec<(Result<(), String>, Option<Sample>)> =
        futures::stream::iter(0..set.cases.len())
            .map(|index| async move {
                let case = &set.cases[index];
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return (
                        Err("not run: the check's timeout was used up".to_owned()),
                        None,
                    );
                }
                let request = match Refs::Case(&case.fields).request(&check.request) {
                    Ok(request) => request,
                    Err(message) => return (Err(message), None),
                };
                let exchange = http::send(client, plan, &request, remaining).await;
                let answer = match exchange.result {
                    Err(message) => {
                        let sample = Sample {
                            latency: exchange.elapsed,
                            ok: false,
                        };
                        return (Err(message), Some(sample));
                    }
                    Ok(answer) => answer,
                };
                let verdict = expect::judge(&check.expect, &answer).and_then(|_| {
                    expect::judge(&case_expect(&check.expect, &case.expect), &answer)
                });
                let sample = Sample {
                    latency: answer.latency,
                    ok: verdict.is_ok(),
                };
                (verdict.map(|_| ()).map_err(|f| f.join("; ")), Some(sample))
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
    let mut samples = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (case, (verdict, sample)) in set.cases.iter().zip(results) {
        samples.extend(sample);
        if let Err(reason) = verdict {
            failures.push(format!("{}: {reason}", case.id));
        }
    }
    let (status, message) = judge(set, &failures);
    let total = u32::try_from(set.cases.len()).unwrap_or(u32::MAX);
    let failed = u32::try_from(failures.len()).unwrap_or(u32::MAX);
    CheckOutcome {
        status,
        message,
        samples,
        missing: 0,
        duration: started.elapsed(),
        answer_shape: None,
        tally: Some(Tally {
            passed: total - failed,
            total,
        }),
    }
}

/// A case's expectations; its status is the check's unless the case names one.
fn case_expect(check: &HttpExpect, case: &HttpExpect) -> HttpExpect {
    let mut expect = case.clone();
    if expect.status == StatusExpect::Success {
        expect.status = check.status.clone();
    }
    expect
}

/// `96%`, `95.5%`.
fn percent(share: f64) -> String {
    let value = share * 100.0;
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0}%")
    } else {
        format!("{value:.1}%")
    }
}

/// The verdict from the failing cases (each `id: reason`, in case order).
fn judge(set: &CaseSet, failures: &[String]) -> (CheckStatus, String) {
    let total = set.cases.len();
    let passed = total - failures.len();
    let rate = if total == 0 {
        0.0
    } else {
        passed as f64 / total as f64
    };
    // A tolerance for the float division: 19 of 20 is 95%, exactly.
    let enough = total > 0 && rate + 1e-9 >= set.min_pass_rate;
    let mut message = format!("{passed} of {total} cases passed ({}", percent(rate));
    if set.min_pass_rate < 1.0 {
        message.push_str(&format!(", at least {} needed", percent(set.min_pass_rate)));
    }
    message.push(')');
    if !failures.is_empty() {
        let shown: Vec<&str> = failures
            .iter()
            .take(SHOWN_FAILURES)
            .map(String::as_str)
            .collect();
        message.push_str(&format!("; failing: {}", shown.join("; ")));
        if failures.len() > SHOWN_FAILURES {
            message.push_str(&format!("; and {} more", failures.len() - SHOWN_FAILURES));
        }
    }
    let status = if enough {
        CheckStatus::Pass
    } else {
        CheckStatus::Fail
    };
    (status, message)
}

#[cfg(test)]
mod tests {
    use postflight_plan::model::Case;

    use super::*;

    fn set(total: usize, min_pass_rate: f64) -> CaseSet {
        CaseSet {
            cases: (0..total)
                .map(|i| Case {
                    id: format!("c{i}"),
                    fields: serde_json::Map::new(),
                    expect: HttpExpect::default(),
                })
                .collect(),
            min_pass_rate,
        }
    }

    #[test]
    fn the_pass_rate_decides_and_the_first_failures_are_named() {
        let one = ["c3: status 500".to_owned()];
        assert_eq!(
            judge(&set(20, 0.95), &one),
            (
                CheckStatus::Pass,
                "19 of 20 cases passed (95%, at least 95% needed); failing: c3: status 500"
                    .to_owned()
            )
        );
        let many: Vec<String> = (0..5).map(|i| format!("c{i}: wrong")).collect();
        let (status, message) = judge(&set(20, 0.95), &many);
        assert_eq!(status, CheckStatus::Fail);
        assert_eq!(
            message,
            "15 of 20 cases passed (75%, at least 95% needed); failing: c0: wrong; c1: wrong; c2: wrong; and 2 more"
        );
        assert_eq!(
            judge(&set(3, 1.0), &[]),
            (CheckStatus::Pass, "3 of 3 cases passed (100%)".to_owned())
        );
        assert_eq!(judge(&set(3, 1.0), &one).0, CheckStatus::Fail);
        assert_eq!(percent(2.0 / 3.0), "66.7%");
    }

    #[test]
    fn a_case_keeps_the_checks_status_unless_it_names_one() {
        let check = HttpExpect {
            status: StatusExpect::OneOf(vec![201]),
            ..HttpExpect::default()
        };
        assert_eq!(
            case_expect(&check, &HttpExpect::default()).status,
            StatusExpect::OneOf(vec![201])
        );
        let own = HttpExpect {
            status: StatusExpect::OneOf(vec![404]),
            ..HttpExpect::default()
        };
        assert_eq!(
            case_expect(&check, &own).status,
            StatusExpect::OneOf(vec![404])
        );
    }
}
