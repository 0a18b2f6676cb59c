//! The run lifecycle: pending → running → completed / cancelled / timed out.
//!
//! State lives in memory behind one lock (decisions are in [`state`], pure); every change is
//! persisted before it is announced, so a restarted coordinator resumes from the database:
//! runs continue, probes reconnect and replay what they buffered, replays are stored once.

pub mod link;
mod monitor;
mod rollback;
pub mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use postflight_plan::report::{RegionResult, RunResults, build_report};
use postflight_plan::rollback::RunEnd;
use postflight_plan::secrets::Secrets;
use postflight_plan::vars::{Expander, ProcessEnv};
use postflight_plan::{Plan, parse_plan};
use postflight_proto::v1;
use postflight_rollback::Prepared;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{CoordinatorError, CoordinatorResult};
use crate::metrics::{Metrics, RegionLabels, StatusLabels};
use crate::seal::Sealer;
use crate::storage::{
    AssignmentRecord, AssignmentStatus, BatchRecord, ProbeRecord, RunRecord, RunStatus, Store,
    StoreError,
};
use postflight_ops::host::now_ms;
use state::{ActiveRun, Arrival, LiveAssignment, LiveProbe, ProbeLink, Session};

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
    /// Whether probes prove their identity (per-probe tokens or mutual TLS): then only the
    /// regions of probes that did count where a plan names no regions, so a holder of a
    /// shared credential cannot add regions to a quorum.
    pub authenticated_regions_only: bool,
    /// Whether plans may run `command` actions here: a command runs any program on this
    /// machine, so it takes the operator's explicit consent (`--allow-command-actions`).
    pub allow_command_actions: bool,
    /// How long a probe that no longer connects stays in the probe list.
    pub forget_probes_after: Duration,
}

/// Probes kept in the probe list at most; the least recently seen go first. Probe names
/// change with every rollout of a sidecar (`$(POD_NAME)`), so the list must not grow forever.
pub const MAX_KNOWN_PROBES: u32 = 10_000;

/// Probes per `ListProbes` page at most.
pub const MAX_PROBES_PAGE: u32 = 1_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            default_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(5),
            reassign_after: Duration::from_secs(5),
            identity: "postflight-coordinator".to_owned(),
            allow_command_actions: false,
            authenticated_regions_only: false,
            forget_probes_after: Duration::from_secs(7 * 24 * 3600),
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
    /// Shared with the result writer, which must not hold the coordinator itself (it would
    /// keep it, and so its own channel, alive forever).
    store: Arc<S>,
    sealer: Sealer,
    config: Config,
    state: Mutex<State>,
    writer: mpsc::Sender<WriteJob>,
    metrics: Arc<Metrics>,
    actions: rollback::ActionsInFlight,
    /// Set by [`Coordinator::shut_down`]: no new probe sessions.
    stopping: std::sync::atomic::AtomicBool,
    /// Every task the coordinator starts (timers, loops, monitors, actions), so that
    /// shutting down waits for them instead of abandoning them.
    tasks: TaskTracker,
    /// Cancelled at shutdown: timers and loops end; actions are not cancelled (they get the
    /// grace period, see [`Coordinator::settle_actions`]).
    cancel: CancellationToken,
}

/// Result batches of one probe message, waiting to be written with other probes' batches.
struct WriteJob {
    batches: Vec<BatchRecord>,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Results of one message that belong to one assignment.
struct Group {
    run_id: String,
    assignment_id: String,
    region: String,
    /// New results, without their run and assignment ids.
    results: Vec<v1::CheckResult>,
    /// Ids of results stored before, and of surplus ones: acknowledged, not stored.
    replays: Vec<String>,
    /// Results dropped because their check already had one from this assignment.
    surplus: u64,
}

/// Batches written per transaction at most: enough to amortise a commit, few enough to keep
/// acknowledgements prompt.
const GROUP_BATCHES: usize = 512;

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
    /// How it ended (a round cut off by its deadline may not act).
    pub end: RunEnd,
}

/// An assignment decided under the lock, to persist and send outside it.
struct Dispatch {
    record: AssignmentRecord,
    message: v1::CoordinatorMessage,
    link: Option<ProbeLink>,
}

