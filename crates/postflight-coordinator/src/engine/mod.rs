//! The run lifecycle: pending → running → completed / cancelled / timed out.
//!
//! State lives in memory behind one lock (decisions are in [`state`], pure); every change is
//! persisted before it is announced, so a restarted coordinator resumes from the database:
//! runs continue, probes reconnect and replay what they buffered, replays are stored once.

mod monitor;
mod rollback;
pub mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use postflight_plan::report::{LatencySummary, RegionResult, RunResults, build_report};
use postflight_plan::secrets::Secrets;
use postflight_plan::sketch::LatencySketch;
use postflight_plan::vars::{Expander, ProcessEnv};
use postflight_plan::{CheckStatus, Plan, parse_plan};
use postflight_proto::v1;
use tokio::sync::broadcast;

use crate::error::{CoordinatorError, CoordinatorResult};
use crate::now_ms;
use crate::seal::Sealer;
use crate::storage::{
    AssignmentRecord, AssignmentStatus, ProbeRecord, ResultRecord, RunRecord, RunStatus, Store,
};
use state::{ActiveRun, LiveAssignment, LiveProbe, ProbeSender, Session};

/// Tunables of a coordinator.
#[derive(Debug, Clone)]
pub struct Config {
    /// Reported to probes.
    pub version: String,
    /// Run timeout when the request sets none.
    pub default_timeout: Duration,
    /// How often probes send a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a disconnected probe keeps its assignments before they move.
    pub reassign_after: Duration,
    /// Who this coordinator is in the rollback audit (`executed_by`).
    pub identity: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            default_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(5),
            reassign_after: Duration::from_secs(5),
            identity: "postflight-coordinator".to_owned(),
        }
    }
}

/// The coordinator: cheap to clone, shared by the gRPC services and background tasks.
pub struct Coordinator<S: Store> {
    inner: Arc<Inner<S>>,
}

impl<S: Store> Clone for Coordinator<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    store: S,
    sealer: Sealer,
    config: Config,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    probes: HashMap<String, LiveProbe>,
    runs: HashMap<String, ActiveRun>,
    monitors: HashMap<String, monitor::ActiveMonitor>,
    next_session: u64,
}

/// A run's end, handed to whoever waits for it (a monitor's round).
#[derive(Debug)]
pub struct Finished {
    /// The run's report.
    pub report: postflight_plan::Report,
    /// Its per-region results (the monitor's window needs their sketches).
    pub results: Vec<BTreeMap<String, RegionResult>>,
}

/// An assignment decided under the lock, to persist and send outside it.
struct Dispatch {
    record: AssignmentRecord,
    message: v1::CoordinatorMessage,
    tx: Option<ProbeSender>,
}

