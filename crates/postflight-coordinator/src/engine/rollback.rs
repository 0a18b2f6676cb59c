//! Executing rollbacks from the coordinator: the shared controller
//! (`postflight_rollback::carry_out`) with the database as its ledger, so a rollback runs
//! exactly once per run (or monitor) and never within the plan's cooldown, even with several
//! coordinators on one PostgreSQL — the claim is a unique row taken under a lock in the
//! database itself.

use std::time::{Duration, UNIX_EPOCH};

use postflight_plan::rollback::{RollbackContext, RollbackReport};
use postflight_plan::vars::ProcessEnv;
use postflight_plan::{Plan, Report};
use postflight_rollback::{ClaimOutcome, Ledger, RollbackClaim};

use crate::metrics::{DecisionLabels, OutcomeLabels};

use super::Coordinator;
use crate::now_ms;
use crate::storage::Store;

/// The coordinator's database as the rollback ledger.
struct StoreLedger<'a, S>(&'a S);

impl<S: Store> Ledger for StoreLedger<'_, S> {
    async fn claim(&self, claim: &RollbackClaim, cooldown_ms: i64) -> Result<ClaimOutcome, String> {
        self.0
            .claim_rollback(claim, cooldown_ms)
            .await
            .map_err(|e| e.to_string())
    }

    async fn finish(
        &self,
        subject: &str,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), String> {
        self.0
            .finish_rollback(subject, outcome, error)
            .await
            .map_err(|e| e.to_string())
    }
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
            decided_at: postflight_plan::report::rfc3339(
                UNIX_EPOCH + Duration::from_millis(now_ms() as u64),
            ),
            executed_by: self.inner.config.identity.clone(),
        }
    }

    /// Claims and executes the plan's action for `decision`, recording the outcome in it.
    pub(crate) async fn execute_rollback(
        &self,
        plan: &Plan,
        decision: &mut RollbackReport,
        context: &RollbackContext,
        subject: &str,
    ) -> Option<ClaimOutcome> {
        let claimed = postflight_rollback::carry_out(
            plan,
            decision,
            context,
            subject,
            &StoreLedger(&self.inner.store),
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
        if let Some(outcome) = &decision.outcome {
            metrics
                .rollback_actions
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.clone(),
                })
                .inc();
        }
        claimed
    }
}
