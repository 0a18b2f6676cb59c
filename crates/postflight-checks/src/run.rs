//! Running a plan's checks: concurrently (bounded), each within its timeout, the whole run
//! within an optional deadline, results in plan order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use postflight_plan::duration::PlanDuration;
use postflight_plan::model::{Check, CheckKind, HttpCheck, Plan};
use postflight_plan::{CheckOutcome, CheckStatus, Sample};

use postflight_ops::http_client::Connections;

use crate::http::{self, LazyClient};
use crate::{database, expect, latency};

/// How many checks of one run execute at once: enough to overlap slow checks, few enough not
/// to load the service under test.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Executes checks; holds what is shared between checks of a run.
#[derive(Debug, Clone)]
pub struct Executor {
    fresh: Arc<LazyClient>,
}

impl Executor {
    /// An executor; its HTTP client (one new connection per `http` check) is built on first use.
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            fresh: Arc::new(LazyClient::new(Connections::Fresh)),
        })
    }

    /// Executes one check, `repeat` times when the plan says so (one after the other, so the
    /// service sees one client). Never fails: every error becomes a `fail` outcome that says
    /// why.
    pub async fn execute(&self, plan: &Plan, check: &Check) -> CheckOutcome {
        if check.repeat <= 1 {
            return self.execute_once(plan, check).await;
        }
        let mut runs = Vec::with_capacity(check.repeat as usize);
        for _ in 0..check.repeat {
            runs.push(self.execute_once(plan, check).await);
        }
        CheckOutcome::of_repeats(runs, check.pass_when)
    }

    async fn execute_once(&self, plan: &Plan, check: &Check) -> CheckOutcome {
        let started = Instant::now();
        let work = async {
            match &check.kind {
                CheckKind::Http(http) => match check.cases.as_deref() {
                    Some(set) => {
                        crate::cases::run(&self.fresh, plan, http, set, check.timeout).await
                    }
                    None => self.http(plan, http, check.timeout).await,
                },
                CheckKind::Latency(lat) => latency::run(plan, lat, check.timeout).await,
                CheckKind::Database(db) => database::run(db, check.timeout).await,
                CheckKind::Tcp(tcp) => crate::network::tcp(tcp, check.timeout).await,
                CheckKind::GrpcHealth(grpc) => {
                    crate::network::grpc_health(grpc, check.timeout).await
                }
                CheckKind::Tls(tls) => crate::tls::run(tls, check.timeout).await,
                CheckKind::Dns(dns) => crate::dns::run(dns, check.timeout).await,
                CheckKind::Steps(flow) => {
                    crate::flow::run(&self.fresh, plan, flow, check.timeout).await
                }
            }
        };
        // Each kind honours the timeout itself with a precise message; this is the backstop.
        let grace = match &check.kind {
            CheckKind::Steps(flow) => crate::flow::grace(flow),
            _ => Duration::ZERO,
        };
        match tokio::time::timeout(check.timeout + grace + Duration::from_secs(1), work).await {
            Ok(outcome) => outcome,
            Err(_) => CheckOutcome::fail(
                format!(
                    "did not finish within its timeout of {}",
                    PlanDuration(check.timeout)
                ),
                started.elapsed(),
            ),
        }
    }

    async fn http(&self, plan: &Plan, check: &HttpCheck, timeout: Duration) -> CheckOutcome {
        let exchange = http::send(&self.fresh, plan, &check.request, timeout).await;
        let mut answer_shape = None;
        let (status, message, latency) = match exchange.result {
            Err(message) => (CheckStatus::Fail, message, exchange.elapsed),
            Ok(answer) => {
                // A successful JSON answer's shape, for baselines (`answers: same_shape`).
                if (200..300).contains(&answer.status)
                    && let Ok(document) = serde_json::from_str::<serde_json::Value>(&answer.body)
                    && (document.is_object() || document.is_array())
                {
                    answer_shape = Some(postflight_plan::baseline::shape_of(&document));
                }
                match expect::judge(&check.expect, &answer) {
                    Ok(message) => (CheckStatus::Pass, message, answer.latency),
                    Err(failures) => (CheckStatus::Fail, failures.join("; "), answer.latency),
                }
            }
        };
        CheckOutcome {
            status,
            message,
            samples: vec![Sample {
                latency,
                ok: status == CheckStatus::Pass,
            }],
            missing: 0,
            duration: exchange.elapsed,
            answer_shape,
            tally: None,
        }
    }
}

/// Options of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Checks in flight at once.
    pub concurrency: usize,
    /// Checks not finished by then have no outcome (missing data, never a pass).
    pub deadline: Option<tokio::time::Instant>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            deadline: None,
        }
    }
}

/// Runs every check of `plan`. `on_done` sees each outcome as it completes (for progress
/// output); the result is in plan order, `None` for checks cut off by the deadline.
pub async fn run_plan(
    executor: &Executor,
    plan: &Plan,
    options: RunOptions,
    mut on_done: impl FnMut(usize, &CheckOutcome),
) -> Vec<Option<CheckOutcome>> {
    let mut outcomes: Vec<Option<CheckOutcome>> = vec![None; plan.checks.len()];
    // Indices, not `&Check`s, go through the stream: a closure over borrowed items makes the
    // future unusable in `tokio::spawn` (a higher-ranked lifetime the compiler cannot prove).
    let mut stream = futures::stream::iter(0..plan.checks.len())
        .map(|index| async move { (index, executor.execute(plan, &plan.checks[index]).await) })
        .buffer_unordered(options.concurrency.max(1));
    loop {
        let next = match options.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => stream.next().await,
        };
        let Some((index, outcome)) = next else { break };
        on_done(index, &outcome);
        outcomes[index] = Some(outcome);
    }
    outcomes
}
