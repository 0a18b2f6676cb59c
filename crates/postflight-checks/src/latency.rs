//! `latency` checks: `samples` requests, `concurrency` at a time, judged on a nearest-rank
//! percentile of the successful ones and on the share that failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use postflight_plan::duration::{PlanDuration, human_duration};
use postflight_plan::model::{LatencyCheck, Plan, StatusExpect};
use postflight_plan::stats::nearest_rank;
use postflight_plan::{CheckOutcome, CheckStatus, Sample};

use postflight_ops::http_client::Connections;

use crate::http;
use crate::http1;

/// Runs the samples within `timeout`. Requests sent and still unanswered at the deadline count
/// as failed (timed out); requests never sent because the deadline had passed are missing
/// data, counted apart, never failures.
pub async fn run(plan: &Plan, check: &LatencyCheck, timeout: Duration) -> CheckOutcome {
    let started = Instant::now();
    let deadline = started + timeout;
    let results = match plan.resolve_url(&check.request.url) {
        Err(message) => return CheckOutcome::fail(message, started.elapsed()),
        Ok(url) if http1::applies(&url) => match http1::Target::new(plan, &check.request, &url) {
            Err(message) => return CheckOutcome::fail(message, started.elapsed()),
            Ok(target) => sample(target, check, deadline).await,
        },
        Ok(_) => match through_client(plan, check, deadline).await {
            Ok(results) => results,
            Err(message) => return CheckOutcome::fail(message, started.elapsed()),
        },
    };
    let missing = u64::from(check.samples).saturating_sub(results.len() as u64);
    let (samples, errors): (Vec<Sample>, Vec<Option<String>>) = results.into_iter().unzip();
    let (status, mut message) = judge(check, &samples, errors.iter().flatten().next());
    if missing > 0 {
        message.push_str(&format!(
            "; {missing} of {} requests not attempted before the check's timeout of {} (missing data, not failures)",
            check.samples,
            PlanDuration(timeout)
        ));
    }
    CheckOutcome {
        status,
        message,
        samples,
        missing,
        duration: started.elapsed(),
        answer_shape: None,
        tally: None,
    }
}

/// One sample's outcome: the sample and, when it failed, why.
type SampleResult = (Sample, Option<String>);

/// Takes the samples over postflight's own keep-alive connections, `concurrency` workers with
/// one connection each (reopened when the server closes it), until `deadline`; samples not
/// started by then are left out (missing).
async fn sample(
    target: http1::Target,
    check: &LatencyCheck,
    deadline: Instant,
) -> Vec<SampleResult> {
    let target = Arc::new(target);
    let samples = check.samples;
    let next = Arc::new(AtomicU32::new(0));
    // Workers are tasks of their own so that each runs on the thread its connection's I/O wakes,
    // and dropping this future (a cancelled run) aborts them.
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..check.concurrency.clamp(1, samples.max(1)) {
        let (target, next, expect) = (target.clone(), next.clone(), check.expect_status.clone());
        workers.spawn(async move {
            let mut connection = None;
            let mut taken = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < samples {
                if Instant::now() >= deadline {
                    break;
                }
                taken.push(one(&target, &expect, &mut connection, deadline).await);
            }
            taken
        });
    }
    let mut results = Vec::with_capacity(samples as usize);
    let mut died = 0usize;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(taken) => results.extend(taken),
            Err(e) => {
                died += 1;
                tracing::error!(error = %e, "a latency sampling task failed");
            }
        }
    }
    // A worker that died took its request in flight with it: a failure, never missing data.
    for _ in 0..died.min((samples as usize).saturating_sub(results.len())) {
        results.push((
            Sample {
                latency: Duration::ZERO,
                ok: false,
            },
            Some("the sampling task failed".to_owned()),
        ));
    }
    results
}

/// One request on the worker's connection.
async fn one(
    target: &http1::Target,
    expect: &StatusExpect,
    connection: &mut Option<http1::Connection>,
    deadline: Instant,
) -> SampleResult {
    let started = Instant::now();
    let exchange = http1::exchange(target, connection, http1::Capture::Status);
    let outcome = tokio::time::timeout_at(deadline.into(), exchange).await;
    let latency = started.elapsed();
    let failed = |message: String| (Sample { latency, ok: false }, Some(message));
    match outcome {
        Err(_) => {
            // The connection may hold half an answer: never reuse it.
            *connection = None;
            failed(http::timeout_message(
                deadline.saturating_duration_since(started),
                target.shown(),
            ))
        }
        Ok(Err(message)) => failed(format!("{} failed: {message}", target.shown())),
        Ok(Ok(response)) if expect.accepts(response.status) => (Sample { latency, ok: true }, None),
        Ok(Ok(response)) => failed(format!("status {}, expected {expect}", response.status)),
    }
}

/// Samples through reqwest's pooled client: the path when a proxy is configured.
async fn through_client(
    plan: &Plan,
    check: &LatencyCheck,
    deadline: Instant,
) -> Result<Vec<SampleResult>, String> {
    let client = http::LazyClient::new(Connections::Reused);
    client.get()?;
    Ok(futures::stream::iter(0..check.samples)
        .map(|_| {
            let client = &client;
            async move {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return None;
                }
                let exchange = http::send(client, plan, &check.request, remaining).await;
                Some(match exchange.result {
                    Ok(answer) if check.expect_status.accepts(answer.status) => (
                        Sample {
                            latency: answer.latency,
                            ok: true,
                        },
                        None,
                    ),
                    Ok(answer) => (
                        Sample {
                            latency: answer.latency,
                            ok: false,
                        },
                        Some(format!(
                            "status {}, expected {}",
                            answer.status, check.expect_status
                        )),
                    ),
                    Err(message) => (
                        Sample {
                            latency: exchange.elapsed,
                            ok: false,
                        },
                        Some(message),
                    ),
                })
            }
        })
        .buffer_unordered(check.concurrency.max(1) as usize)
        .filter_map(|taken| async move { taken })
        .collect()
        .await)
}

