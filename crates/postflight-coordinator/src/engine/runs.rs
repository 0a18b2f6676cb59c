//! A run's life: submitted (plan accepted, regions resolved, stored), assigned to probes,
//! completed, timed out or cancelled, then finalized into a report and a rollback decision;
//! resumed after a restart. Reads and watches of runs are here too.

use super::*;
use crate::engine::ingest::take_stored_batch;

/// An assignment decided under the lock, to persist and send outside it.
pub(super) struct Dispatch {
    record: AssignmentRecord,
    message: ToProbe,
    link: Option<ProbeLink>,
}

/// How an operator asked for a run or a monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Decide on rollback but never execute it.
    pub dry_run: bool,
    /// Regions that must report; overrides the plan's `policy.regions`.
    pub regions: Vec<String>,
    /// Bound on the whole run; `None` is the coordinator's default.
    pub timeout: Option<Duration>,
    /// Compare with this baseline: an id, or `latest` (the plan's newest).
    pub against: Option<String>,
    /// Keep what the run measured as a baseline when it passes.
    pub take_baseline: bool,
    /// The migration the run belongs to.
    pub migration: Option<String>,
    /// The stage the run is at.
    pub stage: Option<String>,
    /// Run at `stage` although an earlier stage has not passed.
    pub force: bool,
}

/// What a run carries besides its plan: its migration label and what it does with baselines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RunLabels {
    pub migration: Option<String>,
    /// A baseline id (resolved).
    pub against: Option<String>,
    pub take_baseline: bool,
    pub stage: Option<String>,
    /// The stage gate's refusal that `force` overrode.
    pub forced: Option<String>,
}

/// A probe's word that it finished an assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentFinished {
    /// The assignment.
    pub assignment_id: String,
    /// Its run.
    pub run_id: String,
    /// How many results it produced; the run waits for all of them.
    pub results: u32,
}

/// A probe's word that it cannot execute an assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentRejected {
    /// The assignment.
    pub assignment_id: String,
    /// Its run.
    pub run_id: String,
    /// Why (the probe's sentence).
    pub reason: String,
}

impl<S: Store> Coordinator<S> {
    /// Validates a plan and starts a run on the required regions' probes.
    pub async fn submit(
        &self,
        plan_yaml: &str,
        origin: &str,
        options: RunOptions,
    ) -> CoordinatorResult<RunRecord> {
        let (plan, origin, regions) = self.accept_plan(plan_yaml, origin, &options)?;
        self.inner.metrics.runs_submitted.inc();
        let timeout = options.timeout.unwrap_or(self.inner.config.default_timeout);
        let dry_run = options.dry_run || plan.rollback.as_ref().is_some_and(|r| r.dry_run);
        let against = match &options.against {
            Some(id) => Some(self.baseline_for(&plan, id).await?.baseline_id),
            None => None,
        };
        let forced = match &options.stage {
            Some(stage) => self.stage_gate(&plan, &options, stage).await?,
            None => None,
        };
        let labels = RunLabels {
            migration: options.migration.clone(),
            against,
            take_baseline: options.take_baseline,
            stage: options.stage.clone(),
            forced,
        };
        self.create_run(
            plan, plan_yaml, &origin, regions, timeout, dry_run, None, labels, None,
        )
        .await
    }

