//! Monitors: the plan round after round on its `monitor.phases` (the seed article's 24 hours
//! of intensive checks, then 7 days of normal ones), each round judged by the domain's
//! [`MonitorSession`] (triggers over the sliding window, per region, held for
//! `rollback.failing_rounds` rounds), until the last phase ends or a rollback fires.
//!
//! A monitor lives in the coordinator: it goes on when its client disconnects, and a
//! restarted coordinator resumes it with its window and streak rebuilt from the stored rounds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use postflight_plan::model::Monitor;
use postflight_plan::monitor::{
    MonitorSession, RoundInput, RoundOutcome, RoundSample, round_timeout, streak_of,
};
use postflight_plan::report::RequestCount;
use postflight_plan::rollback::{RegionFigures, RollbackReport};
use postflight_plan::vars::{Expander, ProcessEnv};
use postflight_plan::{model::Plan, parse_plan};
use postflight_rollback::Prepared;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio_util::sync::CancellationToken;

use super::events::{MonitorEvent, MonitorEventKind, RoundEvent};
use super::rollback::persist;
use super::{Coordinator, Finished, RunOptions};
use crate::error::{CoordinatorError, CoordinatorResult};
use crate::storage::{MonitorRecord, MonitorStatus, RoundRecord, Store};
use postflight_ops::host::now_ms;

/// A monitor running in this coordinator.
pub(crate) struct ActiveMonitor {
    pub record: MonitorRecord,
    pub events: broadcast::Sender<MonitorEvent>,
    pub history: Vec<MonitorEvent>,
    pub stop: Arc<Notify>,
    /// Cancelled when the monitor's task ends, whatever ended it.
    pub ended: CancellationToken,
}

/// The event of a round: its verdict, the window's figures and what the session decided.
fn round_event(
    monitor_id: &str,
    round: i64,
    report: &postflight_plan::Report,
    every: &Duration,
    outcome: &RoundOutcome,
) -> MonitorEvent {
    let merged = &outcome.merged;
    MonitorEvent::now(
        monitor_id,
        MonitorEventKind::Round(RoundEvent {
            round: u32::try_from(round).unwrap_or(u32::MAX),
            run_id: report.run_id.clone(),
            verdict: report.status,
            requests: merged.requests,
            error_rate: merged.error_rate(),
            p99_ms: merged.p99_ms,
            window_rounds: u32::try_from(outcome.window_rounds).unwrap_or(u32::MAX),
            every: *every,
            reasons: outcome.reasons.clone(),
            held_back: outcome.held_back.clone(),
            failing_rounds_held: outcome.streak,
            failing_rounds: outcome.needed,
        }),
    )
}

/// A stored round as the session's input again.
fn sample_of(round: &RoundRecord) -> RoundSample {
    let per_check: Vec<(String, RequestCount)> =
        serde_json::from_str(&round.per_check_json).unwrap_or_default();
    // Rounds stored before regions were kept apart have none: they add nothing per region.
    let regions: BTreeMap<String, RegionFigures> = round
        .regions_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    RoundSample {
        at_ms: round.at_ms,
        per_check,
        regions,
    }
}

impl<S: Store> Coordinator<S> {
    /// Starts monitoring a plan.
    pub async fn start_monitor(
        &self,
        plan_yaml: &str,
        origin: &str,
        options: RunOptions,
    ) -> CoordinatorResult<MonitorRecord> {
        let (plan, origin, regions) = self.accept_plan(plan_yaml, origin, &options)?;
        let against = match &options.against {
            Some(id) => Some(self.baseline_for(&plan, id).await?.baseline_id),
            None => None,
        };
        let monitor = plan.monitor.clone().unwrap_or_default();
        let started = now_ms();
        let record = MonitorRecord {
            monitor_id: uuid::Uuid::now_v7().to_string(),
            plan_name: plan.name.clone(),
            plan_sealed: self.inner.sealer.seal(plan_yaml.as_bytes()),
            origin,
            status: MonitorStatus::Running,
            dry_run: options.dry_run || plan.rollback.as_ref().is_some_and(|r| r.dry_run),
            regions,
            started_ms: started,
            ends_ms: started + monitor.total().as_millis() as i64,
            ended_ms: None,
            rounds: 0,
            rollback_json: None,
            detail: None,
            against,
            migration: options.migration.clone(),
            owner: Some(self.inner.config.identity.clone()),
            lease_until_ms: Some(self.lease_until()),
        };
        self.inner.store.insert_monitor(&record).await?;
        tracing::info!(monitor_id = %record.monitor_id, plan = %plan.name, "monitor started");
        let session = MonitorSession::new(&plan);
        self.spawn_monitor(record.clone(), plan, plan_yaml.into(), session);
        Ok(record)
    }

