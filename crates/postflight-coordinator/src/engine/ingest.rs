//! Results in: a probe's batch is checked, deduplicated (one result per check and
//! assignment), group-committed with other probes' batches by the result writer, then
//! applied to the run in memory.

use postflight_plan::CheckStatus;
use postflight_plan::report::ProbeResult;

use super::*;

/// Result batches of one probe message, waiting to be written with other probes' batches.
pub(super) struct WriteJob {
    batches: Vec<BatchRecord>,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Results of one message that belong to one assignment.
pub(super) struct Group {
    run_id: String,
    assignment_id: String,
    region: String,
    /// New results.
    results: Vec<ProbeResult>,
    /// Ids of results stored before, and of surplus ones: acknowledged, not stored.
    replays: Vec<String>,
    /// Results dropped because their check already had one from this assignment.
    surplus: u64,
}

/// Batches written per transaction at most: enough to amortise a commit, few enough to keep
/// acknowledgements prompt.
pub(super) const GROUP_BATCHES: usize = 512;

/// Counts stored results in the metrics: one label lookup per check and status of a group,
/// not per result, since this runs for every result the coordinator ingests.
pub(super) fn count_results(metrics: &Metrics, plan: &Plan, region: &str, results: &[ProbeResult]) {
    metrics.results_ingested.inc_by(results.len() as u64);
    let mut counts: BTreeMap<(u32, &'static str), u64> = BTreeMap::new();
    {
        let durations = metrics.check_duration.get_or_create(&RegionLabels {
            region: metrics.region(region),
        });
        for r in results {
            let status = match r.result.status {
                CheckStatus::Pass => "pass",
                CheckStatus::Warn => "warn",
                CheckStatus::Fail => "fail",
                CheckStatus::Inconclusive => "inconclusive",
            };
            *counts.entry((r.check_index, status)).or_default() += 1;
            durations.observe(r.result.duration.as_secs_f64());
        }
    }
    for ((index, status), n) in counts {
        let check = plan
            .checks
            .get(index as usize)
            .map_or("_unknown", |c| c.name.as_str());
        metrics.count_check_results(check, region, status, n);
    }
}

impl<S: Store> Coordinator<S> {
    /// Stores a probe's results; returns the ids to acknowledge (all of them: new ones are
    /// stored, replays were stored before, strays are dropped). The whole message is refused,
    /// with the offending field named, when one result is malformed.
    ///
    /// This is the coordinator's hot path: results of one message almost always share a run
    /// and an assignment, so lookups are done once per group, results are moved rather than
    /// copied, and a group is stored as one row.
    pub async fn ingest(
        &self,
        probe: &str,
        batch: Vec<ProbeResult>,
    ) -> CoordinatorResult<Vec<String>> {
        let received = now_ms();
        let mut groups: Vec<Group> = Vec::new();
        let mut strays: Vec<String> = Vec::new();
        {
            let mut state = self.state();
            // Validate everything before changing anything.
            let mut checked: Option<(&str, &str, &Plan)> = None;
            for (i, wire) in batch.iter().enumerate() {
                let plan = match checked {
                    Some((run, assignment, plan))
                        if run == wire.run_id && assignment == wire.assignment_id =>
                    {
                        Some(plan)
                    }
                    _ => match target_ref(&state, &wire.run_id, &wire.assignment_id)
                        .map(|(a, plan)| (a.record.probe == probe, &**plan))
                    {
                        Some((true, plan)) => {
                            checked = Some((&wire.run_id, &wire.assignment_id, plan));
                            Some(plan)
                        }
                        Some((false, _)) => {
                            return Err(CoordinatorError::invalid(
                                format!("results[{i}].assignment_id"),
                                format!(
                                    "assignment {} belongs to another probe",
                                    wire.assignment_id
                                ),
                            ));
                        }
                        None => None,
                    },
                };
                if let Some(plan) = plan {
                    wire.fits(plan).map_err(|misfit| {
                        CoordinatorError::invalid(
                            format!("results[{i}].{}", misfit.field),
                            misfit.reason,
                        )
                    })?;
                }
            }
            for mut wire in batch {
                let same = groups.last().is_some_and(|g| {
                    g.run_id == wire.run_id && g.assignment_id == wire.assignment_id
                });
                if !same {
                    let region = target_ref(&state, &wire.run_id, &wire.assignment_id)
                        .map(|(a, _)| a.record.region.clone());
                    let Some(region) = region else {
                        tracing::debug!(run_id = %wire.run_id, probe, "result for a run or assignment that is not active: dropped");
                        strays.push(wire.result_id);
                        continue;
                    };
                    groups.push(Group {
                        run_id: std::mem::take(&mut wire.run_id),
                        assignment_id: std::mem::take(&mut wire.assignment_id),
                        region,
                        results: Vec::new(),
                        replays: Vec::new(),
                        surplus: 0,
                    });
                }
                let Some(group) = groups.last_mut() else {
                    continue;
                };
                let Some((a, _, secrets)) = target(&mut state, &group.run_id, &group.assignment_id)
                else {
                    group.replays.push(wire.result_id);
                    continue;
                };
                match a.arrive(wire.check_index as usize, id_hash(&wire.result_id)) {
                    Arrival::New => {}
                    Arrival::Surplus => {
                        if group.surplus == 0 && a.surplus == 1 {
                            tracing::warn!(run_id = %group.run_id, probe, assignment_id = %group.assignment_id, check_index = wire.check_index, "a second result for a check: dropped (counted in postflight_results_surplus_total)");
                        }
                        group.surplus += 1;
                        group.replays.push(wire.result_id);
                        continue;
                    }
                    Arrival::Replay => {
                        group.replays.push(wire.result_id);
                        continue;
                    }
                }
                if secrets.has_any() {
                    wire.result.message = secrets.scrub(&wire.result.message);
                }
                group.results.push(wire);
            }
        }
        let batches: Vec<BatchRecord> = groups
            .iter()
            .filter(|g| !g.results.is_empty())
            .map(|g| BatchRecord {
                run_id: g.run_id.clone(),
                assignment_id: g.assignment_id.clone(),
                region: g.region.clone(),
                probe: probe.to_owned(),
                received_ms: received,
                results: g.results.len() as i64,
                data: crate::storage::results::encode(&g.results),
                seq: 0,
            })
            .collect();
        if !batches.is_empty() {
            let (reply, written) = tokio::sync::oneshot::channel();
            let sent = self
                .inner
                .writer
                .send(WriteJob { batches, reply })
                .await
                .is_ok();
            let written = match written.await {
                Ok(result) if sent => result,
                _ => Err("the result writer stopped".to_owned()),
            };
            if let Err(e) = written {
                self.inner.metrics.ingest_errors.inc();
                // Not stored: forget the ids, so the probe's replay is taken.
                let mut state = self.state();
                for g in &groups {
                    if let Some((a, _, _)) = target(&mut state, &g.run_id, &g.assignment_id) {
                        for r in &g.results {
                            a.forget(r.check_index as usize);
                        }
                    }
                }
                return Err(StoreError::Grouped(e).into());
            }
        }
        // Metrics read the results before they move into the run.
        let plans: Vec<Option<Arc<Plan>>> = {
            let state = self.state();
            groups
                .iter()
                .map(|g| target_ref(&state, &g.run_id, &g.assignment_id).map(|(_, p)| p.clone()))
                .collect()
        };
        for (g, plan) in groups.iter().zip(&plans) {
            self.inner.metrics.results_surplus.inc_by(g.surplus);
            if let Some(plan) = plan {
                count_results(&self.inner.metrics, plan, &g.region, &g.results);
            }
        }
        let mut ack = strays;
        let mut touched: Vec<String> = Vec::new();
        {
            let mut state = self.state();
            for g in &mut groups {
                ack.append(&mut g.replays);
                ack.extend(g.results.iter().map(|r| r.result_id.clone()));
                let n = g.results.len() as u32;
                let Some(run) = state.runs.get_mut(&g.run_id) else {
                    // Relayed for another coordinator's run: its owner reads them back.
                    if let Some(r) = state
                        .relayed
                        .get_mut(&g.assignment_id)
                        .filter(|r| r.assignment.record.run_id == g.run_id)
                    {
                        r.assignment.received += n;
                    }
                    continue;
                };
                if let Some(a) = run.assignments.get_mut(&g.assignment_id) {
                    a.received += n;
                }
                run.result_count += n;
                for wire in g.results.drain(..) {
                    if let Some(event) =
                        use_result(run, &g.run_id, &g.assignment_id, &g.region, probe, wire)
                    {
                        let _ = run.events.send(event);
                    }
                }
                // Only an assignment that has finished can complete the run with a late result.
                let done = run
                    .assignments
                    .get(&g.assignment_id)
                    .is_some_and(LiveAssignment::is_done);
                if done && touched.last() != Some(&g.run_id) {
                    touched.push(g.run_id.clone());
                }
            }
        }
        for run_id in touched {
            self.complete_if_done(&run_id);
        }
        Ok(ack)
    }
}

/// The assignment results are for, with its run's plan: of a run this coordinator owns, or
/// relayed for another coordinator's run.
pub(super) fn target_ref<'a>(
    state: &'a State,
    run_id: &str,
    assignment_id: &str,
) -> Option<(&'a LiveAssignment, &'a Arc<Plan>)> {
    if let Some(run) = state.runs.get(run_id) {
        return run.assignments.get(assignment_id).map(|a| (a, &run.plan));
    }
    state
        .relayed
        .get(assignment_id)
        .filter(|r| r.assignment.record.run_id == run_id)
        .map(|r| (&r.assignment, &r.plan))
}

/// [`target_ref`], to change the assignment; also the secrets its results are masked with.
pub(super) fn target<'a>(
    state: &'a mut State,
    run_id: &str,
    assignment_id: &str,
) -> Option<(&'a mut LiveAssignment, &'a Arc<Plan>, &'a Secrets)> {
    if state.runs.contains_key(run_id) {
        let run = state.runs.get_mut(run_id)?;
        let ActiveRun {
            assignments,
            plan,
            secrets,
            ..
        } = run;
        return assignments
            .get_mut(assignment_id)
            .map(|a| (a, &*plan, &*secrets));
    }
    state
        .relayed
        .get_mut(assignment_id)
        .filter(|r| r.assignment.record.run_id == run_id)
        .map(|r| (&mut r.assignment, &r.plan, &r.secrets))
}

