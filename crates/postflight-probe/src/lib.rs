//! postflight's probe: connects to the coordinator, executes the plans it is assigned with
//! the same check engine as `postflight run --local`, and streams each result as it
//! completes.
//!
//! It is built to be left alone in a region: it reconnects by itself (jittered backoff from
//! about 1 s to 30 s), keeps results the coordinator has not acknowledged in a bounded buffer
//! and replays them after a reconnect (every result has a probe-made id, so a replay is stored
//! once), and keeps executing its assignments while disconnected. No storage engine inside.
//!
//! `session.rs` is one connection's life, `assignments.rs` runs what the coordinator assigns,
//! `outbox.rs` holds what is not acknowledged yet.

mod assignments;
pub mod metrics;
mod outbox;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backon::BackoffBuilder;
use postflight_checks::{Executor, RunOptions, run_plan};
use postflight_ops::channel::Connector;
use postflight_ops::secret::Secret;
use postflight_ops::tls::ClientTls;
use postflight_plan::parse_plan;
use postflight_plan::secrets::Secrets;
use postflight_plan::vars::{Expander, Lookup};
use postflight_proto::MAX_CHECK_MESSAGE_BYTES;
use postflight_proto::v1::probe_service_client::ProbeServiceClient;
use postflight_proto::v1::{self, coordinator_message, probe_message};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use assignments::forget_expired;
use outbox::Outbox;
use session::{SessionError, session};

pub use metrics::ProbeMetrics;

/// How a probe runs.
#[derive(Clone)]
pub struct ProbeConfig {
    /// `http://host:port` of each coordinator it may use (at least one): the probe stays
    /// with one while it answers and moves to the next when it does not, so several
    /// coordinators sharing a database serve it without a load balancer in front.
    pub coordinators: Vec<String>,
    /// Unique name; the same across reconnects.
    pub name: String,
    /// The region it executes in.
    pub region: String,
    /// Free labels shown by `postflight probes`.
    pub labels: BTreeMap<String, String>,
    /// Sent as `authorization: Bearer …` when set.
    pub token: Option<Secret>,
    /// TLS files for an `https://` coordinator.
    pub tls: ClientTls,
    /// Where `${probe:VAR}` values come from (the process environment for the binary).
    pub vars: Arc<dyn Lookup>,
    /// Unacknowledged results kept for replay; the oldest are dropped beyond it.
    pub buffer_limit: usize,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Results are sent in batches at most this often.
    pub flush_interval: Duration,
    /// Where it counts what it does (served by the binary's `--http-listen`).
    pub metrics: Arc<ProbeMetrics>,
}

impl std::fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeConfig")
            .field("coordinators", &self.coordinators)
            .field("name", &self.name)
            .field("region", &self.region)
            .field("labels", &self.labels)
            .field("token", &self.token)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ProbeConfig {
    /// Defaults for everything but identity and address (one coordinator; set
    /// [`ProbeConfig::coordinators`] for several).
    pub fn new(
        coordinator: &str,
        name: &str,
        region: &str,
        vars: Arc<dyn Lookup + Send + Sync>,
    ) -> Self {
        Self {
            coordinators: vec![coordinator.to_owned()],
            name: name.to_owned(),
            region: region.to_owned(),
            labels: BTreeMap::new(),
            token: None,
            tls: ClientTls::default(),
            vars,
            buffer_limit: 10_000,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            flush_interval: Duration::from_millis(20),
            metrics: Arc::new(ProbeMetrics::new()),
        }
    }
}

/// An assignment this probe holds: running, or finished and not yet confirmed.
struct Held {
    run_id: String,
    deadline_ms: i64,
    task: Option<tokio::task::AbortHandle>,
    /// Results announced once finished.
    finished: Option<u32>,
    rejected: Option<String>,
    /// Session in which the finish (or rejection) was last sent.
    sent_in: u64,
}

struct State {
    outbox: Outbox,
    held: HashMap<String, Held>,
    session: u64,
}

