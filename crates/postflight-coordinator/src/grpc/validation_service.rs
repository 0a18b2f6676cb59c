//! `ValidationService`: what operators and the CLI call.

use std::pin::Pin;

use postflight_proto::MAX_NAME_BYTES;
use postflight_proto::v1::validation_service_server::ValidationService;
use postflight_proto::v1::{self, run_event};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::engine::events::{MonitorEvent, MonitorEventKind, RunEvent, RunEventKind};
use crate::engine::unix_ms_string;
use crate::engine::{Coordinator, MAX_PROBES_PAGE};
use crate::error::CoordinatorError;
use crate::storage::{MonitorRecord, RunRecord, Store};

/// The operator-facing service.
pub struct ValidationApi<S: Store> {
    coordinator: Coordinator<S>,
}

impl<S: Store> ValidationApi<S> {
    /// Serves `coordinator`.
    pub fn new(coordinator: Coordinator<S>) -> Self {
        Self { coordinator }
    }
}

/// The wire form of a run's event.
fn run_event_message(event: RunEvent) -> v1::RunEvent {
    let kind = match event.kind {
        RunEventKind::Status { status, detail } => run_event::Kind::Status(v1::RunStatusChanged {
            status: status.as_str().to_owned(),
            detail,
        }),
        RunEventKind::Result(r) => run_event::Kind::Result(v1::ResultReceived {
            region: r.region,
            probe: r.probe,
            check_index: r.check_index,
            check_name: r.check_name,
            status: r.status.as_str().to_owned(),
            message: r.message,
            duration_ms: r.duration_ms,
        }),
        RunEventKind::Report(report) => run_event::Kind::Report(report.as_ref().into()),
    };
    v1::RunEvent {
        run_id: event.run_id,
        at_unix_ms: u64::try_from(event.at_ms).unwrap_or(0),
        kind: Some(kind),
    }
}

/// The wire form of a monitor.
fn monitor_message(record: &MonitorRecord) -> v1::Monitor {
    let rollback: Option<postflight_plan::rollback::RollbackReport> = record
        .rollback_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    v1::Monitor {
        monitor_id: record.monitor_id.clone(),
        plan: record.plan_name.clone(),
        status: record.status.as_str().to_owned(),
        started_at: unix_ms_string(record.started_ms),
        ends_at: unix_ms_string(record.ends_ms),
        ended_at: record.ended_ms.map(unix_ms_string).unwrap_or_default(),
        rounds: u32::try_from(record.rounds).unwrap_or(u32::MAX),
        regions: record.regions.clone(),
        dry_run: record.dry_run,
        rollback: rollback.as_ref().map(Into::into),
        detail: record.detail.clone().unwrap_or_default(),
    }
}

/// The wire form of a monitor's event.
fn monitor_event_message(event: MonitorEvent) -> v1::MonitorEvent {
    let kind = match event.kind {
        MonitorEventKind::Round(r) => v1::monitor_event::Kind::Round(v1::MonitorRound {
            round: r.round,
            run_id: r.run_id,
            verdict: r.verdict.as_str().to_owned(),
            requests: r.requests.count,
            errors: r.requests.errors,
            error_rate: r.error_rate,
            p99_ms: r.p99_ms,
            window_rounds: r.window_rounds,
            every: postflight_plan::duration::format_duration(r.every),
            reasons: r.reasons,
            held_back: r.held_back,
            failing_rounds_held: r.failing_rounds_held,
            failing_rounds: r.failing_rounds,
            missing: r.requests.missing,
        }),
        MonitorEventKind::Ended {
            status,
            detail,
            rollback,
        } => v1::monitor_event::Kind::Ended(v1::MonitorEnded {
            status: status.as_str().to_owned(),
            detail,
            rollback: rollback.as_ref().map(Into::into),
        }),
    };
    v1::MonitorEvent {
        monitor_id: event.monitor_id,
        at_unix_ms: u64::try_from(event.at_ms).unwrap_or(0),
        kind: Some(kind),
    }
}

