//! Rollback actions: what happens when a verdict calls for a rollback.
//!
//! - `kubectl`: `kubectl rollout undo deployment/<deployment> -n <namespace>`, as the seed
//!   article does;
//! - `kubernetes`: the same undo through the Kubernetes API (kube-rs), with kubectl's algorithm;
//! - `webhook`: a JSON POST signed with HMAC-SHA256 (`X-Postflight-Signature: sha256=<hex>`),
//!   with a timeout and bounded retries;
//! - `command`: an argv run with the decision in its environment.
//!
//! An action never panics and never hangs: every failure comes back as an [`ActionError`]
//! whose message is the audit log's sentence, and every action has a time limit.

mod command;
pub mod controller;
mod error;
pub mod kubectl;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod webhook;

use std::time::Duration;

use postflight_plan::model::RollbackAction;
use postflight_plan::rollback::RollbackContext;
use postflight_plan::vars::Lookup;

pub use error::ActionError;

pub use controller::{
    ClaimOutcome, ClaimedAction, Ledger, Prepared, RollbackClaim, carry_out, claim, interrupted,
};

/// Time limit of every action, retries included: process actions (kubectl, command), the
/// Kubernetes API undo and a webhook with all its attempts. A claim older than this whose
/// outcome was never recorded belongs to an executor that stopped.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Executes `action`: `Ok` with what was done, `Err` with why it failed.
pub async fn execute(
    action: &RollbackAction,
    context: &RollbackContext,
    env: &dyn Lookup,
) -> Result<String, ActionError> {
    tracing::warn!(plan = %context.plan, run_id = %context.run_id, action = %action.describe(env), "executing rollback");
    let result = match action {
        RollbackAction::Kubectl(target) => {
            let argv = kubectl::argv(target, env);
            command::run(&argv, &[], ACTION_TIMEOUT).await
        }
        #[cfg(feature = "kubernetes")]
        RollbackAction::Kubernetes(target) => kubernetes::undo(target, env, ACTION_TIMEOUT).await,
        #[cfg(not(feature = "kubernetes"))]
        RollbackAction::Kubernetes(_) => Err(ActionError::KubernetesNotBuilt),
        RollbackAction::Webhook(hook) => {
            match tokio::time::timeout(ACTION_TIMEOUT, webhook::post(hook, context)).await {
                Ok(result) => result,
                Err(_) => Err(ActionError::WebhookTimedOut {
                    limit: postflight_plan::duration::PlanDuration(ACTION_TIMEOUT),
                }),
            }
        }
        RollbackAction::Command(argv) => command::run(argv, &context.env(), ACTION_TIMEOUT).await,
    };
    match &result {
        Ok(done) => tracing::warn!(plan = %context.plan, "rollback succeeded: {done}"),
        Err(error) => tracing::error!(plan = %context.plan, "rollback failed: {error}"),
    }
    result
}