/// The verdict on a set of samples; `first_error` explains failed requests.
pub fn judge(
    check: &LatencyCheck,
    samples: &[Sample],
    first_error: Option<&String>,
) -> (CheckStatus, String) {
    let total = samples.len();
    let failed = samples.iter().filter(|s| !s.ok).count();
    let mut ok: Vec<Duration> = samples.iter().filter(|s| s.ok).map(|s| s.latency).collect();
    ok.sort();
    let label = percentile_label(check.percentile);
    let error_rate = if total == 0 {
        1.0
    } else {
        failed as f64 / total as f64
    };
    if error_rate > check.max_error_rate || ok.is_empty() {
        let first = first_error.map_or(String::new(), |e| format!("; first error: {e}"));
        return (
            CheckStatus::Fail,
            format!(
                "{failed} of {total} requests failed ({:.1}%, at most {:.1}% allowed){first}",
                error_rate * 100.0,
                check.max_error_rate * 100.0
            ),
        );
    }
    let Some(value) = nearest_rank(&ok, check.percentile) else {
        return (
            CheckStatus::Fail,
            "no successful request to measure".to_owned(),
        );
    };
    let detail = format!(
        "over {} requests (p50 {}, max {}{})",
        ok.len(),
        human_duration(nearest_rank(&ok, 50.0).unwrap_or_default()),
        human_duration(ok[ok.len() - 1]),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    let shown = human_duration(value);
    let pass = PlanDuration(check.pass_below);
    if value < check.pass_below {
        return (
            CheckStatus::Pass,
            format!("{label} {shown} is below {pass} {detail}"),
        );
    }
    match check.warn_below {
        Some(warn) if value < warn => (
            CheckStatus::Warn,
            format!(
                "{label} {shown} is not below {pass} (but below {}) {detail}",
                PlanDuration(warn)
            ),
        ),
        Some(warn) => (
            CheckStatus::Fail,
            format!(
                "{label} {shown} is not below {} (nor {pass}) {detail}",
                PlanDuration(warn)
            ),
        ),
        None => (
            CheckStatus::Fail,
            format!("{label} {shown} is not below {pass} {detail}"),
        ),
    }
}

fn percentile_label(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("p{}", p as u32)
    } else {
        format!("p{p}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postflight_plan::model::{Body, HttpRequest, StatusExpect};

    fn check(pass: u64, warn: Option<u64>) -> LatencyCheck {
        LatencyCheck {
            request: HttpRequest {
                method: "GET".into(),
                url: "http://h/".into(),
                headers: vec![],
                body: Body::None,
            },
            expect_status: StatusExpect::Success,
            max_error_rate: 0.0,
            samples: 5,
            concurrency: 1,
            percentile: 95.0,
            pass_below: Duration::from_millis(pass),
            warn_below: warn.map(Duration::from_millis),
        }
    }

    fn samples(ms: &[u64]) -> Vec<Sample> {
        ms.iter()
            .map(|&m| Sample {
                latency: Duration::from_millis(m),
                ok: true,
            })
            .collect()
    }

    #[test]
    fn pass_warn_fail_at_the_thresholds() {
        let s = samples(&[100, 200, 300, 400, 3000]);
        let (status, message) = judge(&check(3000, Some(5000)), &s, None);
        assert_eq!(
            status,
            CheckStatus::Warn,
            "p95 equal to pass_below is not below it"
        );
        assert_eq!(
            message,
            "p95 3.00 s is not below 3s (but below 5s) over 5 requests (p50 300 ms, max 3.00 s)"
        );
        assert_eq!(
            judge(&check(3001, Some(5000)), &s, None).0,
            CheckStatus::Pass
        );
        assert_eq!(
            judge(&check(1000, Some(3000)), &s, None).0,
            CheckStatus::Fail
        );
        let (status, message) = judge(&check(1000, None), &s, None);
        assert_eq!(status, CheckStatus::Fail);
        assert_eq!(
            message,
            "p95 3.00 s is not below 1s over 5 requests (p50 300 ms, max 3.00 s)"
        );
    }

    #[test]
    fn failed_requests_fail_the_check_beyond_the_allowed_rate() {
        let mut s = samples(&[10, 10, 10, 10]);
        s.push(Sample {
            latency: Duration::from_millis(5),
            ok: false,
        });
        let err = "status 500, expected 2xx".to_owned();
        let (status, message) = judge(&check(3000, None), &s, Some(&err));
        assert_eq!(status, CheckStatus::Fail);
        assert_eq!(
            message,
            "1 of 5 requests failed (20.0%, at most 0.0% allowed); first error: status 500, expected 2xx"
        );
        let mut tolerant = check(3000, None);
        tolerant.max_error_rate = 0.2;
        let (status, message) = judge(&tolerant, &s, Some(&err));
        assert_eq!(status, CheckStatus::Pass);
        assert!(
            message.ends_with("over 4 requests (p50 10.0 ms, max 10.0 ms, 1 failed)"),
            "{message}"
        );
    }

    #[test]
    fn all_failed_is_a_failure_even_when_errors_are_tolerated() {
        let s = vec![Sample {
            latency: Duration::from_millis(1),
            ok: false,
        }];
        let mut c = check(3000, None);
        c.max_error_rate = 1.0;
        assert_eq!(judge(&c, &s, None).0, CheckStatus::Fail);
    }

    #[test]
    fn labels() {
        assert_eq!(percentile_label(95.0), "p95");
        assert_eq!(percentile_label(99.9), "p99.9");
    }
}