/// The wire form of a run.
fn run_message(record: &RunRecord, results: u32, checks: u32) -> v1::Run {
    let rollback: Option<postflight_plan::rollback::RollbackReport> = record
        .rollback_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
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
        baseline_id: record.baseline_id.clone().unwrap_or_default(),
        baseline_refused: record.baseline_refused.clone().unwrap_or_default(),
        against: record.against.clone().unwrap_or_default(),
        migration: record.migration.clone().unwrap_or_default(),
        stage: record.stage.clone().unwrap_or_default(),
    }
}

fn run_id(field: &str) -> Result<&str, CoordinatorError> {
    let id = field.trim();
    if id.is_empty() {
        Err(CoordinatorError::invalid(
            "run_id",
            "empty: give the id of a run (see ListRuns)",
        ))
    } else {
        Ok(id)
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<v1::RunEvent, Status>> + Send>>;
type MonitorEvents = Pin<Box<dyn Stream<Item = Result<v1::MonitorEvent, Status>> + Send>>;

fn monitor_id(field: &str) -> Result<&str, CoordinatorError> {
    let id = field.trim();
    if id.is_empty() {
        Err(CoordinatorError::invalid(
            "monitor_id",
            "empty: give the id of a monitor (see ListMonitors)",
        ))
    } else {
        Ok(id)
    }
}

/// Forwards a backlog, then live events, in their wire form, until `last` says the stream is
/// over.
fn forward<T: Clone + Send + 'static, W: Send + 'static>(
    backlog: Vec<T>,
    live: Option<broadcast::Receiver<T>>,
    last: fn(&T) -> bool,
    wire: fn(T) -> W,
) -> ReceiverStream<Result<W, Status>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        for event in backlog {
            if tx.send(Ok(wire(event))).await.is_err() {
                return;
            }
        }
        let Some(mut live) = live else { return };
        loop {
            match live.recv().await {
                Ok(event) => {
                    let end = last(&event);
                    if tx.send(Ok(wire(event))).await.is_err() || end {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a watcher fell behind; some events were skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl<S: Store> ValidationService for ValidationApi<S> {
    type WatchRunStream = Events;
    type WatchMonitorStream = MonitorEvents;

    async fn start_monitor(
        &self,
        request: Request<v1::StartMonitorRequest>,
    ) -> Result<Response<v1::Monitor>, Status> {
        let r = request.into_inner();
        let record = self
            .coordinator
            .start_monitor(
                &r.plan_yaml,
                &r.origin,
                r.options.unwrap_or_default().into(),
            )
            .await?;
        Ok(Response::new(monitor_message(&record)))
    }

    async fn get_monitor(
        &self,
        request: Request<v1::GetMonitorRequest>,
    ) -> Result<Response<v1::Monitor>, Status> {
        let r = request.into_inner();
        let record = self
            .coordinator
            .get_monitor(monitor_id(&r.monitor_id)?)
            .await?;
        Ok(Response::new(monitor_message(&record)))
    }

    async fn list_monitors(
        &self,
        request: Request<v1::ListMonitorsRequest>,
    ) -> Result<Response<v1::ListMonitorsResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 50,
            n => n.min(1000),
        };
        let monitors = self.coordinator.list_monitors(limit).await?;
        Ok(Response::new(v1::ListMonitorsResponse {
            monitors: monitors.iter().map(monitor_message).collect(),
        }))
    }

    async fn watch_monitor(
        &self,
        request: Request<v1::WatchMonitorRequest>,
    ) -> Result<Response<Self::WatchMonitorStream>, Status> {
        let r = request.into_inner();
        let (backlog, live) = self
            .coordinator
            .watch_monitor(monitor_id(&r.monitor_id)?)
            .await?;
        let stream = forward(backlog, live, MonitorEvent::is_last, monitor_event_message);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn stop_monitor(
        &self,
        request: Request<v1::StopMonitorRequest>,
    ) -> Result<Response<v1::Monitor>, Status> {
        let r = request.into_inner();
        let record = self
            .coordinator
            .stop_monitor(monitor_id(&r.monitor_id)?)
            .await?;
        Ok(Response::new(monitor_message(&record)))
    }

    async fn submit_run(
        &self,
        request: Request<v1::SubmitRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let r = request.into_inner();
        let record = self
            .coordinator
            .submit(
                &r.plan_yaml,
                &r.origin,
                r.options.unwrap_or_default().into(),
            )
            .await?;
        Ok(Response::new(run_message(
            &record,
            0,
            self.coordinator.check_count(&record),
        )))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let r = request.into_inner();
        let (record, results) = self.coordinator.get_run(run_id(&r.run_id)?).await?;
        Ok(Response::new(run_message(
            &record,
            results,
            self.coordinator.check_count(&record),
        )))
    }

    async fn list_runs(
        &self,
        request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 50,
            n => n.min(1000),
        };
        let plan = (!r.plan.is_empty()).then_some(r.plan.as_str());
        let runs = self.coordinator.list_runs(limit, plan).await?;
        Ok(Response::new(v1::ListRunsResponse {
            runs: runs
                .iter()
                .map(|(record, results)| {
                    run_message(record, *results, self.coordinator.check_count(record))
                })
                .collect(),
        }))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::Report>, Status> {
        let r = request.into_inner();
        let report = self.coordinator.report(run_id(&r.run_id)?).await?;
        Ok(Response::new((&report).into()))
    }

    async fn watch_run(
        &self,
        request: Request<v1::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let r = request.into_inner();
        let (backlog, live) = self.coordinator.watch(run_id(&r.run_id)?).await?;
        let stream = forward(backlog, live, RunEvent::is_last, run_event_message);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_run(
        &self,
        request: Request<v1::CancelRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let r = request.into_inner();
        let record = self
            .coordinator
            .cancel(run_id(&r.run_id)?, &r.reason)
            .await?;
        let (_, results) = self.coordinator.get_run(&record.run_id).await?;
        Ok(Response::new(run_message(
            &record,
            results,
            self.coordinator.check_count(&record),
        )))
    }

    async fn list_baselines(
        &self,
        request: Request<v1::ListBaselinesRequest>,
    ) -> Result<Response<v1::ListBaselinesResponse>, Status> {
        let r = request.into_inner();
        if r.plan.len() > MAX_NAME_BYTES {
            return Err(CoordinatorError::invalid("plan", "not a plan name (too long)").into());
        }
        let plan = (!r.plan.is_empty()).then_some(r.plan.as_str());
        let found = self.coordinator.list_baselines(plan, r.limit).await?;
        Ok(Response::new(v1::ListBaselinesResponse {
            baselines: found
                .into_iter()
                .map(|b| v1::BaselineSummary {
                    created_at: unix_ms_string(b.created_ms),
                    baseline_id: b.baseline_id,
                    plan: b.plan_name,
                    migration: b.migration.unwrap_or_default(),
                    run_id: b.run_id,
                    status: b.status,
                    checks: u32::try_from(b.checks).unwrap_or(0),
                    latencies: u32::try_from(b.latencies).unwrap_or(0),
                })
                .collect(),
        }))
    }

    async fn list_probes(
        &self,
        request: Request<v1::ListProbesRequest>,
    ) -> Result<Response<v1::ListProbesResponse>, Status> {
        let r = request.into_inner();
        if r.limit > MAX_PROBES_PAGE {
            return Err(CoordinatorError::invalid(
                "limit",
                format!("{} probes per page, at most {MAX_PROBES_PAGE}", r.limit),
            )
            .into());
        }
        if r.page_token.len() > MAX_NAME_BYTES {
            return Err(CoordinatorError::invalid(
                "page_token",
                "not a token this coordinator gave out (too long)",
            )
            .into());
        }
        let limit = if r.limit == 0 { 500 } else { r.limit };
        let (probes, next) = self.coordinator.list_probes(&r.page_token, limit).await?;
        Ok(Response::new(v1::ListProbesResponse {
            next_page_token: next.unwrap_or_default(),
            probes: probes
                .into_iter()
                .map(|(p, connected)| v1::Probe {
                    name: p.name,
                    region: p.region,
                    labels: p.labels.into_iter().collect(),
                    connected,
                    last_seen: postflight_plan::report::rfc3339(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(p.last_seen_ms.max(0) as u64),
                    ),
                    version: p.version,
                })
                .collect(),
        }))
    }
}