struct Shared {
    config: ProbeConfig,
    executor: Executor,
    state: Mutex<State>,
    wake: Notify,
    /// Asked to stop: no new assignments; the session ends once everything is delivered.
    stopping: std::sync::atomic::AtomicBool,
    /// Index (modulo their count) of the coordinator in use.
    target: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The coordinator URL in use.
    fn coordinator(&self) -> &str {
        let urls = &self.config.coordinators;
        let i = self.target.load(std::sync::atomic::Ordering::SeqCst);
        urls.get(i % urls.len().max(1)).map_or("", String::as_str)
    }

    /// Moves on to the next coordinator URL; `true` when there is another one to try.
    fn next_coordinator(&self) -> bool {
        self.target
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.config.coordinators.len() > 1
    }
}

impl State {
    /// Assignments still executing.
    fn running(&self) -> usize {
        self.held
            .values()
            .filter(|h| h.finished.is_none() && h.rejected.is_none())
            .count()
    }

    /// Whether everything this probe has to say was sent in `session` and every result
    /// acknowledged: then a stopping probe may end its stream.
    fn delivered(&self, session: u64) -> bool {
        self.outbox.len() == 0
            && self.running() == 0
            && self.held.values().all(|h| h.sent_in == session)
    }
}

/// Runs the probe until `shutdown` completes: connect, serve, reconnect, forever.
pub async fn run(
    config: ProbeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let executor = Executor::new().map_err(anyhow::Error::msg)?;
    if config.coordinators.is_empty() {
        anyhow::bail!("no coordinator URL given");
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            outbox: Outbox::new(config.buffer_limit),
            held: HashMap::new(),
            session: 0,
        }),
        config,
        executor,
        wake: Notify::new(),
        stopping: std::sync::atomic::AtomicBool::new(false),
        target: std::sync::atomic::AtomicUsize::new(0),
    });
    let mut worker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut delays = backoff(&shared.config);
            // Coordinators tried without success since the last session that worked: each
            // one is tried promptly once; only when all failed does the backoff grow.
            let mut failed = 0usize;
            loop {
                match session(&shared).await {
                    Ok(()) if shared.stopping() => return,
                    Ok(()) => {
                        tracing::warn!(coordinator = %shared.coordinator(), "the coordinator closed the stream; reconnecting");
                        delays = backoff(&shared.config);
                        failed = 0;
                    }
                    Err(SessionError::Refused(message)) => {
                        tracing::error!(coordinator = %shared.coordinator(), "the coordinator refused this probe: {message}");
                        failed += 1;
                    }
                    Err(SessionError::Lost { welcomed, reason }) => {
                        if welcomed {
                            delays = backoff(&shared.config);
                            failed = 0;
                        }
                        tracing::warn!(coordinator = %shared.coordinator(), "connection lost: {reason}");
                        failed += 1;
                    }
                }
                if shared.stopping() {
                    return;
                }
                forget_expired(&shared);
                let another = shared.next_coordinator();
                let delay = if another && failed < shared.config.coordinators.len() {
                    // A dead coordinator's peers are likely alive: move on at once (a
                    // little later than at once, so a fleet of probes does not arrive in
                    // the same millisecond).
                    FAILOVER_DELAY
                } else {
                    if another {
                        failed = 0;
                    }
                    delays.next().unwrap_or(shared.config.backoff_max)
                };
                tracing::info!(coordinator = %shared.coordinator(), "reconnecting in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        })
    };
    tokio::select! {
        _ = &mut worker => return Ok(()),
        () = shutdown => {}
    }
    // Drain: no new work; what runs finishes, every result is sent and acknowledged, then the
    // stream is closed and the coordinator confirms it processed everything before it.
    shared
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    shared.wake.notify_one();
    let drained = tokio::time::timeout(
        postflight_ops::shutdown::GRACE - Duration::from_secs(1),
        &mut worker,
    )
    .await;
    worker.abort();
    let (unacked, running) = {
        let state = shared.state();
        (state.outbox.len(), state.running())
    };
    if drained.is_ok() && unacked == 0 {
        tracing::info!("stopped: every result delivered");
    } else {
        tracing::warn!(unacked, running, "stopped before everything was delivered");
    }
    Ok(())
}

/// Pause before trying the next coordinator after one failed.
const FAILOVER_DELAY: Duration = Duration::from_millis(200);

fn backoff(config: &ProbeConfig) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(config.backoff_min)
        .with_max_delay(config.backoff_max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}