fn unix_ms_string(ms: i64) -> String {
    postflight_plan::report::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn event(run_id: &str, kind: v1::run_event::Kind) -> v1::RunEvent {
    v1::RunEvent {
        run_id: run_id.to_owned(),
        at_unix_ms: now_ms() as u64,
        kind: Some(kind),
    }
}

fn status_event(run_id: &str, status: RunStatus, detail: impl Into<String>) -> v1::RunEvent {
    event(
        run_id,
        v1::run_event::Kind::Status(v1::RunStatusChanged {
            status: status.as_str().to_owned(),
            detail: detail.into(),
        }),
    )
}

impl<S: Store> Coordinator<S> {
    /// A coordinator over `store`, resuming every run the store holds unfinished.
    pub async fn start(store: S, sealer: Sealer, config: Config) -> CoordinatorResult<Self> {
        let coordinator = Self {
            inner: Arc::new(Inner {
                store,
                sealer,
                config,
                state: Mutex::new(State::default()),
            }),
        };
        coordinator.resume().await?;
        Ok(coordinator)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough data; keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tunables.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store (for read-only API calls).
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    // ----- runs --------------------------------------------------------------------------

    /// Validates a plan and starts a run on the required regions' probes.
    pub async fn submit(
        &self,
        plan_yaml: &str,
        origin: &str,
        options: v1::RunOptions,
    ) -> CoordinatorResult<RunRecord> {
        let (plan, origin, regions) = self.accept_plan(plan_yaml, origin, &options)?;
        let timeout = if options.timeout_ms == 0 {
            self.inner.config.default_timeout
        } else {
            Duration::from_millis(options.timeout_ms)
        };
        let dry_run = options.dry_run || plan.rollback.as_ref().is_some_and(|r| r.dry_run);
        self.create_run(
            plan, plan_yaml, &origin, regions, timeout, dry_run, None, None,
        )
        .await
    }

    /// Parses a submitted plan and resolves its required regions.
    fn accept_plan(
        &self,
        plan_yaml: &str,
        origin: &str,
        options: &v1::RunOptions,
    ) -> CoordinatorResult<(Plan, String, Vec<String>)> {
        if plan_yaml.trim().is_empty() {
            return Err(CoordinatorError::invalid("plan_yaml", "the plan is empty"));
        }
        let origin = if origin.trim().is_empty() {
            "plan.yaml"
        } else {
            origin
        };
        // Plain variables were the CLI's to expand; the coordinator's own environment is not
        // consulted, so a leftover ${VAR} without default is reported, never guessed.
        let no_vars: HashMap<String, String> = HashMap::new();
        let plan = parse_plan(plan_yaml, origin, Expander::plan(&no_vars))
            .map_err(|e| CoordinatorError::invalid("plan_yaml", format!("invalid plan:\n{e}")))?;
        for (i, region) in options.regions.iter().enumerate() {
            if region.trim().is_empty() || region.contains(char::is_whitespace) {
                return Err(CoordinatorError::invalid(
                    format!("options.regions[{i}]"),
                    format!("`{region}` is not a region name"),
                ));
            }
        }
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
    async fn create_run(
        &self,
        plan: Plan,
        plan_yaml: &str,
        origin: &str,
        regions: Vec<String>,
        timeout: Duration,
        dry_run: bool,
        monitor_id: Option<String>,
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

    fn required_regions(&self, plan: &Plan, requested: &[String]) -> Vec<String> {
        let mut regions: Vec<String> = if !requested.is_empty() {
            requested.to_vec()
        } else if !plan.policy.regions.is_empty() {
            plan.policy.regions.clone()
        } else {
            self.state()
                .probes
                .values()
                .filter(|p| p.session.is_some())
                .map(|p| p.region.clone())
                .collect()
        };
        regions.sort();
        regions.dedup();
        regions
    }

    /// Puts a run in memory with its assignments and results, and arms its deadline.
    fn activate(
        &self,
        record: RunRecord,
        plan: Plan,
        plan_yaml: Arc<str>,
        assignments: Vec<AssignmentRecord>,
        results: Vec<ResultRecord>,
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
                .map(|a| {
                    (
                        a.assignment_id.clone(),
                        LiveAssignment {
                            record: a,
                            received: 0,
                        },
                    )
                })
                .collect(),
            result_count: 0,
            events,
            history: Vec::new(),
            done,
        };
        for stored in results {
            match stored_region_result(&stored) {
                Ok(result) => {
                    let _ = apply_result(&mut run, &stored, result);
                }
                Err(e) => {
                    tracing::warn!(result_id = %stored.result_id, error = %e, "skipping an unreadable stored result")
                }
            }
        }
        self.state().runs.insert(run_id.clone(), run);
        let this = self.clone();
        let wait = Duration::from_millis((deadline_unix_ms - now_ms()).max(0) as u64);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Err(e) = this
                .finalize(&run_id, RunStatus::TimedOut, "the run reached its timeout")
                .await
            {
                tracing::error!(run_id = %run_id, error = %e, "cannot end a timed-out run");
            }
        });
    }

    /// Gives unserved regions of `run_id` to connected probes, persists and sends.
    async fn dispatch_pending(&self, run_id: &str) -> CoordinatorResult<()> {
        let dispatches = {
            let mut guard = self.state();
            let state = &mut *guard;
            let busy = busy_counts(&state.runs, run_id);
            let Some(run) = state.runs.get_mut(run_id) else {
                return Ok(());
            };
            let picks = state::probes_to_assign(run, &state.probes, &busy);
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
                };
                run.assignments.insert(
                    record.assignment_id.clone(),
                    LiveAssignment {
                        record: record.clone(),
                        received: 0,
                    },
                );
                let message = v1::CoordinatorMessage {
                    kind: Some(v1::coordinator_message::Kind::Assignment(v1::Assignment {
                        assignment_id: record.assignment_id.clone(),
                        run_id: run_id.to_owned(),
                        plan_yaml: run.plan_yaml.to_string(),
                        deadline_unix_ms: run.deadline_unix_ms.max(0) as u64,
                    })),
                };
                let tx = state
                    .probes
                    .get(&probe)
                    .and_then(|p| p.session.as_ref())
                    .map(|s| s.tx.clone());
                dispatches.push(Dispatch {
                    record,
                    message,
                    tx,
                });
            }
            let started = !dispatches.is_empty() && run.record.status == RunStatus::Pending;
            if started {
                run.record.status = RunStatus::Running;
                run.record.started_ms = Some(now_ms());
                let _ = run.events.send(status_event(
                    run_id,
                    RunStatus::Running,
                    "probes are executing the plan",
                ));
            }
            (dispatches, started.then(|| run.record.clone()))
        };
        let (dispatches, started) = dispatches;
        for d in &dispatches {
            self.inner.store.insert_assignment(&d.record).await?;
        }
        if let Some(record) = started {
            self.inner.store.update_run(&record).await?;
        }
        for d in dispatches {
            tracing::info!(run_id, assignment = %d.record.assignment_id, probe = %d.record.probe, region = %d.record.region, "assigned");
            if let Some(tx) = d.tx {
                let _ = tx.send(Ok(d.message)).await;
            }
        }
        Ok(())
    }

    fn current_record(&self, run_id: &str) -> Option<RunRecord> {
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
            Some(_) => self.inner.store.results(run_id).await?.len() as u32,
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
    ) -> CoordinatorResult<(Vec<v1::RunEvent>, Option<broadcast::Receiver<v1::RunEvent>>)> {
        {
            let state = self.state();
            if let Some(run) = state.runs.get(run_id) {
                let receiver = run.events.subscribe();
                let mut backlog = vec![status_event(run_id, run.record.status, "")];
                backlog.extend(run.history.iter().cloned());
                return Ok((backlog, Some(receiver)));
            }
        }
        let report = self.report(run_id).await?;
        let record = self.inner.store.get_run(run_id).await?;
        let status = record.map_or(RunStatus::Completed, |r| r.status);
        Ok((
            vec![
                status_event(run_id, status, ""),
                event(run_id, v1::run_event::Kind::Report((&report).into())),
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
    async fn finalize(
        &self,
        run_id: &str,
        status: RunStatus,
        detail: &str,
    ) -> CoordinatorResult<()> {
        let Some(mut run) = self.state().runs.remove(run_id) else {
            return Ok(());
        };
        let finished = now_ms();
        let results = state::region_results(&run);
        let started_ms = run.record.started_ms.unwrap_or(run.record.created_ms);
        let report = build_report(&RunResults {
            plan: &run.plan,
            run_id,
            started_at: UNIX_EPOCH + Duration::from_millis(started_ms.max(0) as u64),
            finished_at: UNIX_EPOCH + Duration::from_millis(finished.max(0) as u64),
            required_regions: &run.record.regions,
            results: &results,
            env: &ProcessEnv,
        });
        let mut report = report;
        report.rollback.dry_run |= run.record.dry_run;
        // A monitor's round is judged by its monitor, over the window; a plain run acts now.
        if run.record.monitor_id.is_none() {
            let context = self.rollback_context(&run.plan, &report, None);
            let subject = format!("run:{run_id}");
            self.execute_rollback(&run.plan, &mut report.rollback, &context, &subject)
                .await;
        }
        run.record.status = status;
        run.record.finished_ms = Some(finished);
        run.record.verdict = Some(report.status.as_str().to_owned());
        run.record.report_json = Some(serde_json::to_string(&report).unwrap_or_default());
        run.record.rollback_json =
            Some(serde_json::to_string(&report.rollback).unwrap_or_default());
        self.inner.store.update_run(&run.record).await?;
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
            let tx = self.probe_tx(&probe);
            if let Some(tx) = tx {
                let message = v1::CoordinatorMessage {
                    kind: Some(v1::coordinator_message::Kind::Cancel(
                        v1::CancelAssignment {
                            assignment_id,
                            reason: detail.to_owned(),
                        },
                    )),
                };
                let _ = tx.send(Ok(message)).await;
            }
        }
        tracing::info!(
            run_id,
            status = status.as_str(),
            verdict = report.status.as_str(),
            "run ended"
        );
        let _ = run.events.send(status_event(run_id, status, detail));
        let _ = run
            .events
            .send(event(run_id, v1::run_event::Kind::Report((&report).into())));
        if let Some(done) = run.done.take() {
            let _ = done.send(Finished { report, results });
        }
        Ok(())
    }

    /// Puts back in memory every run the store holds unfinished (after a restart).
    async fn resume(&self) -> CoordinatorResult<()> {
        let runs = self.inner.store.unfinished_runs().await?;
        for record in runs {
            let run_id = record.run_id.clone();
            let plan_yaml = match self.inner.sealer.unseal(&record.plan_sealed) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => {
                    tracing::error!(run_id = %run_id, error = %e, "cannot resume a run");
                    let mut ended = record.clone();
                    ended.status = RunStatus::TimedOut;
                    ended.finished_ms = Some(now_ms());
                    self.inner.store.update_run(&ended).await?;
                    continue;
                }
            };
            let no_vars: HashMap<String, String> = HashMap::new();
            let plan = match parse_plan(&plan_yaml, &record.origin, Expander::plan(&no_vars)) {
                Ok(plan) => plan,
                Err(e) => {
                    tracing::error!(run_id = %run_id, error = %e, "a stored plan no longer parses");
                    continue;
                }
            };
            let assignments = self.inner.store.assignments(&run_id).await?;
            let results = self.inner.store.results(&run_id).await?;
            tracing::info!(run_id = %run_id, results = results.len(), "resuming run");
            self.activate(record, plan, plan_yaml.into(), assignments, results, None);
        }
        self.resume_monitors().await?;
        // Probes get a grace period to reconnect and claim their assignments.
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.inner.config.reassign_after).await;
            this.reassign_orphans().await;
        });
        Ok(())
    }

    /// Active assignments whose probe is not connected move to another probe of the region.
    async fn reassign_orphans(&self) {
        let (abandoned, run_ids) = {
            let mut guard = self.state();
            let state = &mut *guard;
            let mut abandoned = Vec::new();
            let mut run_ids = Vec::new();
            for (run_id, run) in state.runs.iter_mut() {
                for a in run.assignments.values_mut() {
                    let connected = state
                        .probes
                        .get(&a.record.probe)
                        .is_some_and(|p| p.session.is_some());
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
            self.complete_if_done(&run_id).await;
        }
    }

    async fn complete_if_done(&self, run_id: &str) {
        let done = {
            let state = self.state();
            state
                .runs
                .get(run_id)
                .is_some_and(|run| state::is_complete(run, &state.probes))
        };
        if done
            && let Err(e) = self
                .finalize(
                    run_id,
                    RunStatus::Completed,
                    "every required region reported",
                )
                .await
        {
            tracing::error!(run_id, error = %e, "cannot end a completed run");
        }
    }

    // ----- probes ------------------------------------------------------------------------

    fn probe_tx(&self, probe: &str) -> Option<ProbeSender> {
        self.state()
            .probes
            .get(probe)
            .and_then(|p| p.session.as_ref())
            .map(|s| s.tx.clone())
    }

    /// Registers a probe's stream, welcomes it and hands it the work waiting for its region;
    /// returns the session id that identifies this stream.
    pub async fn probe_connected(
        &self,
        hello: &v1::Hello,
        tx: ProbeSender,
    ) -> CoordinatorResult<u64> {
        let now = now_ms();
        let (session, drop, lost, run_ids) = {
            let mut guard = self.state();
            let state = &mut *guard;
            state.next_session += 1;
            let session = state.next_session;
            state.probes.insert(
                hello.name.clone(),
                LiveProbe {
                    region: hello.region.clone(),
                    labels: hello.labels.clone().into_iter().collect(),
                    version: hello.version.clone(),
                    session: Some(Session { id: session, tx }),
                    last_seen_ms: now,
                },
            );
            // What the probe still runs and we still want: kept. What it runs that we do
            // not want any more: dropped. What we think it runs but it lost: moved.
            let mut keep = std::collections::HashSet::new();
            let mut lost = Vec::new();
            for run in state.runs.values_mut() {
                for a in run.assignments.values_mut() {
                    if a.record.probe != hello.name || a.record.status != AssignmentStatus::Active {
                        continue;
                    }
                    if hello.active_assignments.contains(&a.record.assignment_id) {
                        keep.insert(a.record.assignment_id.clone());
                    } else {
                        a.record.status = AssignmentStatus::Abandoned;
                        a.record.detail =
                            Some(format!("probe {} restarted without it", hello.name));
                        lost.push(a.record.clone());
                    }
                }
            }
            let drop: Vec<String> = hello
                .active_assignments
                .iter()
                .filter(|id| !keep.contains(*id))
                .cloned()
                .collect();
            let run_ids: Vec<String> = state.runs.keys().cloned().collect();
            (session, drop, lost, run_ids)
        };
        self.inner
            .store
            .upsert_probe(&ProbeRecord {
                name: hello.name.clone(),
                region: hello.region.clone(),
                labels: hello.labels.clone().into_iter().collect(),
                version: hello.version.clone(),
                last_seen_ms: now,
            })
            .await?;
        for record in &lost {
            self.inner.store.update_assignment(record).await?;
        }
        tracing::info!(probe = %hello.name, region = %hello.region, session, "probe connected");
        let welcome = v1::CoordinatorMessage {
            kind: Some(v1::coordinator_message::Kind::Welcome(v1::Welcome {
                coordinator_version: self.inner.config.version.clone(),
                heartbeat_interval_ms: self.inner.config.heartbeat_interval.as_millis() as u32,
                drop_assignments: drop,
            })),
        };
        if let Some(tx) = self.probe_tx(&hello.name) {
            let _ = tx.send(Ok(welcome)).await;
        }
        // Work may be waiting for this region.
        for run_id in run_ids {
            self.dispatch_pending(&run_id).await?;
        }
        Ok(session)
    }

    /// A probe's stream ended; its assignments move after the grace period unless it is back.
    pub async fn probe_disconnected(&self, name: &str, session: u64) {
        let now = now_ms();
        let still_current = {
            let mut state = self.state();
            match state.probes.get_mut(name) {
                Some(p) if p.session.as_ref().is_some_and(|s| s.id == session) => {
                    p.session = None;
                    p.last_seen_ms = now;
                    Some(ProbeRecord {
                        name: name.to_owned(),
                        region: p.region.clone(),
                        labels: p.labels.clone(),
                        version: p.version.clone(),
                        last_seen_ms: now,
                    })
                }
                _ => None,
            }
        };
        let Some(record) = still_current else { return };
        tracing::warn!(probe = name, session, "probe disconnected");
        if let Err(e) = self.inner.store.upsert_probe(&record).await {
            tracing::error!(error = %e, "cannot record a probe's last sighting");
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.inner.config.reassign_after).await;
            this.reassign_orphans().await;
        });
    }

    /// A probe spoke (any message): it is alive.
    pub fn probe_seen(&self, name: &str) {
        if let Some(p) = self.state().probes.get_mut(name) {
            p.last_seen_ms = now_ms();
        }
    }

    /// Stores a batch of results; returns the ids to acknowledge (all of them: new ones are
    /// stored, replays were stored before, strays are dropped).
    pub async fn ingest(
        &self,
        probe: &str,
        batch: &[v1::CheckResult],
    ) -> CoordinatorResult<Vec<String>> {
        let received = now_ms();
        let mut records = Vec::with_capacity(batch.len());
        let mut parsed = Vec::with_capacity(batch.len());
        {
            let state = self.state();
            for (i, wire) in batch.iter().enumerate() {
                let Some(run) = state.runs.get(&wire.run_id) else {
                    tracing::debug!(run_id = %wire.run_id, probe, "result for a run that is not active: dropped");
                    continue;
                };
                let Some(assignment) = run.assignments.get(&wire.assignment_id) else {
                    tracing::warn!(assignment = %wire.assignment_id, probe, "result for an unknown assignment: dropped");
                    continue;
                };
                if assignment.record.probe != probe {
                    return Err(CoordinatorError::invalid(
                        format!("results[{i}].assignment_id"),
                        format!("assignment {} belongs to another probe", wire.assignment_id),
                    ));
                }
                if wire.check_index as usize >= run.plan.checks.len() {
                    return Err(CoordinatorError::invalid(
                        format!("results[{i}].check_index"),
                        format!("the plan has {} checks", run.plan.checks.len()),
                    ));
                }
                if wire.result_id.is_empty() {
                    return Err(CoordinatorError::invalid(
                        format!("results[{i}].result_id"),
                        "empty",
                    ));
                }
                let result = postflight_proto::region_result(wire)
                    .map_err(|e| CoordinatorError::from(e.within(&format!("results[{i}]"))))?;
                let message = run.secrets.scrub(&wire.message);
                records.push(ResultRecord {
                    result_id: wire.result_id.clone(),
                    run_id: wire.run_id.clone(),
                    assignment_id: wire.assignment_id.clone(),
                    region: assignment.record.region.clone(),
                    probe: probe.to_owned(),
                    check_index: i64::from(wire.check_index),
                    status: result.status.as_str().to_owned(),
                    message: message.clone(),
                    duration_ms: wire.duration_ms,
                    requests: result.requests.count as i64,
                    request_errors: result.requests.errors as i64,
                    latency_json: result
                        .latency
                        .map(|l| serde_json::to_string(&l).unwrap_or_default()),
                    sketch: wire.latency_sketch.clone(),
                    received_ms: received,
                });
                parsed.push(RegionResult { message, ..result });
            }
        }
        let inserted = self.inner.store.insert_results(&records).await?;
        let mut touched = Vec::new();
        {
            let mut state = self.state();
            for ((record, result), new) in records.iter().zip(parsed).zip(inserted) {
                if !new {
                    continue;
                }
                if let Some(run) = state.runs.get_mut(&record.run_id)
                    && let Some(event) = apply_result(run, record, result)
                {
                    let _ = run.events.send(event);
                    touched.push(record.run_id.clone());
                }
            }
        }
        touched.sort();
        touched.dedup();
        for run_id in touched {
            self.complete_if_done(&run_id).await;
        }
        Ok(batch.iter().map(|r| r.result_id.clone()).collect())
    }

    /// The probe finished an assignment and announced how many results it produced.
    pub async fn assignment_finished(
        &self,
        probe: &str,
        msg: &v1::AssignmentFinished,
    ) -> CoordinatorResult<()> {
        let record = {
            let mut state = self.state();
            let Some(a) = state
                .runs
                .get_mut(&msg.run_id)
                .and_then(|run| run.assignments.get_mut(&msg.assignment_id))
                .filter(|a| a.record.probe == probe && a.record.status == AssignmentStatus::Active)
            else {
                return Ok(());
            };
            a.record.status = AssignmentStatus::Finished;
            a.record.expected_results = Some(i64::from(msg.results));
            a.record.clone()
        };
        self.inner.store.update_assignment(&record).await?;
        self.complete_if_done(&msg.run_id).await;
        Ok(())
    }

    /// The probe cannot run an assignment: record why and try another probe of the region.
    pub async fn assignment_rejected(
        &self,
        probe: &str,
        msg: &v1::AssignmentRejected,
    ) -> CoordinatorResult<()> {
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
            a.record.status = AssignmentStatus::Rejected;
            a.record.detail = Some(msg.reason.clone());
            let record = a.record.clone();
            let _ = run.events.send(status_event(
                &msg.run_id,
                run.record.status,
                format!(
                    "probe {probe} ({}) cannot run the plan: {}",
                    record.region, msg.reason
                ),
            ));
            record
        };
        tracing::warn!(run_id = %msg.run_id, probe, reason = %msg.reason, "assignment rejected");
        self.inner.store.update_assignment(&record).await?;
        self.dispatch_pending(&msg.run_id).await?;
        self.complete_if_done(&msg.run_id).await;
        Ok(())
    }

    /// Every probe ever seen, with live connection state.
    pub async fn list_probes(&self) -> CoordinatorResult<Vec<(ProbeRecord, bool)>> {
        let stored = self.inner.store.list_probes().await?;
        let state = self.state();
        Ok(stored
            .into_iter()
            .map(|mut record| match state.probes.get(&record.name) {
                Some(live) => {
                    record.last_seen_ms = record.last_seen_ms.max(live.last_seen_ms);
                    (record, live.session.is_some())
                }
                None => (record, false),
            })
            .collect())
    }

    /// The wire form of a run.
    pub fn run_message(&self, record: &RunRecord, results: u32) -> v1::Run {
        let rollback: Option<postflight_plan::rollback::RollbackReport> = record
            .rollback_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok());
        let checks = record
            .report_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<postflight_plan::Report>(j).ok())
            .map_or(0, |r| r.checks.len() as u32);
        let checks = self
            .state()
            .runs
            .get(&record.run_id)
            .map_or(checks, |r| r.plan.checks.len() as u32);
        v1::Run {
            run_id: record.run_id.clone(),
            plan: record.plan_name.clone(),
            status: record.status.as_str().to_owned(),
            verdict: record.verdict.clone().unwrap_or_default(),
            created_at: unix_ms_string(record.created_ms),
            started_at: record.started_ms.map(unix_ms_string).unwrap_or_default(),
            finished_at: record.finished_ms.map(unix_ms_string).unwrap_or_default(),
            regions: record.regions.clone(),
            checks,
            results,
            rollback: rollback.as_ref().map(Into::into),
            dry_run: record.dry_run,
        }
    }
}

