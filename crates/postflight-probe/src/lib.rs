//! postflight's probe: connects to the coordinator, executes the plans it is assigned with
//! the same check engine as `postflight run --local`, and streams each result as it
//! completes.
//!
//! It is built to be left alone in a region: it reconnects by itself (jittered backoff from
//! about 1 s to 30 s), keeps results the coordinator has not acknowledged in a bounded buffer
//! and replays them after a reconnect (every result has a probe-made id, so a replay is stored
//! once), and keeps executing its assignments while disconnected. No storage engine inside.

pub mod metrics;
mod outbox;

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

use outbox::Outbox;

pub use metrics::ProbeMetrics;

/// How a probe runs.
#[derive(Clone)]
pub struct ProbeConfig {
    /// `http://host:port` of the coordinator.
    pub coordinator: String,
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
            .field("coordinator", &self.coordinator)
            .field("name", &self.name)
            .field("region", &self.region)
            .field("labels", &self.labels)
            .field("token", &self.token)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ProbeConfig {
    /// Defaults for everything but identity and address.
    pub fn new(
        coordinator: &str,
        name: &str,
        region: &str,
        vars: Arc<dyn Lookup + Send + Sync>,
    ) -> Self {
        Self {
            coordinator: coordinator.to_owned(),
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
    });
    let mut worker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut delays = backoff(&shared.config);
            loop {
                match session(&shared).await {
                    Ok(()) if shared.stopping() => return,
                    Ok(()) => {
                        tracing::warn!("the coordinator closed the stream; reconnecting");
                        delays = backoff(&shared.config);
                    }
                    Err(SessionError::Refused(message)) => {
                        tracing::error!("the coordinator refused this probe: {message}");
                    }
                    Err(SessionError::Lost { welcomed, reason }) => {
                        if welcomed {
                            delays = backoff(&shared.config);
                        }
                        tracing::warn!(coordinator = %shared.config.coordinator, "connection lost: {reason}");
                    }
                }
                if shared.stopping() {
                    return;
                }
                forget_expired(&shared);
                let delay = delays.next().unwrap_or(shared.config.backoff_max);
                tracing::info!("reconnecting in {delay:?}");
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

fn backoff(config: &ProbeConfig) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(config.backoff_min)
        .with_max_delay(config.backoff_max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

enum SessionError {
    /// Credentials or identity refused: retrying soon will not help, but a rotated token
    /// might, so the probe keeps trying at the slowest pace.
    Refused(String),
    /// The connection broke; `welcomed` says whether it had been established.
    Lost { welcomed: bool, reason: String },
}

fn lost(welcomed: bool, reason: impl ToString) -> SessionError {
    SessionError::Lost {
        welcomed,
        reason: reason.to_string(),
    }
}

fn connector(config: &ProbeConfig) -> Connector {
    Connector {
        url: config.coordinator.clone(),
        tls: config.tls.clone(),
        token: config.token.clone(),
    }
}

async fn connect_channel(connector: &Connector) -> Result<Channel, SessionError> {
    let endpoint = connector
        .endpoint()
        .map_err(|e| SessionError::Refused(e.to_string()))?
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    endpoint.connect().await.map_err(|e| {
        lost(
            false,
            format!(
                "cannot connect to {}: {}",
                connector.url,
                connector.explain(&e)
            ),
        )
    })
}

/// One connection: hello, welcome, then results out and assignments in until it breaks.
async fn session(shared: &Arc<Shared>) -> Result<(), SessionError> {
    let config = &shared.config;
    let connector = connector(config);
    let bearer = connector
        .bearer()
        .map_err(|e| SessionError::Refused(e.to_string()))?;
    let channel = connect_channel(&connector).await?;
    let mut client = ProbeServiceClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
    let (tx, rx) = mpsc::channel::<v1::ProbeMessage>(64);
    let active: Vec<String> = shared.state().held.keys().cloned().collect();
    let hello = v1::ProbeMessage {
        kind: Some(probe_message::Kind::Hello(v1::Hello {
            name: config.name.clone(),
            region: config.region.clone(),
            labels: config.labels.clone().into_iter().collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            active_assignments: active,
        })),
    };
    tx.send(hello).await.map_err(|e| lost(false, e))?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    bearer.apply(&mut request);
    let mut inbound = match client.connect(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            return Err(SessionError::Refused(status.message().to_owned()));
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            return Err(SessionError::Refused(status.message().to_owned()));
        }
        Err(status) => {
            return Err(lost(false, connector.explain_status(&status)));
        }
    };
    let welcome = match inbound.message().await {
        Ok(Some(v1::CoordinatorMessage {
            kind: Some(coordinator_message::Kind::Welcome(w)),
        })) => w,
        Ok(other) => return Err(lost(false, format!("expected a welcome, got {other:?}"))),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            return Err(SessionError::Refused(status.message().to_owned()));
        }
        Err(status) => {
            return Err(lost(false, connector.explain_status(&status)));
        }
    };
    let session_id = {
        let mut state = shared.state();
        state.session += 1;
        for id in &welcome.drop_assignments {
            if let Some(held) = state.held.remove(id)
                && let Some(task) = held.task
            {
                task.abort();
            }
        }
        state.session
    };
    tracing::info!(coordinator = %config.coordinator, region = %config.region, "connected");
    config.metrics.connections.inc();
    config.metrics.connected.set(1);
    let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(500)));
    let writer = tokio::spawn(write_loop(shared.clone(), tx, session_id, heartbeat));
    let result = loop {
        match inbound.message().await {
            Ok(Some(message)) => on_message(shared, message),
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(lost(
                    true,
                    format!("{}: {}", status.code(), status.message()),
                ));
            }
        }
    };
    writer.abort();
    config.metrics.connected.set(0);
    result
}