    /// Parses a submitted plan and resolves its required regions.
    pub(super) fn accept_plan(
        &self,
        plan_yaml: &str,
        origin: &str,
        options: &RunOptions,
    ) -> CoordinatorResult<(Plan, String, Vec<String>)> {
        if plan_yaml.trim().is_empty() {
            return Err(CoordinatorError::invalid("plan_yaml", "the plan is empty"));
        }
        let origin = if origin.trim().is_empty() {
            "plan.yaml"
        } else {
            origin
        };
        // The origin is repeated on every error line: a long one would multiply.
        if origin.len() > postflight_proto::MAX_NAME_BYTES * 2 {
            return Err(CoordinatorError::invalid(
                "origin",
                format!(
                    "{} bytes, at most {}",
                    origin.len(),
                    postflight_proto::MAX_NAME_BYTES * 2
                ),
            ));
        }
        if let Some(migration) = &options.migration
            && postflight_proto::check_name("migration", migration).is_err()
        {
            return Err(CoordinatorError::invalid(
                "options.migration",
                format!(
                    "`{}` is not a migration label (1 to {} bytes, no spaces)",
                    postflight_proto::cut_to_bytes(migration, 64),
                    postflight_proto::MAX_NAME_BYTES
                ),
            ));
        }
        if let Some(against) = &options.against
            && postflight_proto::check_name("against", against).is_err()
        {
            return Err(CoordinatorError::invalid(
                "options.against",
                "a baseline id or `latest`",
            ));
        }
        if options.regions.len() > MAX_REGIONS {
            return Err(CoordinatorError::invalid(
                "options.regions",
                format!("{} regions, at most {MAX_REGIONS}", options.regions.len()),
            ));
        }
        // Plain variables were the CLI's to expand; the coordinator's own environment is not
        // consulted, so a leftover ${VAR} without default is reported, never guessed.
        let no_vars: HashMap<String, String> = HashMap::new();
        let plan = parse_plan(plan_yaml, origin, Expander::plan(&no_vars))
            .map_err(|e| CoordinatorError::invalid("plan_yaml", format!("invalid plan:\n{e}")))?;
        if self.refuses_action_of(&plan) {
            return Err(CoordinatorError::invalid(
                "plan_yaml",
                format!(
                    "rollback.action.command: {}",
                    rollback::COMMANDS_NOT_ALLOWED
                ),
            ));
        }
        for (i, region) in options.regions.iter().enumerate() {
            // The rule probes' regions follow: a region no probe could announce is refused.
            if postflight_proto::check_name("region", region).is_err() {
                return Err(CoordinatorError::invalid(
                    format!("options.regions[{i}]"),
                    format!("`{region}` is not a region name"),
                ));
            }
        }
        // Regions the operator named keep their own metric labels.
        self.inner.metrics.name_regions(
            plan.policy
                .regions
                .iter()
                .chain(&options.regions)
                .map(String::as_str),
        );
        let regions = self.required_regions(&plan, &options.regions);
        if regions.is_empty() {
            return Err(CoordinatorError::FailedPrecondition(
                "no probe is connected and the plan names no regions (policy.regions): \
                 start probes, or list the regions that must report"
                    .to_owned(),
            ));
        }
        Ok((plan, origin.to_owned(), regions))
    }

