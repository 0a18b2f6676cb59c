//! `steps:` flows: the steps run in order; values captured from one step's JSON answer fill
//! `${step:NAME}` in later steps (in a database step, only its bind parameters); after a
//! failure the remaining steps are skipped except `always` ones (clean-up), which still run.
//!
//! Every HTTP step counts as one request of the check (its latency is a sample). Captured
//! values are treated as secrets: a session token never reaches a message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use postflight_plan::duration::{PlanDuration, human_duration};
use postflight_plan::model::{DatabaseCheck, FlowCheck, FlowStep, Plan, StepAction};
use postflight_plan::{CheckOutcome, CheckStatus, Sample};
use serde_json::Value;

use crate::expect::{self, excerpt};
use crate::fill::Refs;
use crate::http::{self, LazyClient};

/// What a clean-up step gets when the failure before it used up the check's time.
const CLEANUP_TIME: Duration = Duration::from_secs(2);

/// Captured values shorter than this are not masked in messages: too likely to be ordinary
/// words or numbers, and too short to be a credential.
const MASK_MIN_LEN: usize = 6;

/// How much longer than its timeout a flow may take: each clean-up step may run for
/// [`CLEANUP_TIME`] after a failure that used up the time.
pub fn grace(flow: &FlowCheck) -> Duration {
    let always = flow.steps.iter().filter(|s| s.always).count();
    CLEANUP_TIME * u32::try_from(always).unwrap_or(u32::MAX)
}

/// Values captured so far, by name.
pub type Captures = BTreeMap<String, Value>;

/// Runs a flow within `timeout`.
pub async fn run(
    client: &LazyClient,
    plan: &Plan,
    flow: &FlowCheck,
    timeout: Duration,
) -> CheckOutcome {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut captures = Captures::new();
    let mut samples = Vec::new();
    let mut passed: Vec<String> = Vec::new();
    let mut failure: Option<String> = None;
    let mut skipped: Vec<&str> = Vec::new();
    let mut cleanup: Vec<String> = Vec::new();
    for step in &flow.steps {
        let failed_before = failure.is_some();
        if failed_before && !step.always {
            skipped.push(&step.name);
            continue;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = if failed_before {
            remaining.max(CLEANUP_TIME)
        } else {
            remaining
        };
        let result = if budget.is_zero() {
            Err(format!(
                "no time left of the check's timeout of {}",
                PlanDuration(timeout)
            ))
        } else {
            run_step(client, plan, step, &mut captures, budget, &mut samples).await
        };
        match (result, failed_before) {
            (Ok(note), false) => passed.push(note),
            (Err(reason), false) => {
                failure = Some(format!("step `{}` failed: {reason}", step.name));
            }
            (Ok(_), true) => cleanup.push(format!("clean-up `{}` ran", step.name)),
            (Err(reason), true) => {
                cleanup.push(format!("clean-up `{}` failed too: {reason}", step.name));
            }
        }
    }
    let (status, message) = match failure {
        None => (
            CheckStatus::Pass,
            format!(
                "{} passed: {}",
                if passed.len() == 1 {
                    "1 step".to_owned()
                } else {
                    format!("{} steps", passed.len())
                },
                passed.join(", ")
            ),
        ),
        Some(failure) => {
            let mut parts = vec![failure];
            if !skipped.is_empty() {
                parts.push(format!("skipped: {}", skipped.join(", ")));
            }
            parts.extend(cleanup);
            (CheckStatus::Fail, parts.join("; "))
        }
    };
    CheckOutcome {
        status,
        message: mask(&message, &captures),
        samples,
        missing: 0,
        duration: started.elapsed(),
        answer_shape: None,
        tally: None,
    }
}

/// One step: `Ok` with a short note of what it did, or why it failed.
async fn run_step(
    client: &LazyClient,
    plan: &Plan,
    step: &FlowStep,
    captures: &mut Captures,
    budget: Duration,
    samples: &mut Vec<Sample>,
) -> Result<String, String> {
    match &step.action {
        StepAction::Http(check) => {
            let request = Refs::Steps(captures).request(&check.request)?;
            let exchange = http::send(client, plan, &request, budget).await;
            let answer = match exchange.result {
                Err(message) => {
                    samples.push(Sample {
                        latency: exchange.elapsed,
                        ok: false,
                    });
                    return Err(message);
                }
                Ok(answer) => answer,
            };
            // Captured first, so that a value the answer carries is masked even in the
            // message of a failed expectation (and a clean-up step can still use it).
            let captured = capture(step, &answer.body, captures);
            let verdict = expect::judge(&check.expect, &answer);
            samples.push(Sample {
                latency: answer.latency,
                ok: verdict.is_ok(),
            });
            verdict.map_err(|failures| failures.join("; "))?;
            captured?;
            Ok(format!("{} {}", step.name, human_duration(answer.latency)))
        }
        StepAction::Database(check) => {
            let filled = fill_database(check, captures)?;
            let outcome = crate::database::run(&filled, budget).await;
            match outcome.status {
                CheckStatus::Pass => Ok(format!("{} ({})", step.name, outcome.message)),
                _ => Err(outcome.message),
            }
        }
    }
}

/// Takes the step's captures from its JSON answer: every path that matches is kept, and the
/// first that does not is the error.
fn capture(step: &FlowStep, body: &str, captures: &mut Captures) -> Result<(), String> {
    if step.capture.is_empty() {
        return Ok(());
    }
    let document: Value = serde_json::from_str(body).map_err(|_| {
        format!(
            "cannot capture {}: the answer is not JSON ({})",
            step.capture[0].0,
            excerpt(body)
        )
    })?;
    let mut missing = None;
    for (name, path) in &step.capture {
        match path.select(&document) {
            Some(value) => {
                captures.insert(name.clone(), value);
            }
            None => {
                missing.get_or_insert_with(|| {
                    format!(
                        "cannot capture {name}: {} matches nothing in the answer ({})",
                        path.as_str(),
                        excerpt(body)
                    )
                });
            }
        }
    }
    missing.map_or(Ok(()), Err)
}

/// The database step with captures in its parameters (the loader keeps them out of SQL).
fn fill_database(check: &DatabaseCheck, captures: &Captures) -> Result<DatabaseCheck, String> {
    let refs = Refs::Steps(captures);
    let mut filled = check.clone();
    filled.url = refs.text(&check.url)?;
    for query in &mut filled.queries {
        for param in &mut query.params {
            *param = refs.text(param)?;
        }
    }
    Ok(filled)
}

/// `message` with every long enough captured value replaced by `***`: the longest first
/// (a value that begins another does not leave the other's end), and the start of a value
/// that an excerpt cut off (`sess-4f9a…`) too.
fn mask(message: &str, captures: &Captures) -> String {
    let mut values: Vec<String> = captures
        .values()
        .map(crate::fill::as_text)
        .filter(|text| text.chars().count() >= MASK_MIN_LEN)
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut masked = message.to_owned();
    for value in &values {
        masked = masked.replace(value.as_str(), "***");
    }
    for value in &values {
        let starts: Vec<usize> = value
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| value[..i].chars().count() >= MASK_MIN_LEN)
            .collect();
        for end in starts.into_iter().rev() {
            let cut = format!("{}…", &value[..end]);
            if masked.contains(&cut) {
                masked = masked.replace(&cut, "***…");
            }
        }
    }
    masked
}

#[cfg(test)]
mod tests;