/// Sends unsent results in batches, unconfirmed finishes, and heartbeats.
async fn write_loop(
    shared: Arc<Shared>,
    tx: mpsc::Sender<v1::ProbeMessage>,
    session: u64,
    heartbeat: Duration,
) {
    let mut beat = tokio::time::interval(heartbeat);
    beat.tick().await;
    loop {
        let messages = {
            let mut state = shared.state();
            let mut messages = Vec::new();
            for batch in state.outbox.take_unsent(session, 256) {
                messages.push(v1::ProbeMessage {
                    kind: Some(probe_message::Kind::Results(v1::ResultBatch {
                        results: batch,
                    })),
                });
            }
            for (id, held) in state.held.iter_mut() {
                if held.sent_in == session {
                    continue;
                }
                let kind = if let Some(reason) = &held.rejected {
                    probe_message::Kind::Rejected(v1::AssignmentRejected {
                        assignment_id: id.clone(),
                        run_id: held.run_id.clone(),
                        reason: postflight_proto::cut_to_bytes(reason, MAX_CHECK_MESSAGE_BYTES)
                            .to_owned(),
                    })
                } else if let Some(results) = held.finished {
                    probe_message::Kind::Finished(v1::AssignmentFinished {
                        assignment_id: id.clone(),
                        run_id: held.run_id.clone(),
                        results,
                    })
                } else {
                    continue;
                };
                held.sent_in = session;
                messages.push(v1::ProbeMessage { kind: Some(kind) });
            }
            messages
        };
        for message in messages {
            if tx.send(message).await.is_err() {
                return;
            }
        }
        if shared.stopping() && shared.state().delivered(session) {
            // Ending the request stream tells the coordinator this probe is done; it closes
            // its side once it has processed everything before.
            tracing::info!("every result delivered; closing the stream");
            return;
        }
        tokio::select! {
            () = shared.wake.notified() => {
                // Let results completing together leave in one batch.
                tokio::time::sleep(shared.config.flush_interval).await;
            }
            _ = beat.tick() => {
                // Assignments past their deadline are over on the coordinator's side too:
                // forgotten as the session goes on, not only at a reconnect, so that a
                // long-lived probe does not keep every assignment it ever ran.
                forget_expired(&shared);
                let buffered = shared.state().outbox.len() as u32;
                let message = v1::ProbeMessage {
                    kind: Some(probe_message::Kind::Heartbeat(v1::Heartbeat {
                        sent_at_unix_ms: postflight_ops::host::now_ms() as u64,
                        buffered_results: buffered,
                    })),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn on_message(shared: &Arc<Shared>, message: v1::CoordinatorMessage) {
    match message.kind {
        Some(coordinator_message::Kind::Assignment(assignment)) => start(shared, assignment),
        Some(coordinator_message::Kind::Cancel(cancel)) => {
            if let Some(held) = shared.state().held.remove(&cancel.assignment_id) {
                tracing::info!(assignment = %cancel.assignment_id, reason = %cancel.reason, "assignment cancelled");
                if let Some(task) = held.task {
                    task.abort();
                }
            }
        }
        Some(coordinator_message::Kind::Ack(ack)) => {
            let buffered = {
                let mut state = shared.state();
                state.outbox.acknowledge(&ack.result_ids);
                state.outbox.len()
            };
            let metrics = &shared.config.metrics;
            metrics.acknowledged.inc_by(ack.result_ids.len() as u64);
            metrics.buffered.set(buffered as i64);
            if buffered == 0 && shared.stopping() {
                shared.wake.notify_one();
            }
        }
        Some(coordinator_message::Kind::Welcome(_)) | None => {}
    }
}

/// Starts executing an assignment, or rejects it when the plan cannot run here.
fn start(shared: &Arc<Shared>, assignment: v1::Assignment) {
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
fn scrubber(shared: &Shared, plan: Option<&postflight_plan::Plan>) -> Secrets {
    let mut secrets = plan.map(Secrets::of_plan).unwrap_or_default();
    for value in shared.config.vars.secret_values() {
        secrets.add(&value);
    }
    secrets
}

/// Assignments a minute past their deadline cannot matter any more: forgotten (and their
/// checks stopped) on every heartbeat, so the map does not grow with every run a long-lived
/// probe has served.
fn forget_expired(shared: &Shared) {
    forget_expired_at(&mut shared.state().held, postflight_ops::host::now_ms());
}

fn forget_expired_at(held: &mut HashMap<String, Held>, now_ms: i64) {
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