    /// Resumes the monitors the store holds running (after a restart).
    pub(super) async fn resume_monitors(&self) -> CoordinatorResult<()> {
        for record in self.inner.store.running_monitors().await? {
            let (monitor_id, owner) = (record.monitor_id.clone(), record.owner.clone());
            if !self.adopt_monitor(record).await? {
                tracing::info!(
                    monitor_id = %monitor_id,
                    owner = owner.as_deref().unwrap_or("?"),
                    "monitor owned by a live coordinator: not resuming it"
                );
            }
        }
        Ok(())
    }

    /// Resumes running monitors that are not in memory and whose owner's lease expired.
    pub(super) async fn adopt_orphaned_monitors(&self) -> CoordinatorResult<()> {
        for monitor_id in self.inner.store.adoptable().await?.monitors {
            if self.state().monitors.contains_key(&monitor_id) {
                continue;
            }
            if let Some(record) = self.inner.store.get_monitor(&monitor_id).await? {
                self.adopt_monitor(record).await?;
            }
        }
        Ok(())
    }

    /// Claims a running monitor and runs its rounds from where they are; a monitor a live
    /// coordinator owns is left to it.
    async fn adopt_monitor(&self, mut record: MonitorRecord) -> CoordinatorResult<bool> {
        let until = self.lease_until();
        let claimed = self
            .inner
            .store
            .claim_monitor(
                &record.monitor_id,
                &self.inner.config.identity,
                self.lease_ms(),
            )
            .await?;
        if !claimed {
            return Ok(false);
        }
        record.owner = Some(self.inner.config.identity.clone());
        record.lease_until_ms = Some(until);
        let plan_yaml = match self.inner.sealer.unseal(&record.plan_sealed) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                tracing::error!(monitor_id = %record.monitor_id, error = %e, "cannot resume a monitor");
                return Ok(true);
            }
        };
        let no_vars: HashMap<String, String> = HashMap::new();
        let Ok(plan) = parse_plan(&plan_yaml, &record.origin, Expander::plan(&no_vars)) else {
            tracing::error!(monitor_id = %record.monitor_id, "a stored monitor's plan no longer parses");
            return Ok(true);
        };
        let config = plan.monitor.clone().unwrap_or_default();
        let since = now_ms() - config.window.as_millis() as i64;
        let store = &self.inner.store;
        let rounds: Vec<RoundSample> = store
            .rounds_since(&record.monitor_id, since)
            .await?
            .iter()
            .map(sample_of)
            .collect();
        let streak = streak_of(
            store
                .last_rounds(&record.monitor_id, plan.failing_rounds())
                .await?
                .iter()
                .map(|r| r.counted),
        );
        let session = MonitorSession::resume(&plan, rounds, streak);
        tracing::info!(monitor_id = %record.monitor_id, rounds = record.rounds, window = session.window_rounds(), streak, "resuming monitor");
        self.spawn_monitor(record, plan, plan_yaml.into(), session);
        Ok(true)
    }

    fn spawn_monitor(
        &self,
        record: MonitorRecord,
        plan: Plan,
        plan_yaml: Arc<str>,
        session: MonitorSession,
    ) {
        let (events, _) = broadcast::channel(256);
        let stop = Arc::new(Notify::new());
        let ended = CancellationToken::new();
        let monitor_id = record.monitor_id.clone();
        self.state().monitors.insert(
            monitor_id.clone(),
            ActiveMonitor {
                record,
                events,
                history: Vec::new(),
                stop: stop.clone(),
                ended: ended.clone(),
            },
        );
        let this = self.clone();
        // Tracked, not cancelled from outside: a round's rollback action runs in this task
        // and gets the grace period; the loop itself leaves at shutdown between steps.
        self.spawn_tracked(async move {
            let _ended = ended.drop_guard();
            this.monitor_loop(&monitor_id, plan, plan_yaml, session, stop)
                .await;
        });
    }

    async fn monitor_loop(
        &self,
        monitor_id: &str,
        plan: Plan,
        plan_yaml: Arc<str>,
        mut session: MonitorSession,
        stop: Arc<Notify>,
    ) {
        let config: Monitor = plan.monitor.clone().unwrap_or_default();
        let Some(record) = self.active_monitor(monitor_id) else {
            return;
        };
        let mut round = record.rounds;
        loop {
            let elapsed = Duration::from_millis((now_ms() - record.started_ms).max(0) as u64);
            let Some(every) = config.every_at(elapsed) else {
                self.end_monitor(
                    monitor_id,
                    MonitorStatus::Completed,
                    None,
                    "the last phase ended without rollback",
                    true,
                )
                .await;
                return;
            };
            let round_started = tokio::time::Instant::now();
            round += 1;
            let (tx, rx) = oneshot::channel::<Finished>();
            let submitted = self
                .create_run(
                    plan.clone(),
                    &plan_yaml,
                    &record.origin,
                    record.regions.clone(),
                    round_timeout(&plan).min(self.inner.config.default_timeout),
                    record.dry_run,
                    Some(monitor_id.to_owned()),
                    super::runs::RunLabels {
                        against: record.against.clone(),
                        migration: record.migration.clone(),
                        ..Default::default()
                    },
                    Some(tx),
                )
                .await;
            if let Err(e) = submitted {
                tracing::error!(monitor_id, error = %e, "cannot start a round");
            } else {
                let finished = tokio::select! {
                    finished = rx => finished.ok(),
                    // Shutting down: the monitor stays stored as running and resumes at the
                    // next start.
                    () = self.inner.cancel.cancelled() => return,
                    () = stop.notified() => {
                        self.end_monitor(monitor_id, MonitorStatus::Stopped, None, "stopped by an operator", true).await;
                        return;
                    }
                };
                if let Some(finished) = finished
                    && self
                        .after_round(monitor_id, &plan, &mut session, round, &every, finished)
                        .await
                {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(round_started + every) => {}
                () = self.inner.cancel.cancelled() => return,
                () = stop.notified() => {
                    self.end_monitor(monitor_id, MonitorStatus::Stopped, None, "stopped by an operator", true).await;
                    return;
                }
            }
        }
    }

    /// Adds a round to the session and stores it; when the session decides to roll back,
    /// claims and executes the action (in this monitor's task) and ends the monitor. Returns
    /// whether the monitor ended.
    async fn after_round(
        &self,
        monitor_id: &str,
        plan: &Plan,
        session: &mut MonitorSession,
        round: i64,
        every: &Duration,
        finished: Finished,
    ) -> bool {
        let at = now_ms();
        let report = finished.report;
        let sample = RoundSample::from_results(plan, &finished.results, at);
        let mut stored = RoundRecord {
            monitor_id: monitor_id.to_owned(),
            round,
            run_id: report.run_id.clone(),
            at_ms: at,
            verdict: report.status.as_str().to_owned(),
            per_check_json: serde_json::to_string(&sample.per_check).unwrap_or_default(),
            sketch: sample.merged().sketch.to_bytes(),
            regions_json: serde_json::to_string(&sample.regions).ok(),
            counted: false,
        };
        let Some(record) = self.active_monitor(monitor_id) else {
            return true;
        };
        let outcome = session.round(
            plan,
            RoundInput {
                sample,
                overall: report.status,
                checks: &report.checks,
                required: &record.regions,
                end: finished.end,
            },
            &ProcessEnv,
        );
        stored.counted = outcome.counted;
        if let Err(e) = self.inner.store.insert_round(&stored).await {
            tracing::error!(monitor_id, error = %e, "cannot store a round");
        }
        let record = {
            let mut state = self.state();
            let Some(active) = state.monitors.get_mut(monitor_id) else {
                return true;
            };
            active.record.rounds = round;
            active.record.clone()
        };
        if let Err(e) = self.inner.store.update_monitor(&record).await {
            tracing::error!(monitor_id, error = %e, "cannot update a monitor");
        }
        self.announce(
            monitor_id,
            round_event(monitor_id, round, &report, every, &outcome),
        );
        // Regression feedback about the monitor's migration acts at once, whatever the streak.
        let feedback = match &record.migration {
            Some(migration) => self.feedback_reason(plan, migration).await,
            None => None,
        };
        let decision = match (outcome.decision, feedback) {
            (Some(mut decision), Some(reason)) => {
                decision.reasons.push(reason);
                Some(decision)
            }
            (Some(decision), None) => Some(decision),
            (None, Some(reason)) => Some(postflight_plan::rollback::decision(
                plan,
                vec![reason],
                &ProcessEnv,
            )),
            (None, None) => None,
        };
        let Some(mut rollback) = decision else {
            return false;
        };
        rollback.dry_run |= record.dry_run;
        let context = self.rollback_context(plan, &report, Some(monitor_id));
        let prepared = self
            .claim_rollback(
                plan,
                &mut rollback,
                &context,
                &format!("monitor:{monitor_id}"),
            )
            .await;
        // Another coordinator claimed it: that one writes the monitor's end.
        let write = !matches!(
            prepared,
            Prepared::Settled {
                claim: Some(postflight_rollback::ClaimOutcome::AlreadyClaimed { .. })
            }
        );
        let detail = format!("rollback: {}", rollback.reasons.join("; "));
        // The decision is stored (`pending` while the action runs) before anything is executed,
        // and the monitor marked ended, so a restart neither resumes it nor runs it again.
        self.record_decision(monitor_id, &report, &rollback, &detail, write)
            .await;
        if let Prepared::Execute(claimed) = prepared {
            self.run_claimed(&claimed, &mut rollback).await;
            self.record_decision(monitor_id, &report, &rollback, &detail, write)
                .await;
        }
        self.end_monitor(
            monitor_id,
            MonitorStatus::RolledBack,
            Some(rollback),
            &detail,
            false,
        )
        .await;
        true
    }

    /// Stores a monitor's rollback decision: in the round that triggered it (so `runs` and
    /// `report` show it) and, when `write`, as the monitor's end.
    async fn record_decision(
        &self,
        monitor_id: &str,
        report: &postflight_plan::Report,
        rollback: &RollbackReport,
        detail: &str,
        write: bool,
    ) {
        let store = &self.inner.store;
        if let Ok(Some(mut run)) = store.get_run(&report.run_id).await {
            run.rollback_json = serde_json::to_string(rollback).ok();
            let mut with_decision = report.clone();
            with_decision.rollback = rollback.clone();
            run.report_json = serde_json::to_string(&with_decision).ok();
            if let Err(e) = persist("a rollback decision", || store.update_run(&run)).await {
                tracing::error!(monitor_id, error = %e, "cannot record a rollback decision in its round");
            }
        }
        let record = {
            let mut state = self.state();
            let Some(active) = state.monitors.get_mut(monitor_id) else {
                return;
            };
            active.record.status = MonitorStatus::RolledBack;
            active.record.ended_ms = Some(now_ms());
            active.record.rollback_json = serde_json::to_string(rollback).ok();
            active.record.detail = Some(detail.to_owned());
            active.record.clone()
        };
        if write
            && let Err(e) = persist("a monitor's rollback", || store.update_monitor(&record)).await
        {
            tracing::error!(monitor_id, error = %e, "cannot record a monitor's rollback");
        }
    }

    /// A monitor running in this coordinator, as it stands.
    fn active_monitor(&self, monitor_id: &str) -> Option<MonitorRecord> {
        self.state()
            .monitors
            .get(monitor_id)
            .map(|m| m.record.clone())
    }

    fn announce(&self, monitor_id: &str, event: MonitorEvent) {
        if let Some(active) = self.state().monitors.get_mut(monitor_id) {
            active.history.push(event.clone());
            let _ = active.events.send(event);
        }
    }

    /// Stops a monitor another coordinator adopted (this one stalled past its lease),
    /// writing nothing: the adopter runs its rounds now.
    pub(super) async fn let_go_of_monitor(&self, monitor_id: &str) {
        let stop = self
            .state()
            .monitors
            .get(monitor_id)
            .map(|m| m.stop.clone());
        tracing::warn!(
            monitor_id,
            "another coordinator adopted this monitor: letting it go"
        );
        self.end_monitor(
            monitor_id,
            MonitorStatus::Stopped,
            None,
            "adopted by another coordinator",
            false,
        )
        .await;
        if let Some(stop) = stop {
            stop.notify_one();
        }
    }

    async fn end_monitor(
        &self,
        monitor_id: &str,
        status: MonitorStatus,
        rollback: Option<RollbackReport>,
        detail: &str,
        write: bool,
    ) {
        let Some(active) = self.state().monitors.remove(monitor_id) else {
            return;
        };
        let mut record = active.record;
        record.status = status;
        record.ended_ms = Some(now_ms());
        record.rollback_json = rollback
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok());
        record.detail = Some(detail.to_owned());
        if write && let Err(e) = self.inner.store.update_monitor(&record).await {
            tracing::error!(monitor_id, error = %e, "cannot record a monitor's end");
        }
        tracing::info!(
            monitor_id,
            status = status.as_str(),
            "monitor ended: {detail}"
        );
        let _ = active.events.send(MonitorEvent::now(
            monitor_id,
            MonitorEventKind::Ended {
                status,
                detail: detail.to_owned(),
                rollback,
            },
        ));
    }

    /// A monitor, live if it runs here.
    pub async fn get_monitor(&self, monitor_id: &str) -> CoordinatorResult<MonitorRecord> {
        if let Some(record) = self.active_monitor(monitor_id) {
            return Ok(record);
        }
        self.inner
            .store
            .get_monitor(monitor_id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("no monitor with id {monitor_id}")))
    }

    /// Monitors, newest first.
    pub async fn list_monitors(&self, limit: u32) -> CoordinatorResult<Vec<MonitorRecord>> {
        let stored = self.inner.store.list_monitors(limit).await?;
        let state = self.state();
        Ok(stored
            .into_iter()
            .map(|r| {
                state
                    .monitors
                    .get(&r.monitor_id)
                    .map_or(r, |m| m.record.clone())
            })
            .collect())
    }

    /// The rounds so far and the live events of a monitor; `None` when it has ended.
    pub async fn watch_monitor(
        &self,
        monitor_id: &str,
    ) -> CoordinatorResult<(Vec<MonitorEvent>, Option<broadcast::Receiver<MonitorEvent>>)> {
        if let Some(active) = self.state().monitors.get(monitor_id) {
            return Ok((active.history.clone(), Some(active.events.subscribe())));
        }
        let record = self.get_monitor(monitor_id).await?;
        let rollback: Option<RollbackReport> = record
            .rollback_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok());
        let ended = MonitorEvent::now(
            monitor_id,
            MonitorEventKind::Ended {
                status: record.status,
                detail: record.detail.clone().unwrap_or_default(),
                rollback,
            },
        );
        Ok((vec![ended], None))
    }

    /// Stops a monitor after its current round.
    pub async fn stop_monitor(&self, monitor_id: &str) -> CoordinatorResult<MonitorRecord> {
        let stop = self
            .state()
            .monitors
            .get(monitor_id)
            .map(|m| (m.stop.clone(), m.ended.clone()));
        match stop {
            Some(stop) => {
                let (stop, ended) = stop;
                stop.notify_one();
                // The monitor ends after its current step; its record says how.
                let _ = tokio::time::timeout(Duration::from_secs(1), ended.cancelled()).await;
                self.get_monitor(monitor_id).await
            }
            None => {
                let record = self.get_monitor(monitor_id).await?;
                Err(CoordinatorError::FailedPrecondition(format!(
                    "monitor {monitor_id} has already ended ({})",
                    record.status.as_str()
                )))
            }
        }
    }
}
