//! Assignments: expanding the plan with the probe's variables, running its checks, masking
//! secrets in what goes out, and forgetting assignments long past their deadline.

use super::*;

/// Starts executing an assignment, or rejects it when the plan cannot run here.
pub(crate) fn start(shared: &Arc<Shared>, assignment: v1::Assignment) {
    let id = assignment.assignment_id.clone();
    if shared.state().held.contains_key(&id) {
        return;
    }
    let parsed = if shared.stopping() {
        Err(format!("probe {} is stopping", shared.config.name))
    } else {
        parse_plan(
            &assignment.plan_yaml,
            "assignment",
            Expander::probe(shared.config.vars.as_ref()),
        )
        .map_err(|errors| format!("probe {} cannot use the plan: {errors}", shared.config.name))
    };
    let plan = match parsed {
        Ok(plan) => plan,
        Err(reason) => {
            let reason = scrubber(shared, None).scrub(&reason);
            tracing::error!(assignment = %id, "{reason}");
            shared.state().held.insert(
                id,
                Held {
                    run_id: assignment.run_id,
                    deadline_ms: assignment.deadline_unix_ms as i64,
                    task: None,
                    finished: None,
                    rejected: Some(reason),
                    sent_in: 0,
                },
            );
            shared.wake.notify_one();
            return;
        }
    };
    tracing::info!(run_id = %assignment.run_id, assignment = %id, probe = %shared.config.name, plan = %plan.name, "executing");
    // Held before the task starts, so that even an instant run finds its entry to finish.
    shared.state().held.insert(
        id.clone(),
        Held {
            run_id: assignment.run_id.clone(),
            deadline_ms: assignment.deadline_unix_ms as i64,
            task: None,
            finished: None,
            rejected: None,
            sent_in: 0,
        },
    );
    let remaining = Duration::from_millis(
        (assignment.deadline_unix_ms as i64 - postflight_ops::host::now_ms()).max(0) as u64,
    );
    let task_shared = shared.clone();
    let run_id = assignment.run_id;
    let keep_latencies = assignment.keep_latencies;
    let assignment_id = id.clone();
    // What this plan's results must never carry: its expanded credentials and the values of
    // the secret-looking variables it read here. A service that echoes a token back, or a
    // message quoting a URL, leaves the probe masked.
    let secrets = scrubber(shared, Some(&plan));
    let task = tokio::spawn(async move {
        let options = RunOptions {
            deadline: Some(tokio::time::Instant::now() + remaining),
            ..RunOptions::default()
        };
        let mut produced = 0u32;
        let shared = &task_shared;
        run_plan(
            &shared.executor,
            &plan,
            options,
            |index: usize, outcome: &postflight_plan::CheckOutcome| {
                let result = postflight_proto::check_result(
                    postflight_proto::ResultIds {
                        result_id: uuid::Uuid::now_v7().to_string(),
                        run_id: &run_id,
                        assignment_id: &assignment_id,
                        check_index: index as u32,
                        check_name: &plan.checks[index].name,
                        finished_at_unix_ms: postflight_ops::host::now_ms() as u64,
                        keep_latencies,
                    },
                    outcome,
                );
                let result = if secrets.has_any() {
                    v1::CheckResult {
                        message: postflight_proto::cut_to_bytes(
                            &secrets.scrub(&result.message),
                            MAX_CHECK_MESSAGE_BYTES,
                        )
                        .to_owned(),
                        ..result
                    }
                } else {
                    result
                };
                produced += 1;
                tracing::debug!(
                    run_id = %run_id,
                    assignment = %assignment_id,
                    check = %plan.checks[index].name,
                    status = outcome.status.as_str(),
                    result_id = %result.result_id,
                    "check done"
                );
                let metrics = &shared.config.metrics;
                metrics.count_check(result.status);
                let (dropped, buffered) = {
                    let mut state = shared.state();
                    let dropped = state.outbox.push(result);
                    (dropped, state.outbox.len())
                };
                metrics.buffered.set(buffered as i64);
                if dropped > 0 {
                    metrics.dropped.inc_by(dropped as u64);
                    tracing::warn!(
                        dropped,
                        "result buffer full: the oldest unacknowledged results were dropped"
                    );
                }
                shared.wake.notify_one();
            },
        )
        .await;
        if let Some(held) = shared.state().held.get_mut(&assignment_id) {
            held.finished = Some(produced);
            held.task = None;
        }
        shared.wake.notify_one();
        tracing::info!(run_id = %run_id, assignment = %assignment_id, results = produced, "assignment done");
    });
    if let Some(held) = shared.state().held.get_mut(&id)
        && held.finished.is_none()
    {
        held.task = Some(task.abort_handle());
    }
}

/// The secrets to mask in what an assignment sends: those of its expanded `plan`, and the
/// secret-looking probe variables handed out so far.
pub(crate) fn scrubber(shared: &Shared, plan: Option<&postflight_plan::model::Plan>) -> Secrets {
    let mut secrets = plan.map(Secrets::of_plan).unwrap_or_default();
    for value in shared.config.vars.secret_values() {
        secrets.add(&value);
    }
    secrets
}

/// Assignments a minute past their deadline cannot matter any more: forgotten (and their
/// checks stopped) on every heartbeat, so the map does not grow with every run a long-lived
/// probe has served.
pub(crate) fn forget_expired(shared: &Shared) {
    forget_expired_at(&mut shared.state().held, postflight_ops::host::now_ms());
}

pub(crate) fn forget_expired_at(held: &mut HashMap<String, Held>, now_ms: i64) {
    held.retain(|_, held| {
        let keep = held.deadline_ms + 60_000 > now_ms;
        if !keep && let Some(task) = &held.task {
            task.abort();
        }
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(deadline_ms: i64) -> Held {
        Held {
            run_id: "r".into(),
            deadline_ms,
            task: None,
            finished: Some(1),
            rejected: None,
            sent_in: 1,
        }
    }

    #[test]
    fn assignments_a_minute_past_their_deadline_are_forgotten() {
        let mut map: HashMap<String, Held> = (0..2_880)
            .map(|i| (format!("a-{i}"), held(i64::from(i) * 30_000)))
            .collect();
        map.insert("live".into(), held(10_000_000_000));
        forget_expired_at(&mut map, 2_880 * 30_000);
        // A day of 30-second rounds: only the last (its deadline less than a minute ago) and
        // the live one remain.
        assert_eq!(map.len(), 2);
        assert!(map.contains_key("live") && map.contains_key("a-2879"));
    }
}