/// Applies a stored batch to a run in memory (after a restart, or what a relay stored): its
/// results are held to today's rules, only each check's first result counts; returns the
/// result events of what was new.
pub(super) fn take_stored_batch(run: &mut ActiveRun, batch: &BatchRecord) -> Vec<RunEvent> {
    let mut events = Vec::new();
    let results = match crate::storage::results::decode(
        &batch.data,
        &batch.run_id,
        &batch.assignment_id,
    ) {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(run_id = %batch.run_id, error = %e, "skipping an unreadable stored batch");
            return events;
        }
    };
    if let Some(a) = run.assignments.get_mut(&batch.assignment_id) {
        a.seen_seq = a.seen_seq.max(batch.seq);
    }
    for taken in results {
        let taken = match taken {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(run_id = %batch.run_id, error = %e, "unusable result in the database, skipped");
                continue;
            }
        };
        // Rows written by an earlier version are held to today's rules.
        if let Err(problem) = taken.check().and_then(|()| taken.fits(&run.plan)) {
            tracing::warn!(run_id = %batch.run_id, result_id = %taken.result_id, field = %problem.field, "unusable result in the database, skipped: {}", problem.reason);
            continue;
        }
        // Only each check's first result counts; stores written by older versions may hold
        // more, and a relay may have stored a replay of what the owner stored itself.
        let Some(a) = run.assignments.get_mut(&batch.assignment_id) else {
            continue;
        };
        if a.arrive(taken.check_index as usize, id_hash(&taken.result_id)) != Arrival::New {
            continue;
        }
        a.received += 1;
        run.result_count += 1;
        let (run_id, assignment_id) = (&batch.run_id, &batch.assignment_id);
        if let Some(event) = use_result(
            run,
            run_id,
            assignment_id,
            &batch.region,
            &batch.probe,
            taken,
        ) {
            events.push(event);
        }
    }
    events
}