/// How many active assignments each probe has, over every run but `except`.
fn busy_counts(runs: &HashMap<String, ActiveRun>, except: &str) -> HashMap<String, usize> {
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

/// Adds a stored result to the run in memory; returns the event to announce.
fn apply_result(
    run: &mut ActiveRun,
    record: &ResultRecord,
    result: RegionResult,
) -> Option<v1::RunEvent> {
    let index = usize::try_from(record.check_index).ok()?;
    let check_name = run.plan.checks.get(index)?.name.clone();
    if let Some(a) = run.assignments.get_mut(&record.assignment_id) {
        a.received += 1;
    }
    let status = result.status;
    run.results
        .get_mut(index)?
        .entry(record.region.clone())
        .or_default()
        .push((record.assignment_id.clone(), result));
    run.result_count += 1;
    let event = event(
        &record.run_id,
        v1::run_event::Kind::Result(v1::ResultReceived {
            region: record.region.clone(),
            probe: record.probe.clone(),
            check_index: index as u32,
            check_name,
            status: status.as_str().to_owned(),
            message: record.message.clone(),
            duration_ms: record.duration_ms,
        }),
    );
    run.history.push(event.clone());
    Some(event)
}

/// A stored result as the report builder consumes it.
fn stored_region_result(r: &ResultRecord) -> Result<RegionResult, String> {
    let status = match r.status.as_str() {
        "pass" => CheckStatus::Pass,
        "warn" => CheckStatus::Warn,
        "fail" => CheckStatus::Fail,
        other => return Err(format!("unknown status `{other}`")),
    };
    let latency: Option<LatencySummary> = match &r.latency_json {
        Some(j) => serde_json::from_str(j).map_err(|e| e.to_string())?,
        None => None,
    };
    Ok(RegionResult {
        status,
        message: r.message.clone(),
        duration: Duration::from_secs_f64(r.duration_ms.max(0.0) / 1e3),
        requests: postflight_plan::report::RequestCount {
            count: r.requests.max(0) as u64,
            errors: r.request_errors.max(0) as u64,
        },
        latency,
        sketch: LatencySketch::from_bytes(&r.sketch)?,
    })
}