    /// Stores and starts a run; `done` hears its end.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_run(
        &self,
        plan: Plan,
        plan_yaml: &str,
        origin: &str,
        regions: Vec<String>,
        timeout: Duration,
        dry_run: bool,
        monitor_id: Option<String>,
        labels: RunLabels,
        done: Option<tokio::sync::oneshot::Sender<Finished>>,
    ) -> CoordinatorResult<RunRecord> {
        let record = RunRecord {
            run_id: uuid::Uuid::now_v7().to_string(),
            plan_name: plan.name.clone(),
            plan_sealed: self.inner.sealer.seal(plan_yaml.as_bytes()),
            origin: origin.to_owned(),
            status: RunStatus::Pending,
            dry_run,
            regions,
            timeout_ms: timeout.as_millis() as i64,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            verdict: None,
            report_json: None,
            rollback_json: None,
            monitor_id,
            migration: labels.migration,
            against: labels.against,
            take_baseline: labels.take_baseline,
            baseline_id: None,
            baseline_refused: None,
            stage: labels.stage,
            forced: labels.forced,
            owner: Some(self.inner.config.identity.clone()),
            lease_until_ms: Some(self.lease_until()),
        };
        self.inner.store.insert_run(&record).await?;
        tracing::info!(run_id = %record.run_id, plan = %plan.name, regions = ?record.regions, "run submitted");
        let run_id = record.run_id.clone();
        self.activate(
            record.clone(),
            plan,
            plan_yaml.into(),
            Vec::new(),
            Vec::new(),
            done,
        );
        self.dispatch_pending(&run_id).await?;
        Ok(self.current_record(&run_id).unwrap_or(record))
    }

    pub(super) fn required_regions(&self, plan: &Plan, requested: &[String]) -> Vec<String> {
        let mut regions: Vec<String> = if !requested.is_empty() {
            requested.to_vec()
        } else if !plan.policy.regions.is_empty() {
            plan.policy.regions.clone()
        } else {
            let only_authenticated = self.inner.config.authenticated_regions_only;
            let state = self.state();
            let here = state
                .probes
                .values()
                .filter(|p| p.session.is_some() && (p.authenticated || !only_authenticated))
                .map(|p| p.region.clone());
            // Whether another coordinator's probes proved their identity is not known here:
            // they count only where identities are not bound at all.
            let elsewhere = state
                .remote
                .values()
                .filter(|_| !only_authenticated)
                .map(|p| p.region.clone());
            here.chain(elsewhere).collect()
        };
        regions.sort();
        regions.dedup();
        regions
    }

    /// Puts a run in memory with its assignments and results, and arms its deadline.
    pub(super) fn activate(
        &self,
        record: RunRecord,
        plan: Plan,
        plan_yaml: Arc<str>,
        assignments: Vec<AssignmentRecord>,
        batches: Vec<BatchRecord>,
        done: Option<tokio::sync::oneshot::Sender<Finished>>,
    ) {
        let run_id = record.run_id.clone();
        let deadline_unix_ms = record.created_ms + record.timeout_ms;
        let (events, _) = broadcast::channel(1024);
        let mut run = ActiveRun {
            secrets: Secrets::of_plan(&plan),
            results: vec![BTreeMap::new(); plan.checks.len()],
            plan: Arc::new(plan),
            plan_yaml,
            record,
            deadline_unix_ms,
            assignments: assignments
                .into_iter()
                .map(|a| (a.assignment_id.clone(), LiveAssignment::new(a)))
                .collect(),
            result_count: 0,
            events,
            history: Vec::new(),
            done,
            timer: CancellationToken::new(),
            wake: Arc::new(tokio::sync::Notify::new()),
        };
        for batch in &batches {
            // Loaded before any watcher: the events are kept in the run's history only.
            take_stored_batch(&mut run, batch);
        }
        // The run's owner: one task decides its end (complete, timed out), so whoever
        // delivers the last result only records it and signals. It stops when the run ends
        // elsewhere (cancelled) or the coordinator shuts down.
        let timer = self.inner.cancel.child_token();
        run.timer = timer.clone();
        let wake = run.wake.clone();
        // A resumed run may already hold everything it needs: look once at the start.
        wake.notify_one();
        self.state().runs.insert(run_id.clone(), run);
        let this = self.clone();
        let wait = Duration::from_millis((deadline_unix_ms - now_ms()).max(0) as u64);
        self.inner.tasks.spawn(async move {
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            let (status, detail) = loop {
                tokio::select! {
                    () = timer.cancelled() => return,
                    () = &mut deadline => break (RunStatus::TimedOut, "the run reached its timeout"),
                    () = wake.notified() => {
                        if this.is_complete(&run_id) {
                            break (RunStatus::Completed, "every required region reported");
                        }
                    }
                }
            };
            if let Err(e) = this.finalize(&run_id, status, detail).await {
                tracing::error!(run_id = %run_id, error = %e, status = status.as_str(), "cannot end a run");
            }
        });
    }

    /// Gives unserved regions of `run_id` to connected probes, persists and sends.
    pub(super) async fn dispatch_pending(&self, run_id: &str) -> CoordinatorResult<()> {
        let dispatches = {
            let mut guard = self.state();
            let state = &mut *guard;
            let busy = busy_counts(&state.runs, run_id);
            let Some(run) = state.runs.get_mut(run_id) else {
                return Ok(());
            };
            let reach = Reach {
                local: &state.probes,
                remote: &state.remote,
            };
            let picks = state::probes_to_assign(run, reach, &busy);
            let mut dispatches = Vec::new();
            for (region, probe) in picks {
                let record = AssignmentRecord {
                    assignment_id: uuid::Uuid::now_v7().to_string(),
                    run_id: run_id.to_owned(),
                    region,
                    probe: probe.clone(),
                    status: AssignmentStatus::Active,
                    expected_results: None,
                    detail: None,
                    created_ms: now_ms(),
                    relay: reach.relay_of(&probe).map(str::to_owned),
                };
                run.assignments.insert(
                    record.assignment_id.clone(),
                    LiveAssignment::new(record.clone()),
                );
                let message = ToProbe::Assignment {
                    assignment_id: record.assignment_id.clone(),
                    run_id: run_id.to_owned(),
                    plan_yaml: run.plan_yaml.clone(),
                    deadline_unix_ms: run.deadline_unix_ms.max(0) as u64,
                    keep_latencies: run.record.take_baseline || run.record.against.is_some(),
                };
                let link = state
                    .probes
                    .get(&probe)
                    .and_then(|p| p.session.as_ref())
                    .map(|s| s.link.clone());
                dispatches.push(Dispatch {
                    record,
                    message,
                    link,
                });
            }
            let started = !dispatches.is_empty() && run.record.status == RunStatus::Pending;
            if started {
                run.record.status = RunStatus::Running;
                run.record.started_ms = Some(now_ms());
                let _ = run.events.send(RunEvent::status(
                    run_id,
                    RunStatus::Running,
                    "probes are executing the plan",
                ));
            }
            (dispatches, started.then(|| run.record.clone()))
        };
        let (dispatches, started) = dispatches;
        let records: Vec<AssignmentRecord> = dispatches.iter().map(|d| d.record.clone()).collect();
        self.inner.store.insert_assignments(&records).await?;
        if let Some(record) = started {
            self.inner.store.update_run(&record).await?;
        }
        for d in dispatches {
            tracing::info!(run_id, assignment = %d.record.assignment_id, probe = %d.record.probe, region = %d.record.region, relay = %d.record.relay.as_deref().unwrap_or("-"), "assigned");
            if let Some(link) = d.link {
                link.send(Ok(d.message));
            }
        }
        Ok(())
    }

    pub(super) fn current_record(&self, run_id: &str) -> Option<RunRecord> {
        self.state().runs.get(run_id).map(|r| r.record.clone())
    }

    /// A run (live state for an active run, else the stored one) and its result count.
    pub async fn get_run(&self, run_id: &str) -> CoordinatorResult<(RunRecord, u32)> {
        if let Some((record, count)) = self
            .state()
            .runs
            .get(run_id)
            .map(|r| (r.record.clone(), r.result_count))
        {
            return Ok((record, count));
        }
        let record = self
            .inner
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("no run with id {run_id}")))?;
        let count = match &record.report_json {
            Some(_) => self.inner.store.count_results(run_id).await? as u32,
            None => 0,
        };
        Ok((record, count))
    }

    /// Runs, newest first, with live state for active ones.
    pub async fn list_runs(
        &self,
        limit: u32,
        plan: Option<&str>,
    ) -> CoordinatorResult<Vec<(RunRecord, u32)>> {
        let stored = self.inner.store.list_runs(limit, plan).await?;
        let state = self.state();
        Ok(stored
            .into_iter()
            .map(|r| match state.runs.get(&r.run_id) {
                Some(active) => (active.record.clone(), active.result_count),
                None => (r, 0),
            })
            .collect())
    }

    /// The final report of a run.
    pub async fn report(&self, run_id: &str) -> CoordinatorResult<postflight_plan::Report> {
        if let Some(status) = self.state().runs.get(run_id).map(|r| r.record.status) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "run {run_id} is {}: its report exists once it ends (watch it with `postflight watch {run_id}`)",
                status.as_str()
            )));
        }
        let record = self
            .inner
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("no run with id {run_id}")))?;
        let json = record.report_json.ok_or_else(|| {
            CoordinatorError::FailedPrecondition(format!("run {run_id} has no report yet"))
        })?;
        serde_json::from_str(&json).map_err(|e| {
            CoordinatorError::Store(crate::storage::StoreError::Corrupt {
                field: "runs.report",
                reason: e.to_string(),
            })
        })
    }

    /// Events of a run: what happened so far, then live ones, ending with the report. `None`
    /// as receiver means the run has ended and the first events are all there is.
    pub async fn watch(
        &self,
        run_id: &str,
    ) -> CoordinatorResult<(Vec<RunEvent>, Option<broadcast::Receiver<RunEvent>>)> {
        {
            let state = self.state();
            if let Some(run) = state.runs.get(run_id) {
                let receiver = run.events.subscribe();
                let mut backlog = vec![RunEvent::status(run_id, run.record.status, "")];
                backlog.extend(run.history.iter().cloned());
                return Ok((backlog, Some(receiver)));
            }
        }
        let report = self.report(run_id).await?;
        let record = self.inner.store.get_run(run_id).await?;
        let status = record.map_or(RunStatus::Completed, |r| r.status);
        Ok((
            vec![
                RunEvent::status(run_id, status, ""),
                RunEvent::now(run_id, RunEventKind::Report(Arc::new(report))),
            ],
            None,
        ))
    }

    /// Stops a run; its report marks what did not report as missing.
    pub async fn cancel(&self, run_id: &str, reason: &str) -> CoordinatorResult<RunRecord> {
        let active = self.state().runs.contains_key(run_id);
        if !active {
            let record =
                self.inner.store.get_run(run_id).await?.ok_or_else(|| {
                    CoordinatorError::NotFound(format!("no run with id {run_id}"))
                })?;
            return Err(CoordinatorError::FailedPrecondition(format!(
                "run {run_id} has already ended ({})",
                record.status.as_str()
            )));
        }
        let reason = if reason.is_empty() {
            "cancelled by an operator"
        } else {
            reason
        };
        self.finalize(run_id, RunStatus::Cancelled, reason).await?;
        let (record, _) = self.get_run(run_id).await?;
        Ok(record)
    }

    /// Ends a run once: builds and stores its report, cancels what probes still do, and
    /// tells the watchers. A second call (deadline after completion) does nothing.
    pub(super) async fn finalize(
        &self,
        run_id: &str,
        status: RunStatus,
        detail: &str,
    ) -> CoordinatorResult<()> {
        let Some(mut run) = self.state().runs.remove(run_id) else {
            return Ok(());
        };
        run.timer.cancel();
        let finished = now_ms();
        let mut results = state::take_region_results(&mut run);
        let comparison = match run.record.against.clone() {
            Some(id) => {
                self.compare_with_baseline(&run.plan, &id, &mut results)
                    .await
            }
            None => None,
        };
        let unreported = state::unreported_regions(&run);
        let started_ms = run.record.started_ms.unwrap_or(run.record.created_ms);
        let end = match status {
            RunStatus::Completed => RunEnd::Completed,
            RunStatus::Cancelled => RunEnd::Cancelled,
            _ => RunEnd::TimedOut,
        };
        let mut report = build_report(&RunResults {
            plan: &run.plan,
            run_id,
            started_at: UNIX_EPOCH + Duration::from_millis(started_ms.max(0) as u64),
            finished_at: UNIX_EPOCH + Duration::from_millis(finished.max(0) as u64),
            required_regions: &run.record.regions,
            results: &results,
            unreported: &unreported,
            end,
            env: &ProcessEnv,
        });
        report.rollback.dry_run |= run.record.dry_run;
        report.baseline = comparison;
        if let Some(migration) = &run.record.migration {
            self.inner.metrics.count_migration_run(
                migration,
                run.record.stage.as_deref(),
                report.status.as_str(),
            );
        }
        if let Some(migration) = run.record.migration.clone() {
            report.feedback = self.feedback_items(&migration).await;
            // A monitor's round is judged by its monitor, which counts the feedback itself.
            let reason = match run.record.monitor_id {
                None => self.feedback_reason(&run.plan, &migration).await,
                Some(_) => None,
            };
            if let Some(reason) = reason {
                postflight_plan::feedback::add_reason(
                    &run.plan,
                    &mut report.rollback,
                    reason,
                    &ProcessEnv,
                );
            }
        }
        report.migration = run.record.migration.clone();
        report.stage = run.record.stage.clone();
        report.forced = run.record.forced.clone();
        if run.record.take_baseline {
            self.keep_baseline(&mut run.record, &run.plan, &report, &results)
                .await;
        }
        // A monitor's round is judged by its monitor, over the window; a plain run acts now:
        // the claim is committed and the report stored as `pending` before the action starts
        // in a task of its own (never in the probe stream or request that ended the run).
        let mut claimed = None;
        if run.record.monitor_id.is_none() {
            let context = self.rollback_context(&run.plan, &report, None);
            let subject = format!("run:{run_id}");
            if let Prepared::Execute(action) = self
                .claim_rollback(&run.plan, &mut report.rollback, &context, &subject)
                .await
            {
                claimed = Some(action);
            }
        }
        run.record.status = status;
        run.record.finished_ms = Some(finished);
        self.inner
            .metrics
            .runs_finished
            .get_or_create(&StatusLabels {
                status: status.as_str().to_owned(),
            })
            .inc();
        run.record.verdict = Some(report.status.as_str().to_owned());
        run.record.report_json = Some(serde_json::to_string(&report).unwrap_or_default());
        run.record.rollback_json =
            Some(serde_json::to_string(&report.rollback).unwrap_or_default());
        match self.inner.store.update_run(&run.record).await {
            Ok(true) => {}
            Ok(false) => {
                // Another coordinator adopted the run (this one stalled past its lease) and
                // stores its end. A rollback this one claimed is still executed here: the
                // adopter found the claim taken and will not, so withdrawing it would lose
                // the action; the claim keeps it at most once.
                tracing::warn!(
                    run_id,
                    "the run was adopted by another coordinator; its report is the adopter's"
                );
                if let Some(action) = claimed {
                    self.spawn_action(run.record.clone(), report.rollback.clone(), action);
                }
                return Ok(());
            }
            Err(e) => {
                // The decision is not stored: its action must not start. Withdrawn, the claim
                // lets the run decide again when it is adopted again (it is still unfinished,
                // and its lease is ended so that the next scan takes it).
                if let Some(action) = claimed {
                    self.release_claim(&action.subject).await;
                }
                let _ = self
                    .inner
                    .store
                    .release_run(run_id, &self.inner.config.identity)
                    .await;
                return Err(e.into());
            }
        }
        if let Some(action) = claimed {
            self.spawn_action(run.record.clone(), report.rollback.clone(), action);
        }
        let mut cancels = Vec::new();
        for a in run.assignments.values_mut() {
            if a.record.status == AssignmentStatus::Active {
                a.record.status = AssignmentStatus::Abandoned;
                a.record.detail = Some(format!("run {}", status.as_str()));
                self.inner.store.update_assignment(&a.record).await?;
                cancels.push((a.record.probe.clone(), a.record.assignment_id.clone()));
            }
        }
        for (probe, assignment_id) in cancels {
            if let Some(link) = self.probe_link(&probe) {
                let message = ToProbe::Cancel {
                    assignment_id,
                    reason: detail.to_owned(),
                };
                link.send(Ok(message));
            }
        }
        tracing::info!(
            run_id,
            status = status.as_str(),
            verdict = report.status.as_str(),
            "run ended"
        );
        let _ = run.events.send(RunEvent::status(run_id, status, detail));
        let _ = run.events.send(RunEvent::now(
            run_id,
            RunEventKind::Report(Arc::new(report.clone())),
        ));
        if let Some(done) = run.done.take() {
            let _ = done.send(Finished {
                report,
                results,
                end,
            });
        }
        Ok(())
    }

    /// When a claim taken now expires, on this coordinator's clock (a new run's first lease;
    /// renewals and claims use the database's clock).
    pub(super) fn lease_until(&self) -> i64 {
        now_ms().saturating_add(self.lease_ms())
    }

    /// How long a claim lasts, in milliseconds.
    pub(super) fn lease_ms(&self) -> i64 {
        i64::try_from(self.inner.config.run_lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Renews the leases of this coordinator's runs and monitors, and adopts those of
    /// coordinators whose leases expired (they died): every third of a lease.
    pub(super) fn keep_run_leases(&self) {
        let this = self.clone();
        self.spawn_owned(async move {
            let every = this.inner.config.run_lease / 3;
            loop {
                tokio::time::sleep(every).await;
                let store = &this.inner.store;
                let lease = this.lease_ms();
                // What is in memory now: anything of it not renewed below was adopted by
                // another coordinator (this one stalled past its lease) and is let go.
                let (runs_before, monitors_before): (Vec<String>, Vec<String>) = {
                    let state = this.state();
                    (
                        state.runs.keys().cloned().collect(),
                        state.monitors.keys().cloned().collect(),
                    )
                };
                if let Err(e) = store.announce_coordinator(&this.inner.config.identity, lease).await {
                    tracing::error!(error = %e, "cannot renew this coordinator's announcement");
                }
                match store.renew_run_leases(&this.inner.config.identity, lease).await {
                    Ok(renewed) => {
                        let lost = runs_before.into_iter().filter(|id| !renewed.contains(id));
                        this.let_go_of_runs(lost.collect());
                    }
                    Err(e) => tracing::error!(error = %e, "cannot renew the leases of this coordinator's runs"),
                }
                match store.renew_monitor_leases(&this.inner.config.identity, lease).await {
                    Ok(renewed) => {
                        for id in monitors_before.into_iter().filter(|id| !renewed.contains(id)) {
                            this.let_go_of_monitor(&id).await;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot renew the leases of this coordinator's monitors"),
                }
                if let Err(e) = this.adopt_orphaned_runs().await {
                    tracing::error!(error = %e, "cannot look for runs to adopt");
                }
                if let Err(e) = this.adopt_orphaned_monitors().await {
                    tracing::error!(error = %e, "cannot look for monitors to adopt");
                }
            }
        });
    }

    /// Drops runs another coordinator adopted from memory, and tells this coordinator's
    /// probes to stop their work for them: the adopter drives them now.
    fn let_go_of_runs(&self, run_ids: Vec<String>) {
        for run_id in run_ids {
            let Some(run) = self.state().runs.remove(&run_id) else {
                continue; // it ended meanwhile
            };
            run.timer.cancel();
            tracing::warn!(run_id = %run_id, "another coordinator adopted this run (this one stalled past its lease): letting it go");
            for a in run.assignments.values() {
                if a.record.status == AssignmentStatus::Active
                    && let Some(link) = self.probe_link(&a.record.probe)
                {
                    link.send(Ok(ToProbe::Cancel {
                        assignment_id: a.record.assignment_id.clone(),
                        reason: "the run moved to another coordinator".to_owned(),
                    }));
                }
            }
        }
    }

    /// Adopts unfinished runs that are not in memory and whose owner's lease expired (the
    /// claim compares on the database's clock, so a coordinator's own clock never decides).
    async fn adopt_orphaned_runs(&self) -> CoordinatorResult<()> {
        let mut adopted = false;
        for run_id in self.inner.store.adoptable().await?.runs {
            if self.state().runs.contains_key(&run_id) {
                continue;
            }
            if let Some(record) = self.inner.store.get_run(&run_id).await? {
                adopted |= self.adopt(record).await?;
            }
        }
        if adopted {
            let this = self.clone();
            self.spawn_owned(async move {
                tokio::time::sleep(this.inner.config.reassign_after).await;
                this.reassign_orphans().await;
            });
        }
        Ok(())
    }

    /// Puts back in memory every run the store holds unfinished that no live coordinator
    /// owns (after a restart).
    pub(super) async fn resume(&self) -> CoordinatorResult<()> {
        let runs = self.inner.store.unfinished_runs().await?;
        for record in runs {
            let (run_id, owner) = (record.run_id.clone(), record.owner.clone());
            if !self.adopt(record).await? {
                tracing::info!(
                    run_id = %run_id,
                    owner = owner.as_deref().unwrap_or("?"),
                    "run owned by a live coordinator: not adopting it"
                );
            }
        }
        self.resume_monitors().await?;
        // Probes get a grace period to reconnect and claim their assignments.
        let this = self.clone();
        self.spawn_owned(async move {
            tokio::time::sleep(this.inner.config.reassign_after).await;
            this.reassign_orphans().await;
        });
        Ok(())
    }

    /// Claims an unfinished run and drives it from where it is; `false` when another live
    /// coordinator owns it (its lease holds), which is then left alone.
    async fn adopt(&self, mut record: RunRecord) -> CoordinatorResult<bool> {
        let run_id = record.run_id.clone();
        let until = self.lease_until();
        let claimed = self
            .inner
            .store
            .claim_run(&run_id, &self.inner.config.identity, self.lease_ms())
            .await?;
        if !claimed {
            return Ok(false);
        }
        record.owner = Some(self.inner.config.identity.clone());
        record.lease_until_ms = Some(until);
        let plan_yaml = match self.inner.sealer.unseal(&record.plan_sealed) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                tracing::error!(run_id = %run_id, error = %e, "cannot resume a run");
                let mut ended = record.clone();
                ended.status = RunStatus::TimedOut;
                ended.finished_ms = Some(now_ms());
                self.inner.store.update_run(&ended).await?;
                return Ok(false);
            }
        };
        let no_vars: HashMap<String, String> = HashMap::new();
        let plan = match parse_plan(&plan_yaml, &record.origin, Expander::plan(&no_vars)) {
            Ok(plan) => plan,
            Err(e) => {
                // Kept unfinished (and owned, so not retried every lease) for an operator.
                tracing::error!(run_id = %run_id, error = %e, "a stored plan no longer parses");
                return Ok(false);
            }
        };
        let loaded = async {
            let assignments = self.inner.store.assignments(&run_id).await?;
            let results = self.inner.store.batches(&run_id).await?;
            Ok::<_, crate::storage::StoreError>((assignments, results))
        };
        let (assignments, results) = match loaded.await {
            Ok(loaded) => loaded,
            Err(e) => {
                // Claimed but not driven: end the lease so that a later scan takes it.
                let _ = self
                    .inner
                    .store
                    .release_run(&run_id, &self.inner.config.identity)
                    .await;
                return Err(e.into());
            }
        };
        tracing::info!(run_id = %run_id, results = results.len(), "resuming run");
        self.activate(record, plan, plan_yaml.into(), assignments, results, None);
        Ok(true)
    }

    /// Active assignments whose probe is not connected move to another probe of the region.
    pub(super) async fn reassign_orphans(&self) {
        let (abandoned, run_ids) = {
            let mut guard = self.state();
            let state = &mut *guard;
            let mut abandoned = Vec::new();
            let mut run_ids = Vec::new();
            let reach = Reach {
                local: &state.probes,
                remote: &state.remote,
            };
            for (run_id, run) in state.runs.iter_mut() {
                for a in run.assignments.values_mut() {
                    // Connected here, or to another coordinator that relays its work.
                    let connected = reach.reachable(&a.record.probe);
                    if a.record.status == AssignmentStatus::Active && !connected {
                        a.record.status = AssignmentStatus::Abandoned;
                        a.record.detail = Some(format!("probe {} disconnected", a.record.probe));
                        abandoned.push(a.record.clone());
                    }
                }
                run_ids.push(run_id.clone());
            }
            (abandoned, run_ids)
        };
        for record in &abandoned {
            tracing::warn!(run_id = %record.run_id, probe = %record.probe, region = %record.region, "probe gone: moving its assignment");
            if let Err(e) = self.inner.store.update_assignment(record).await {
                tracing::error!(error = %e, "cannot record an abandoned assignment");
            }
        }
        for run_id in run_ids {
            if let Err(e) = self.dispatch_pending(&run_id).await {
                tracing::error!(run_id = %run_id, error = %e, "cannot reassign");
            }
            self.complete_if_done(&run_id);
        }
    }

    /// Tells the owner of `run_id` that it may be complete; the owner checks and ends it.
    pub(super) fn complete_if_done(&self, run_id: &str) {
        if let Some(run) = self.state().runs.get(run_id) {
            run.wake.notify_one();
        }
    }

    /// Whether every required region of `run_id` has reported (or is settled without).
    fn is_complete(&self, run_id: &str) -> bool {
        let state = self.state();
        state
            .runs
            .get(run_id)
            .is_some_and(|run| state::is_complete(run, Self::reach(&state)))
    }

    // ----- probes ------------------------------------------------------------------------

    /// The probe finished an assignment and announced how many results it produced.
    pub async fn assignment_finished(
        &self,
        probe: &str,
        msg: &AssignmentFinished,
    ) -> CoordinatorResult<()> {
        let record = {
            let mut state = self.state();
            state
                .runs
                .get_mut(&msg.run_id)
                .and_then(|run| run.assignments.get_mut(&msg.assignment_id))
                .filter(|a| a.record.probe == probe && a.record.status == AssignmentStatus::Active)
                .map(|a| {
                    a.record.status = AssignmentStatus::Finished;
                    a.record.expected_results = Some(i64::from(msg.results));
                    a.record.clone()
                })
        };
        let Some(record) = record else {
            return self.relayed_finished(probe, msg).await;
        };
        self.inner.store.update_assignment(&record).await?;
        self.complete_if_done(&msg.run_id);
        Ok(())
    }

    /// The probe cannot run an assignment: record why and try another probe of the region.
    pub async fn assignment_rejected(
        &self,
        probe: &str,
        msg: &AssignmentRejected,
    ) -> CoordinatorResult<()> {
        if !self.state().runs.contains_key(&msg.run_id) {
            return self.relayed_rejected(probe, msg).await;
        }
        let record = {
            let mut state = self.state();
            let Some(run) = state.runs.get_mut(&msg.run_id) else {
                return Ok(());
            };
            let Some(a) = run
                .assignments
                .get_mut(&msg.assignment_id)
                .filter(|a| a.record.probe == probe)
            else {
                return Ok(());
            };
            // A probe's reason can quote the plan it could not use: masked like results.
            let reason = run.secrets.scrub(&msg.reason);
            a.record.status = AssignmentStatus::Rejected;
            a.record.detail = Some(reason.clone());
            let record = a.record.clone();
            let _ = run.events.send(RunEvent::status(
                &msg.run_id,
                run.record.status,
                format!(
                    "probe {probe} ({}) cannot run the plan: {reason}",
                    record.region
                ),
            ));
            record
        };
        tracing::warn!(run_id = %msg.run_id, probe, reason = record.detail.as_deref().unwrap_or_default(), "assignment rejected");
        self.inner.store.update_assignment(&record).await?;
        self.dispatch_pending(&msg.run_id).await?;
        self.complete_if_done(&msg.run_id);
        Ok(())
    }

    /// How many checks the run's plan has: from memory while it runs, else from its report.
    pub fn check_count(&self, record: &RunRecord) -> u32 {
        if let Some(run) = self.state().runs.get(&record.run_id) {
            return run.plan.checks.len() as u32;
        }
        record
            .report_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<postflight_plan::Report>(j).ok())
            .map_or(0, |r| r.checks.len() as u32)
    }
}

/// How many active assignments each probe has, over every run but `except`.
pub(super) fn busy_counts(
    runs: &HashMap<String, ActiveRun>,
    except: &str,
) -> HashMap<String, usize> {
    let mut busy: HashMap<String, usize> = HashMap::new();
    for (run_id, run) in runs {
        if run_id == except {
            continue;
        }
        for a in run.assignments.values() {
            if a.record.status == AssignmentStatus::Active {
                *busy.entry(a.record.probe.clone()).or_default() += 1;
            }
        }
    }
    busy
}

/// The most regions one run may require.
pub(super) const MAX_REGIONS: usize = 100;
