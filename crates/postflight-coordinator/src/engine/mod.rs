//! The coordinator's engine: runs, probes and the results between them.
//!
//! - `runs`: a run's life (pending → running → completed / cancelled / timed out), its
//!   report and rollback decision, resuming after a restart;
//! - `ingest`: results in, deduplicated and group-committed;
//! - `probes`: probe sessions and the probe list;
//! - `monitor`: monitors, round after round; `rollback`: claiming and running actions;
//! - `relay`: work across coordinators sharing one database (a run's regions served by
//!   probes connected to other coordinators, which relay assignments and store results);
//! - [`state`]: the pure decisions over the in-memory state (who gets which region, when a
//!   run is complete, which results make the report); [`link`]: the bounded queue to a probe.
//!
//! State lives in memory behind one lock; every change is persisted before it is announced,
//! so a restarted coordinator resumes from the database: runs continue, probes reconnect and
//! replay what they buffered, replays are stored once.

mod baselines;
pub mod events;
pub mod feedback;
mod ingest;
pub mod link;
mod monitor;
mod probes;
mod relay;
mod rollback;
mod runs;
mod stages;
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
use postflight_plan::{model::Plan, parse_plan};
use postflight_rollback::Prepared;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{CoordinatorError, CoordinatorResult};
use crate::metrics::{Metrics, RegionLabels, StatusLabels};
use crate::seal::Sealer;
use crate::storage::{
    AssignmentRecord, AssignmentStatus, BatchRecord, ProbeRecord, RemoteProbe, RunRecord,
    RunStatus, Store, StoreError,
};
pub use baselines::MAX_BASELINES_PAGE;
use events::{ResultEvent, RunEvent, RunEventKind};
pub use feedback::MAX_FEEDBACK_PAGE;
use ingest::{WriteJob, write_results};
pub use link::ToProbe;
use postflight_ops::host::now_ms;
pub use probes::{MAX_KNOWN_PROBES, MAX_PROBES_PAGE, ProbeHello};
pub use runs::{AssignmentFinished, AssignmentRejected, RunOptions};
use state::{ActiveRun, Arrival, LiveAssignment, LiveProbe, ProbeLink, Reach, Relayed, Session};

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
    /// Who this coordinator is in the rollback audit (`executed_by`), and the owner of its
    /// runs and monitors in the database: unique among coordinators sharing one (by default
    /// `coordinator HOST:PORT`) and the same after a restart, so a restarted coordinator
    /// takes its own runs back at once.
    pub identity: String,
    /// Whether probes prove their identity (per-probe tokens or mutual TLS): then only the
    /// regions of probes that did count where a plan names no regions, so a holder of a
    /// shared credential cannot add regions to a quorum.
    pub authenticated_regions_only: bool,
    /// Whether plans may run `command` actions here: a command runs any program on this
    /// machine, so it takes the operator's explicit consent (`--allow-command-actions`).
    pub allow_command_actions: bool,
    /// How long a coordinator's claim on a run lasts without renewal: another coordinator on
    /// the same database adopts the run only after it (renewed every third of it).
    pub run_lease: Duration,
    /// How long a probe that no longer connects stays in the probe list.
    pub forget_probes_after: Duration,
    /// How often coordinators sharing a database look for each other's probes, relay the
    /// assignments given to their own and read back what relays stored for their runs.
    pub relay_interval: Duration,
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

#[derive(Default)]
struct State {
    probes: HashMap<String, LiveProbe>,
    /// Probes connected to other live coordinators on the same database, by name.
    remote: HashMap<String, RemoteProbe>,
    /// Assignments this coordinator relays for other coordinators' runs, by id.
    relayed: HashMap<String, Relayed>,
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

/// A listing's `limit`: 0 means 50, more than `most` is refused naming the field.
pub(crate) fn page_limit(limit: u32, most: u32) -> CoordinatorResult<u32> {
    if limit > most {
        return Err(CoordinatorError::invalid(
            "limit",
            format!("{limit}, at most {most}"),
        ));
    }
    Ok(if limit == 0 { 50 } else { limit })
}

/// RFC 3339 text of Unix milliseconds, as the wire and reports show times.
pub(crate) fn unix_ms_string(ms: i64) -> String {
    postflight_plan::report::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
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
        coordinator.announce_self().await?;
        coordinator.recover_interrupted(false).await?;
        coordinator.watch_stale_claims();
        coordinator.forget_old_probes().await;
        coordinator.watch_probe_list();
        coordinator.resume().await?;
        coordinator.keep_run_leases();
        coordinator.keep_relaying();
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

    /// The probes runs may use: connected here or to another live coordinator.
    fn reach(state: &State) -> Reach<'_> {
        Reach {
            local: &state.probes,
            remote: &state.remote,
        }
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
        // Owners elsewhere stop relaying through this coordinator at once, rather than when
        // its lease runs out.
        if let Err(e) = self
            .inner
            .store
            .withdraw_coordinator(&self.inner.config.identity)
            .await
        {
            tracing::warn!(error = %e, "cannot withdraw this coordinator's announcement");
        }
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
}
