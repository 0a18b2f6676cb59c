//! Executing rollbacks from the coordinator: the shared controller
//! (`postflight_rollback::controller`) with the database as its ledger, so a rollback runs
//! exactly once per run (or monitor) and never within the plan's cooldown, even with several
//! coordinators on one PostgreSQL — the claim is a unique row taken under a lock in the
//! database itself.
//!
//! The lifecycle of an action: the claim is committed (durably) and the decision stored as
//! `pending` before the action starts; the action runs in a task this coordinator owns, never
//! in a probe's stream or a request handler; its outcome is stored when it ends. A coordinator
//! that restarts and finds its own claims still pending records them `interrupted` and does
//! not run them again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use postflight_plan::model::Plan;
use postflight_plan::rollback::{ActionOutcome, RollbackContext, RollbackReport};
use postflight_plan::vars::ProcessEnv;
use postflight_rollback::{ClaimOutcome, ClaimedAction, Ledger, Prepared, RollbackClaim};
use tokio::sync::Notify;

use super::Coordinator;
use crate::error::CoordinatorResult;
use crate::metrics::{DecisionLabels, OutcomeLabels};
use crate::storage::{MonitorStatus, Store, StoreError, StoreResult};

/// The coordinator's database as the rollback ledger.
struct StoreLedger<'a, S>(&'a S);

impl<S: Store> Ledger for StoreLedger<'_, S> {
    type Error = StoreError;

    async fn claim(&self, claim: &RollbackClaim, cooldown_ms: i64) -> StoreResult<ClaimOutcome> {
        self.0.claim_rollback(claim, cooldown_ms).await
    }

    async fn finish(
        &self,
        subject: &str,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) -> StoreResult<()> {
        persist("a rollback's outcome", || {
            self.0.finish_rollback(subject, outcome, error)
        })
        .await
    }
}

/// A write that must not be lost to a passing database error: tried a few times, with
/// growing pauses, before its error is returned.
pub(super) async fn persist<T, F, Fut>(
    what: &str,
    mut write: F,
) -> Result<T, crate::storage::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::storage::StoreError>>,
{
    let mut pause = std::time::Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match write().await {
            Ok(done) => return Ok(done),
            Err(e) if attempt >= 5 => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot store {what} yet; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
        }
    }
}

/// How long after its claim a pending action is certainly dead, whoever claimed it: every
/// action ends within its time limit, and its outcome is written right after.
const STALE_CLAIM: std::time::Duration =
    std::time::Duration::from_secs(postflight_rollback::ACTION_TIMEOUT.as_secs() + 300);

/// Actions running in this coordinator's tasks, so that a shutdown (or a test) can wait for
/// them to record their outcome.
#[derive(Debug, Default)]
pub(crate) struct ActionsInFlight {
    running: AtomicUsize,
    idle: Notify,
}

