//! The rollback controller: from a decision to an executed (or deliberately skipped) action.
//! Shared by the coordinator (whose ledger is its database) and the CLI's local runs (whose
//! ledger is a file), so both follow the same rules: at most once per subject, never within
//! the plan's cooldown, nothing executed in a dry run, every outcome recorded.

use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use postflight_plan::Plan;
use postflight_plan::rollback::{RollbackContext, RollbackReport};
use postflight_plan::vars::Lookup;

/// A request to execute a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackClaim {
    /// What is rolled back once: `run:<id>` or `monitor:<id>`.
    pub subject: String,
    /// The plan (cooldowns are per plan).
    pub plan_name: String,
    /// The run whose result triggered it.
    pub run_id: String,
    /// Who asks.
    pub executed_by: String,
    /// Unix milliseconds.
    pub claimed_ms: i64,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Execute it: nobody else will.
    Claimed,
    /// This subject was already claimed (another coordinator, or a replay).
    AlreadyClaimed {
        /// By whom.
        by: String,
        /// When, Unix milliseconds.
        at_ms: i64,
    },
    /// The plan was rolled back within its cooldown.
    CoolingDown {
        /// By whom.
        by: String,
        /// When, Unix milliseconds.
        at_ms: i64,
        /// For which run.
        run_id: String,
    },
}

/// Where claims are recorded; exactly one claimant of a subject gets `Claimed`.
pub trait Ledger: Send + Sync {
    /// Claims `claim` unless its subject was claimed or its plan rolled back within
    /// `cooldown_ms`.
    fn claim(
        &self,
        claim: &RollbackClaim,
        cooldown_ms: i64,
    ) -> impl Future<Output = Result<ClaimOutcome, String>> + Send;
    /// Records how a claimed rollback went.
    fn finish(
        &self,
        subject: &str,
        outcome: &str,
        error: Option<&str>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

fn when(ms: i64) -> String {
    postflight_plan::report::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Completes `decision` (which holds its reasons): claims and executes the plan's action when
/// a rollback is recommended, and records what happened in the decision. Never fails: a
/// failing action or ledger ends up in `outcome` and `error`.
pub async fn carry_out(
    plan: &Plan,
    decision: &mut RollbackReport,
    context: &RollbackContext,
    subject: &str,
    ledger: &impl Ledger,
    env: &dyn Lookup,
) -> Option<ClaimOutcome> {
    if !decision.recommended {
        return None;
    }
    let Some(config) = &plan.rollback else {
        decision.detail = Some("the plan has no rollback section: recommended only".to_owned());
        return None;
    };
    let Some(action) = &config.action else {
        decision.detail =
            Some("the plan's rollback has no action: decision recorded only".to_owned());
        return None;
    };
    if decision.dry_run {
        decision.triggered = true;
        decision.outcome = Some("dry_run".to_owned());
        decision.detail = Some(format!(
            "dry run: `{}` was not executed",
            action.describe(env)
        ));
        tracing::warn!(plan = %plan.name, subject, "rollback decided (dry run): {}", decision.reasons.join("; "));
        return None;
    }
    let claim = RollbackClaim {
        subject: subject.to_owned(),
        plan_name: plan.name.clone(),
        run_id: context.run_id.clone(),
        executed_by: context.executed_by.clone(),
        claimed_ms: now_ms(),
    };
    let outcome = match ledger
        .claim(&claim, config.cooldown.as_millis() as i64)
        .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(error = %e, "cannot claim a rollback");
            decision.outcome = Some("failed".to_owned());
            decision.error = Some(format!("cannot record the rollback: {e}"));
            return None;
        }
    };
    match &outcome {
        ClaimOutcome::Claimed => {
            decision.triggered = true;
            decision.executed_by = Some(context.executed_by.clone());
            let mut context = context.clone();
            context.reasons = decision.reasons.clone();
            match crate::execute(action, &context, env).await {
                Ok(done) => {
                    decision.outcome = Some("succeeded".to_owned());
                    decision.detail = Some(done);
                }
                Err(error) => {
                    decision.outcome = Some("failed".to_owned());
                    decision.error = Some(error);
                }
            }
            let outcome = decision.outcome.as_deref().unwrap_or("failed");
            if let Err(e) = ledger
                .finish(subject, outcome, decision.error.as_deref())
                .await
            {
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