/// Counts stored results in the metrics: one label lookup per check and status of a group,
/// not per result, since this runs for every result the coordinator ingests.
fn count_results(metrics: &Metrics, plan: &Plan, region: &str, results: &[v1::CheckResult]) {
    metrics.results_ingested.inc_by(results.len() as u64);
    let mut counts: BTreeMap<(u32, i32), u64> = BTreeMap::new();
    {
        let durations = metrics.check_duration.get_or_create(&RegionLabels {
            region: metrics.region(region),
        });
        for r in results {
            *counts.entry((r.check_index, r.status)).or_default() += 1;
            durations.observe(r.duration_ms / 1000.0);
        }
    }
    for ((index, status), n) in counts {
        let check = plan
            .checks
            .get(index as usize)
            .map_or("_unknown", |c| c.name.as_str());
        let status = match v1::CheckStatus::try_from(status) {
            Ok(v1::CheckStatus::Pass) => "pass",
            Ok(v1::CheckStatus::Warn) => "warn",
            Ok(v1::CheckStatus::Fail) => "fail",
            _ => "unspecified",
        };
        metrics.count_check_results(check, region, status, n);
    }
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
        let (writer, jobs) = mpsc::channel(1024);
        let store = Arc::new(store);
        let tasks = TaskTracker::new();
        // Ends when the last handle of the coordinator (and so the sender) is gone.
        tasks.spawn(write_results(store.clone(), jobs));
        let coordinator = Self {
            inner: Arc::new(Inner {
                store,
                sealer,
                config,
                state: Mutex::new(State::default()),
                writer,
                metrics: Arc::new(Metrics::new()),
                actions: rollback::ActionsInFlight::default(),
                stopping: std::sync::atomic::AtomicBool::new(false),
                tasks,
                cancel: CancellationToken::new(),
            }),
        };
        coordinator.recover_interrupted(false).await?;
        coordinator.watch_stale_claims();
        coordinator.forget_old_probes().await;
        coordinator.watch_probe_list();
        coordinator.resume().await?;
        Ok(coordinator)
    }

    /// Starts `task` as one of the coordinator's own: tracked, and ended at shutdown.
    pub(crate) fn spawn_owned<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Starts `task` tracked but not cancelled at shutdown (a rollback action: it gets the
    /// grace period to record its outcome).
    pub(crate) fn spawn_tracked<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(task);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough data; keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Its Prometheus metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Sets the gauges that describe the present (connected probes by region, active runs)
    /// just before a scrape, from the live state rather than from increments that could drift.
    pub fn refresh_gauges(&self) {
        let metrics = &self.inner.metrics;
        let state = self.state();
        let mut by_region: BTreeMap<String, i64> = BTreeMap::new();
        // Regions whose probes all left show 0 rather than vanishing, so "region silent"
        // alerts can see them.
        for probe in state.probes.values() {
            let count = by_region.entry(metrics.region(&probe.region)).or_default();
            if probe.session.is_some() {
                *count += 1;
            }
        }
        metrics.probes_connected.clear();
        for (region, n) in by_region {
            metrics
                .probes_connected
                .get_or_create(&RegionLabels { region })
                .set(n);
        }
        metrics.runs_active.set(state.runs.len() as i64);
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
        self.inner.metrics.runs_submitted.inc();
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
            let only_authenticated = self.inner.config.authenticated_regions_only;
            self.state()
                .probes
                .values()
                .filter(|p| p.session.is_some() && (p.authenticated || !only_authenticated))
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
        };
        for batch in batches {
            match decode_batch(&batch) {
                Ok(results) => {
                    for wire in results {
                        let id = id_hash(&wire.result_id);
                        // Only each check's first result counts; stores written by older
                        // versions may hold more.
                        if wire.check_index as usize >= run.plan.checks.len() {
                            tracing::warn!(run_id = %batch.run_id, result_id = %wire.result_id, "unusable result: no such check");
                            continue;
                        }
                        let Some(a) = run.assignments.get_mut(&batch.assignment_id) else {
                            continue;
                        };
                        if a.arrive(wire.check_index as usize, id) != Arrival::New {
                            continue;
                        }
                        a.received += 1;
                        run.result_count += 1;
                        use_result(
                            &mut run,
                            &batch.run_id,
                            &batch.assignment_id,
                            &batch.region,
                            &batch.probe,
                            &wire,
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(run_id = %batch.run_id, error = %e, "skipping an unreadable stored batch")
                }
            }
        }
        // The deadline timer ends with the run (see `finalize`) or at shutdown.
        let timer = self.inner.cancel.child_token();
        run.timer = timer.clone();
        self.state().runs.insert(run_id.clone(), run);
        let this = self.clone();
        let wait = Duration::from_millis((deadline_unix_ms - now_ms()).max(0) as u64);
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = timer.cancelled() => {}
                () = tokio::time::sleep(wait) => {
                    if let Err(e) = this
                        .finalize(&run_id, RunStatus::TimedOut, "the run reached its timeout")
                        .await
                    {
                        tracing::error!(run_id = %run_id, error = %e, "cannot end a timed-out run");
                    }
                }
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
                    LiveAssignment::new(record.clone()),
                );
                let message = v1::CoordinatorMessage {
                    kind: Some(v1::coordinator_message::Kind::Assignment(v1::Assignment {
                        assignment_id: record.assignment_id.clone(),
                        run_id: run_id.to_owned(),
                        plan_yaml: run.plan_yaml.to_string(),
                        deadline_unix_ms: run.deadline_unix_ms.max(0) as u64,
                    })),
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
            if let Some(link) = d.link {
                link.send(Ok(d.message));
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
        run.timer.cancel();
        let finished = now_ms();
        let results = state::region_results(&run);
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
        if let Err(e) = self.inner.store.update_run(&run.record).await {
            // The decision is not stored: its action must not start. Withdrawn, the claim lets
            // the run decide again when it resumes (it is still unfinished in the store).
            if let Some(action) = claimed {
                self.release_claim(&action.subject).await;
            }
            return Err(e.into());
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
                let message = v1::CoordinatorMessage {
                    kind: Some(v1::coordinator_message::Kind::Cancel(
                        v1::CancelAssignment {
                            assignment_id,
                            reason: detail.to_owned(),
                        },
                    )),
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
        let _ = run.events.send(status_event(run_id, status, detail));
        let _ = run
            .events
            .send(event(run_id, v1::run_event::Kind::Report((&report).into())));
        if let Some(done) = run.done.take() {
            let _ = done.send(Finished {
                report,
                results,
                end,
            });
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
            let results = self.inner.store.batches(&run_id).await?;
            tracing::info!(run_id = %run_id, results = results.len(), "resuming run");
            self.activate(record, plan, plan_yaml.into(), assignments, results, None);
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

    fn probe_link(&self, probe: &str) -> Option<ProbeLink> {
        self.state()
            .probes
            .get(probe)
            .and_then(|p| p.session.as_ref())
            .map(|s| s.link.clone())
    }

    /// Registers a probe's stream, welcomes it and hands it the work waiting for its region;
    /// returns the session id that identifies this stream. `authenticated` says whether its
    /// name and region are bound to its credential. A second live stream for a name is
    /// refused: two probes sharing a name would take each other's work.
    pub async fn probe_connected(
        &self,
        hello: &v1::Hello,
        authenticated: bool,
        link: ProbeLink,
    ) -> CoordinatorResult<u64> {
        let now = now_ms();
        if authenticated {
            self.inner.metrics.name_regions([hello.region.as_str()]);
        }
        self.inner
            .metrics
            .probe_connections
            .get_or_create(&RegionLabels {
                region: self.inner.metrics.region(&hello.region),
            })
            .inc();
        if self
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(CoordinatorError::Unavailable(
                "the coordinator is stopping; reconnect shortly".to_owned(),
            ));
        }
        let (session, drop, lost, run_ids) = {
            let mut guard = self.state();
            let state = &mut *guard;
            if let Some(live) = state
                .probes
                .get(&hello.name)
                .and_then(|p| p.session.as_ref())
                .filter(|s| !s.link.is_closed())
            {
                return Err(CoordinatorError::AlreadyExists(format!(
                    "probe {} is already connected (session {}): give every probe its own \
                     --name; a probe that lost its connection is let back in once the old \
                     stream is gone",
                    hello.name, live.id
                )));
            }
            state.next_session += 1;
            let session = state.next_session;
            if state.probes.len() >= MAX_KNOWN_PROBES as usize
                && !state.probes.contains_key(&hello.name)
            {
                forget_least_recent(&mut state.probes);
            }
            state.probes.insert(
                hello.name.clone(),
                LiveProbe {
                    region: hello.region.clone(),
                    labels: hello.labels.clone().into_iter().collect(),
                    version: hello.version.clone(),
                    session: Some(Session {
                        id: session,
                        link: link.clone(),
                    }),
                    last_seen_ms: now,
                    authenticated,
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
                        // It continues where it was cut off, replaying what was not acked.
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
        // Registered: from here on a failure unregisters it, so that no session that
        // looks connected is left without a stream.
        let welcomed = async {
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
            link.send(Ok(v1::CoordinatorMessage {
                kind: Some(v1::coordinator_message::Kind::Welcome(v1::Welcome {
                    coordinator_version: self.inner.config.version.clone(),
                    heartbeat_interval_ms: self.inner.config.heartbeat_interval.as_millis() as u32,
                    drop_assignments: drop,
                })),
            }));
            // Work may be waiting for this region.
            for run_id in run_ids {
                self.dispatch_pending(&run_id).await?;
            }
            Ok::<(), CoordinatorError>(())
        };
        if let Err(e) = welcomed.await {
            link.cut();
            self.probe_disconnected(&hello.name, session).await;
            return Err(e);
        }
        Ok(session)
    }

    /// Stops serving probes: no new sessions, every probe stream ends, and this waits (at
    /// most `within`) until each stream's reader has finished what it was doing, so that a
    /// batch of results being written is stored and acknowledged rather than lost. Probes
    /// replay whatever was not acknowledged to the next coordinator.
    pub async fn shut_down(&self, within: Duration) {
        use std::sync::atomic::Ordering;
        self.inner.stopping.store(true, Ordering::SeqCst);
        let links: Vec<ProbeLink> = self
            .state()
            .probes
            .values()
            .filter_map(|p| p.session.as_ref().map(|s| s.link.clone()))
            .collect();
        // Timers and loops end now; rollback actions keep running (see `settle_actions`).
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        tracing::info!(probes = links.len(), "closing probe streams");
        for link in &links {
            link.close();
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let open = self
                .state()
                .probes
                .values()
                .filter(|p| p.session.is_some())
                .count();
            if open == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(open, "probe streams still open at shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        self.spawn_owned(async move {
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
        batch: Vec<v1::CheckResult>,
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
                    _ => match state.runs.get(&wire.run_id).and_then(|run| {
                        run.assignments
                            .get(&wire.assignment_id)
                            .map(|a| (a.record.probe == probe, &*run.plan))
                    }) {
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
                    validate_result(wire, plan)
                        .map_err(|e| CoordinatorError::from(e.within(&format!("results[{i}]"))))?;
                }
            }
            for mut wire in batch {
                let same = groups.last().is_some_and(|g| {
                    g.run_id == wire.run_id && g.assignment_id == wire.assignment_id
                });
                if !same {
                    let region = state
                        .runs
                        .get(&wire.run_id)
                        .and_then(|run| run.assignments.get(&wire.assignment_id))
                        .map(|a| a.record.region.clone());
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
                let Some(run) = state.runs.get_mut(&group.run_id) else {
                    continue;
                };
                let arrival = run
                    .assignments
                    .get_mut(&group.assignment_id)
                    .map(|a| a.arrive(wire.check_index as usize, id_hash(&wire.result_id)));
                match arrival {
                    Some(Arrival::New) => {}
                    Some(Arrival::Surplus) => {
                        if group.surplus == 0
                            && run
                                .assignments
                                .get(&group.assignment_id)
                                .is_some_and(|a| a.surplus == 1)
                        {
                            tracing::warn!(run_id = %group.run_id, probe, assignment_id = %group.assignment_id, check_index = wire.check_index, "a second result for a check: dropped (counted in postflight_results_surplus_total)");
                        }
                        group.surplus += 1;
                        group.replays.push(wire.result_id);
                        continue;
                    }
                    Some(Arrival::Replay) | None => {
                        group.replays.push(wire.result_id);
                        continue;
                    }
                }
                if run.secrets.has_any() {
                    wire.message = run.secrets.scrub(&wire.message);
                }
                // The row holds them once, the plan holds the names: results do not repeat them.
                wire.run_id.clear();
                wire.assignment_id.clear();
                wire.check_name.clear();
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
                data: encode_results(&g.results),
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
                    if let Some(a) = state
                        .runs
                        .get_mut(&g.run_id)
                        .and_then(|run| run.assignments.get_mut(&g.assignment_id))
                    {
                        for r in &g.results {
                            a.forget(r.check_index as usize);
                        }
                    }
                }
                return Err(StoreError::Grouped(e).into());
            }
        }
        let mut touched: Vec<String> = Vec::new();
        let mut plans: Vec<Option<Arc<Plan>>> = Vec::with_capacity(groups.len());
        {
            let mut state = self.state();
            for g in &groups {
                let Some(run) = state.runs.get_mut(&g.run_id) else {
                    plans.push(None);
                    continue;
                };
                plans.push(Some(run.plan.clone()));
                if let Some(a) = run.assignments.get_mut(&g.assignment_id) {
                    a.received += g.results.len() as u32;
                }
                run.result_count += g.results.len() as u32;
                for wire in &g.results {
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
        for (g, plan) in groups.iter().zip(&plans) {
            self.inner.metrics.results_surplus.inc_by(g.surplus);
            if let Some(plan) = plan {
                count_results(&self.inner.metrics, plan, &g.region, &g.results);
            }
        }
        for run_id in touched {
            self.complete_if_done(&run_id).await;
        }
        let mut ack = strays;
        for g in groups {
            ack.extend(g.replays);
            ack.extend(g.results.into_iter().map(|r| r.result_id));
        }
        Ok(ack)
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
            // A probe's reason can quote the plan it could not use: masked like results.
            let reason = run.secrets.scrub(&msg.reason);
            a.record.status = AssignmentStatus::Rejected;
            a.record.detail = Some(reason.clone());
            let record = a.record.clone();
            let _ = run.events.send(status_event(
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
        self.complete_if_done(&msg.run_id).await;
        Ok(())
    }

    /// A page of probes by name with their live connection state, after the name `after`;
    /// also the name to continue after when more follow.
    pub async fn list_probes(
        &self,
        after: &str,
        limit: u32,
    ) -> CoordinatorResult<(Vec<(ProbeRecord, bool)>, Option<String>)> {
        let limit = limit.clamp(1, MAX_PROBES_PAGE);
        // One more than asked tells whether another page follows.
        let mut stored = self.inner.store.list_probes(after, limit + 1).await?;
        let next = if stored.len() > limit as usize {
            stored.truncate(limit as usize);
            stored.last().map(|p| p.name.clone())
        } else {
            None
        };
        let state = self.state();
        let page = stored
            .into_iter()
            .map(|mut record| match state.probes.get(&record.name) {
                Some(live) => {
                    record.last_seen_ms = record.last_seen_ms.max(live.last_seen_ms);
                    (record, live.session.is_some())
                }
                None => (record, false),
            })
            .collect();
        Ok((page, next))
    }

    /// Forgets probes not seen for `forget_probes_after`, and the least recently seen beyond
    /// [`MAX_KNOWN_PROBES`]. Connected probes are recorded as seen now first, so none of them
    /// is forgotten.
    async fn forget_old_probes(&self) {
        let now = now_ms();
        let live: Vec<ProbeRecord> = self
            .state()
            .probes
            .iter()
            .filter(|(_, p)| p.session.is_some())
            .map(|(name, p)| ProbeRecord {
                name: name.clone(),
                region: p.region.clone(),
                labels: p.labels.clone(),
                version: p.version.clone(),
                last_seen_ms: now,
            })
            .collect();
        for record in &live {
            if let Err(e) = self.inner.store.upsert_probe(record).await {
                tracing::error!(error = %e, "cannot record a probe's last sighting");
                return;
            }
        }
        let horizon =
            i64::try_from(self.inner.config.forget_probes_after.as_millis()).unwrap_or(i64::MAX);
        match self
            .inner
            .store
            .forget_probes(now.saturating_sub(horizon), MAX_KNOWN_PROBES)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(forgotten = n, "forgot probes that no longer connect"),
            Err(e) => tracing::error!(error = %e, "cannot forget old probes"),
        }
        // Disconnected probes forgotten in storage are forgotten in memory too.
        let mut state = self.state();
        let cutoff = now.saturating_sub(horizon);
        state
            .probes
            .retain(|_, p| p.session.is_some() || p.last_seen_ms >= cutoff);
    }

    /// Forgets old probes every hour.
    fn watch_probe_list(&self) {
        let this = self.clone();
        self.spawn_owned(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            every.tick().await;
            loop {
                every.tick().await;
                this.forget_old_probes().await;
            }
        });
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

/// Group commit: the batches of every probe that arrive while a transaction is being
/// written go into the next one, so the database sees few large transactions however
/// many streams there are.
async fn write_results<S: Store>(store: Arc<S>, mut jobs: mpsc::Receiver<WriteJob>) {
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

/// Forgets the disconnected probe seen least recently (from memory; storage follows on the
/// next [`Coordinator::forget_old_probes`]), so that probes connecting under ever new names
/// cannot grow the coordinator without bound.
fn forget_least_recent(probes: &mut HashMap<String, LiveProbe>) {
    let oldest = probes
        .iter()
        .filter(|(_, p)| p.session.is_none())
        .min_by_key(|(_, p)| p.last_seen_ms)
        .map(|(name, _)| name.clone());
    if let Some(name) = oldest {
        probes.remove(&name);
    }
}

/// Checks of a wire result before it is stored: it must belong to a check of the plan and
/// satisfy [`postflight_proto::check_result_fields`]. The sketch is only checked for shape
/// here; it is decoded when the result is used.
fn validate_result(r: &v1::CheckResult, plan: &Plan) -> Result<(), postflight_proto::ConvertError> {
    let Some(check) = plan.checks.get(r.check_index as usize) else {
        return Err(postflight_proto::ConvertError {
            field: "check_index".to_owned(),
            reason: format!("the plan has {} checks", plan.checks.len()),
        });
    };
    postflight_proto::check_result_fields(r, check.max_requests())
}

/// The most regions one run may require.
const MAX_REGIONS: usize = 100;

/// 128 bits of a result id: replays are recognised in memory without keeping every id.
fn id_hash(id: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut first = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut first);
    let mut second = std::collections::hash_map::DefaultHasher::new();
    (0xA5u8, id).hash(&mut second);
    (u128::from(first.finish()) << 64) | u128::from(second.finish())
}

/// Results encoded as a `ResultBatch` (field 1, repeated), without copying them.
fn encode_results(results: &[v1::CheckResult]) -> Vec<u8> {
    let len: usize = results
        .iter()
        .map(|r| prost::encoding::message::encoded_len(1, r))
        .sum();
    let mut out = Vec::with_capacity(len);
    for r in results {
        prost::encoding::message::encode(1, r, &mut out);
    }
    out
}

/// The results of a stored batch, with their ids put back.
fn decode_batch(batch: &BatchRecord) -> Result<Vec<v1::CheckResult>, String> {
    use prost::Message;
    let decoded = v1::ResultBatch::decode(batch.data.as_slice()).map_err(|e| e.to_string())?;
    Ok(decoded
        .results
        .into_iter()
        .map(|r| v1::CheckResult {
            run_id: batch.run_id.clone(),
            assignment_id: batch.assignment_id.clone(),
            ..r
        })
        .collect())
}

/// Keeps an assignment's first result for a check for the report, and makes its event.
fn use_result(
    run: &mut ActiveRun,
    run_id: &str,
    assignment_id: &str,
    region: &str,
    probe: &str,
    wire: &v1::CheckResult,
) -> Option<v1::RunEvent> {
    let index = wire.check_index as usize;
    let per_region = run.results.get_mut(index)?;
    if per_region
        .get(region)
        .is_some_and(|slot| slot.iter().any(|(a, _)| a == assignment_id))
    {
        return None;
    }
    let max_requests = run.plan.checks.get(index).map_or(0, |c| c.max_requests());
    let result = match postflight_proto::region_result(wire, max_requests) {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(result_id = %wire.result_id, error = %e, "unusable result");
            return None;
        }
    };
    let status = result.status;
    per_region
        .entry(region.to_owned())
        .or_default()
        .push((assignment_id.to_owned(), result));
    let event = event(
        run_id,
        v1::run_event::Kind::Result(v1::ResultReceived {
            region: region.to_owned(),
            probe: probe.to_owned(),
            check_index: index as u32,
            check_name: run
                .plan
                .checks
                .get(index)
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            status: status.as_str().to_owned(),
            message: wire.message.clone(),
            duration_ms: wire.duration_ms,
        }),
    );
    run.history.push(event.clone());
    Some(event)
}