/// Group commit: the batches of every probe that arrive while a transaction is being
/// written go into the next one, so the database sees few large transactions however
/// many streams there are.
pub(super) async fn write_results<S: Store>(store: Arc<S>, mut jobs: mpsc::Receiver<WriteJob>) {
    while let Some(first) = jobs.recv().await {
        let mut batches = first.batches;
        let mut replies = vec![first.reply];
        while batches.len() < GROUP_BATCHES {
            match jobs.try_recv() {
                Ok(job) => {
                    batches.extend(job.batches);
                    replies.push(job.reply);
                }
                Err(_) => break,
            }
        }
        let written = store
            .insert_batches(&batches)
            .await
            .map_err(|e| e.to_string());
        for reply in replies {
            let _ = reply.send(written.clone());
        }
    }
}

/// 128 bits of a result id: replays are recognised in memory without keeping every id.
pub(super) fn id_hash(id: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut first = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut first);
    let mut second = std::collections::hash_map::DefaultHasher::new();
    (0xA5u8, id).hash(&mut second);
    (u128::from(first.finish()) << 64) | u128::from(second.finish())
}

/// Keeps an assignment's first result for a check for the report (moved in: a result holds
/// a sketch, and copies of 100,000 of them dominated a large run), and makes its event.
pub(super) fn use_result(
    run: &mut ActiveRun,
    run_id: &str,
    assignment_id: &str,
    region: &str,
    probe: &str,
    taken: ProbeResult,
) -> Option<RunEvent> {
    let index = taken.check_index as usize;
    let per_region = run.results.get_mut(index)?;
    if per_region
        .get(region)
        .is_some_and(|slot| slot.iter().any(|(a, _)| a == assignment_id))
    {
        return None;
    }
    let result = &taken.result;
    let event = RunEvent::now(
        run_id,
        RunEventKind::Result(ResultEvent {
            region: region.to_owned(),
            probe: probe.to_owned(),
            check_index: index as u32,
            check_name: run
                .plan
                .checks
                .get(index)
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            status: result.status,
            message: result.message.clone(),
            duration_ms: result.duration.as_secs_f64() * 1e3,
        }),
    );
    per_region
        .entry(region.to_owned())
        .or_default()
        .push((assignment_id.to_owned(), taken.result));
    run.history.push(event.clone());
    Some(event)
}