impl ActionsInFlight {
    fn start(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// Replaces the rollback of a stored report (and returns both JSON texts), for outcomes
/// recorded after the report was stored.
fn patched(report_json: Option<&str>, rollback: &RollbackReport) -> (Option<String>, String) {
    let report = report_json
        .and_then(|json| serde_json::from_str::<postflight_plan::Report>(json).ok())
        .map(|mut report| {
            report.rollback = rollback.clone();
            serde_json::to_string(&report).unwrap_or_default()
        });
    (report, serde_json::to_string(rollback).unwrap_or_default())
}

/// Why a `command` action does not run: what the operator can do about it.
pub(crate) const COMMANDS_NOT_ALLOWED: &str = "this coordinator does not run `command` actions \
     (start it with --allow-command-actions to allow them, or use kubectl, kubernetes or \
     webhook)";

impl<S: Store> Coordinator<S> {
    /// Whether `plan`'s action may not run here: a `command` without
    /// `--allow-command-actions`.
    pub(crate) fn refuses_action_of(&self, plan: &Plan) -> bool {
        !self.inner.config.allow_command_actions
            && matches!(
                plan.rollback.as_ref().and_then(|r| r.action.as_ref()),
                Some(postflight_plan::model::RollbackAction::Command(_))
            )
    }

    /// What an action is told about a decision taken on `report`.
    pub(crate) fn rollback_context(
        &self,
        plan: &Plan,
        report: &postflight_plan::Report,
        monitor_id: Option<&str>,
    ) -> RollbackContext {
        RollbackContext::of(
            plan,
            report,
            monitor_id,
            &self.inner.config.identity,
            SystemTime::now(),
        )
    }

    /// The first step of acting on `decision`: claims it in the database (committed before
    /// this returns) and marks it `pending`, or records why nothing runs. Counts the decision.
    pub(crate) async fn claim_rollback(
        &self,
        plan: &Plan,
        decision: &mut RollbackReport,
        context: &RollbackContext,
        subject: &str,
    ) -> Prepared {
        // Runs accepted before the coordinator was restarted without the flag: the decision
        // stands, the command does not run.
        if decision.recommended && self.refuses_action_of(plan) {
            decision.outcome = Some(ActionOutcome::Failed);
            decision.error = Some(COMMANDS_NOT_ALLOWED.to_owned());
            self.count_outcome(decision.outcome);
            return Prepared::Settled { claim: None };
        }
        let prepared = postflight_rollback::claim(
            plan,
            decision,
            context,
            subject,
            &StoreLedger(&*self.inner.store),
            &ProcessEnv,
        )
        .await;
        let metrics = &self.inner.metrics;
        let verdict = if decision.recommended {
            "rollback"
        } else {
            "no_rollback"
        };
        metrics
            .rollback_decisions
            .get_or_create(&DecisionLabels {
                decision: verdict.to_owned(),
            })
            .inc();
        if !matches!(prepared, Prepared::Execute(_)) {
            self.count_outcome(decision.outcome);
        }
        prepared
    }

    /// The second step: runs a claimed action (in the caller's task, which this coordinator
    /// owns) and records its outcome in the ledger and in `decision`.
    pub(crate) async fn run_claimed(&self, claimed: &ClaimedAction, decision: &mut RollbackReport) {
        self.inner.actions.start();
        postflight_rollback::controller::execute(
            claimed,
            decision,
            &StoreLedger(&*self.inner.store),
            &ProcessEnv,
        )
        .await;
        self.count_outcome(decision.outcome);
        self.inner.actions.end();
    }

    fn count_outcome(&self, outcome: Option<ActionOutcome>) {
        if let Some(outcome) = outcome {
            self.inner
                .metrics
                .rollback_actions
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// Runs a run's claimed action in a task of its own and stores the run's report again
    /// with the outcome. The report (with `pending`) was stored before.
    pub(super) fn spawn_action(
        &self,
        mut record: crate::storage::RunRecord,
        mut decision: RollbackReport,
        claimed: Box<ClaimedAction>,
    ) {
        let this = self.clone();
        // Counted from now, so that a wait for actions never misses one about to start.
        self.inner.actions.start();
        self.spawn_tracked(async move {
            this.run_claimed(&claimed, &mut decision).await;
            let (report, rollback) = patched(record.report_json.as_deref(), &decision);
            record.report_json = report;
            record.rollback_json = Some(rollback);
            let store = &this.inner.store;
            if let Err(e) = persist("a rollback's outcome", || store.update_run(&record)).await {
                tracing::error!(run_id = %record.run_id, error = %e, "cannot record a rollback's outcome in its run");
            }
            tracing::info!(run_id = %record.run_id, outcome = ?decision.outcome, "rollback action ended");
            this.inner.actions.end();
        });
    }

    /// Waits until no action runs in this coordinator.
    pub async fn settle_actions(&self) {
        let actions = &self.inner.actions;
        loop {
            let idle = actions.idle.notified();
            if actions.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Withdraws a claim whose action was never started (its decision could not be stored),
    /// so the run may decide again once it resumes.
    pub(super) async fn release_claim(&self, subject: &str) {
        let store = &self.inner.store;
        if let Err(e) = persist("a withdrawn claim", || store.release_rollback(subject)).await {
            tracing::error!(subject, error = %e, "cannot withdraw a rollback claim that never ran");
        }
    }

    /// Claims without an outcome are settled: this coordinator's own (after a restart, what
    /// was running when it stopped) and anyone's older than any action may run. A claim whose
    /// decision was never stored never started: it is withdrawn, so its run or monitor decides
    /// again. An outcome the report recorded but the ledger did not is copied over. Every
    /// other one is recorded `interrupted` — in the ledger, the run's report and the monitor —
    /// and never run again: `kubectl rollout undo` twice re-deploys the bad release, and even
    /// the Kubernetes API undo is only harmless to repeat until the deployment controller
    /// renumbers the revisions.
    pub(super) async fn recover_interrupted(&self, only_stale: bool) -> CoordinatorResult<()> {
        let store = &self.inner.store;
        let stale_before = postflight_ops::host::now_ms() - STALE_CLAIM.as_millis() as i64;
        // Nobody else has this name: matching it alone would find nothing older than stale.
        let mine = if only_stale {
            ""
        } else {
            self.inner.config.identity.as_str()
        };
        for claim in store.pending_rollbacks(mine, stale_before).await? {
            let monitor_id = claim.subject.strip_prefix("monitor:");
            let run = store.get_run(&claim.run_id).await?;
            let monitor = match monitor_id {
                Some(id) => store.get_monitor(id).await?,
                None => None,
            };
            let recorded = match monitor_id {
                Some(_) => monitor
                    .as_ref()
                    .filter(|m| m.status != MonitorStatus::Running)
                    .and_then(|m| m.rollback_json.clone()),
                None => run
                    .as_ref()
                    .filter(|r| r.status.is_final())
                    .and_then(|r| r.rollback_json.clone()),
            };
            let Some(recorded) = recorded else {
                tracing::warn!(subject = %claim.subject, "a rollback was claimed but its decision never stored: withdrawn, the action never started");
                self.release_claim(&claim.subject).await;
                continue;
            };
            let recorded: Option<RollbackReport> = serde_json::from_str(&recorded).ok();
            if let Some(done) = recorded
                .as_ref()
                .filter(|r| !matches!(r.outcome, None | Some(ActionOutcome::Pending)))
            {
                let outcome = done.outcome.unwrap_or(ActionOutcome::Failed);
                tracing::warn!(subject = %claim.subject, outcome = outcome.as_str(), "a rollback's outcome was stored in its report only: recorded in the ledger too");
                store
                    .finish_rollback(&claim.subject, outcome, done.error.as_deref())
                    .await?;
                continue;
            }
            let error = postflight_rollback::interrupted(&claim.executed_by, claim.claimed_ms);
            tracing::error!(subject = %claim.subject, run_id = %claim.run_id, action = %claim.action_kind, "a rollback action was interrupted: {error}");
            store
                .finish_rollback(&claim.subject, ActionOutcome::Interrupted, Some(&error))
                .await?;
            self.count_outcome(Some(ActionOutcome::Interrupted));
            let mut rollback = recorded.unwrap_or_else(|| RollbackReport {
                recommended: true,
                triggered: true,
                executed_by: Some(claim.executed_by.clone()),
                ..RollbackReport::default()
            });
            rollback.outcome = Some(ActionOutcome::Interrupted);
            rollback.error = Some(error.clone());
            rollback.detail = None;
            if let Some(mut run) = run {
                let (report, json) = patched(run.report_json.as_deref(), &rollback);
                run.report_json = report.or(run.report_json);
                run.rollback_json = Some(json);
                store.update_run(&run).await?;
            }
            if let Some(mut monitor) = monitor {
                monitor.rollback_json = serde_json::to_string(&rollback).ok();
                monitor.detail = Some(format!("rollback interrupted: {error}"));
                store.update_monitor(&monitor).await?;
            }
        }
        Ok(())
    }

    /// Settles stale claims every minute: a coordinator that died during an action and never
    /// came back (or came back under another name) leaves them to the others.
    pub(super) fn watch_stale_claims(&self) {
        let this = self.clone();
        self.spawn_owned(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = this.recover_interrupted(true).await {
                    tracing::error!(error = %e, "cannot settle stale rollback claims");
                }
            }
        });
    }
}
