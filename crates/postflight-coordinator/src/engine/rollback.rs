//! Executing rollbacks: exactly once per run (or monitor), never within the plan's cooldown,
//! even with several coordinators on one PostgreSQL — the claim is a unique row taken under
//! a lock in the database itself. Every decision, executed or not, is recorded with its
//! outcome and who executed it.

use std::time::{Duration, UNIX_EPOCH};

use postflight_plan::rollback::{RollbackContext, RollbackReport};
use postflight_plan::vars::ProcessEnv;
use postflight_plan::{Plan, Report};

use super::Coordinator;
use crate::now_ms;
use crate::storage::{ClaimOutcome, RollbackClaim, Store};

fn when(ms: i64) -> String {
    postflight_plan::report::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

impl<S: Store> Coordinator<S> {
    /// What an action is told about a decision taken on `report`.
    pub(crate) fn rollback_context(
        &self,
        plan: &Plan,
        report: &Report,
        monitor_id: Option<&str>,
    ) -> RollbackContext {
        RollbackContext {
            plan: plan.name.clone(),
            run_id: report.run_id.clone(),
            monitor_id: monitor_id.map(str::to_owned),
            verdict: report.status.as_str().to_owned(),
            summary: report.summary.clone(),
            reasons: report.rollback.reasons.clone(),
            regions: report.regions.clone(),
            decided_at: when(now_ms()),
            executed_by: self.inner.config.identity.clone(),
        }
    }

    /// Completes `decision` (already holding its reasons): claims and executes the plan's
    /// action when a rollback is recommended, and records what happened. Never fails: a
    /// failing action or database is recorded in the decision.
    pub(crate) async fn execute_rollback(
        &self,
        plan: &Plan,
        decision: &mut RollbackReport,
        mut context: RollbackContext,
        subject: String,
        dry_run: bool,
    ) -> Option<ClaimOutcome> {
        if !decision.recommended {
            return None;
        }
        let Some(config) = &plan.rollback else {
            decision.detail = Some("the plan has no rollback section: recommended only".to_owned());
            return None;
        };
        let Some(action) = &config.action else {
            decision.detail = Some("the plan's rollback has no action: decision recorded only".to_owned());
            return None;
        };
        context.reasons = decision.reasons.clone();
        if dry_run {
            decision.triggered = true;
            decision.dry_run = true;
            decision.outcome = Some("dry_run".to_owned());
            decision.detail = Some(format!("dry run: `{}` was not executed", action.describe(&ProcessEnv)));
            tracing::warn!(plan = %plan.name, subject, "rollback decided (dry run): {}", decision.reasons.join("; "));
            return None;
        }
        let identity = self.inner.config.identity.clone();
        let claim = RollbackClaim {
            subject: subject.clone(),
            plan_name: plan.name.clone(),
            run_id: context.run_id.clone(),
            executed_by: identity.clone(),
            claimed_ms: now_ms(),
        };
        let outcome = match self
            .inner
            .store
            .claim_rollback(&claim, config.cooldown.as_millis() as i64)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a rollback");
                decision.outcome = Some("failed".to_owned());
                decision.error = Some(format!("cannot record the rollback in the database: {e}"));
                return None;
            }
        };
        match &outcome {
            ClaimOutcome::Claimed => {
                decision.triggered = true;
                decision.executed_by = Some(identity);
                match postflight_rollback::execute(action, &context, &ProcessEnv).await {
                    Ok(done) => {
                        decision.outcome = Some("succeeded".to_owned());
                        decision.detail = Some(done);
                    }
                    Err(error) => {
                        decision.outcome = Some("failed".to_owned());
                        decision.error = Some(error);
                    }
                }
                let stored = self
                    .inner
                    .store
                    .finish_rollback(&subject, decision.outcome.as_deref().unwrap_or("failed"), decision.error.as_deref())
                    .await;
                if let Err(e) = stored {
                    tracing::error!(error = %e, "cannot record a rollback's outcome");
                }
            }
            ClaimOutcome::AlreadyClaimed { by, at_ms } => {
                decision.outcome = Some("skipped".to_owned());
                decision.detail = Some(format!("already executed by {by} at {}", when(*at_ms)));
            }
            ClaimOutcome::CoolingDown { by, at_ms, run_id } => {
                decision.outcome = Some("skipped".to_owned());
                decision.detail = Some(format!(
                    "cooldown: {by} rolled back plan {} at {} (run {run_id}); no second rollback within {}",
                    plan.name,
                    when(*at_ms),
                    postflight_plan::duration::PlanDuration(config.cooldown)
                ));
            }
        }
        Some(outcome)
    }
}
