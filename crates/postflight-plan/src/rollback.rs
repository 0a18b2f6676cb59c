//! Rollback triggers: whether a finished run (or a monitoring window) calls for a rollback, and
//! the reasons, each naming the measured value, the threshold and where it came from.
//!
//! Deciding is pure; executing an action is the coordinator's job.

use serde::{Deserialize, Serialize};

use crate::duration::{PlanDuration, human_duration};
use crate::model::{KubeTarget, Plan, RollbackAction, Severity};
use crate::report::{CheckReport, RequestStats};
use crate::secrets::redact_url;
use crate::vars::Lookup;
use crate::verdict::{CheckStatus, Overall};

/// The `rollback` object of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackReport {
    /// A trigger condition holds.
    pub recommended: bool,
    /// The action was started (or, with `dry_run`, would have been).
    pub triggered: bool,
    /// Decided and recorded but never executed.
    pub dry_run: bool,
    /// Why, one sentence per trigger that fired.
    pub reasons: Vec<String>,
    /// The action as a command line or URL; `null` without an action.
    pub action: Option<String>,
    /// `succeeded`, `failed`, `dry_run`, `skipped` or `null` when nothing was attempted.
    pub outcome: Option<String>,
    /// The action's error, when it failed.
    pub error: Option<String>,
}

/// Evaluates the plan's triggers on a run's verdict and requests. Without a `rollback:`
/// section only the verdict counts (a FAIL recommends rollback, as its summary says).
/// `env` resolves the action's defaults (`$K8S_DEPLOYMENT`, …) for its description.
pub fn recommend(
    plan: &Plan,
    overall: Overall,
    checks: &[CheckReport],
    requests: &RequestStats,
    regions: &[String],
    env: &dyn Lookup,
) -> RollbackReport {
    let mut reasons = Vec::new();
    let config = plan.rollback.as_ref();
    let on_fail = config.is_none_or(|r| r.on_fail);
    if on_fail && overall == Overall::Fail {
        reasons.push(fail_reason(checks, regions));
    }
    if let Some(config) = config {
        if let Some(threshold) = config.error_rate_above
            && requests.count > 0
            && requests.error_rate > threshold
        {
            let sources: Vec<String> = checks
                .iter()
                .filter(|c| c.requests.errors > 0)
                .map(|c| format!("{} {}/{}", c.name, c.requests.errors, c.requests.count))
                .collect();
            reasons.push(format!(
                "request error rate {} is above {} ({} of {} requests failed; {}; regions: {})",
                percent(requests.error_rate),
                percent(threshold),
                requests.errors,
                requests.count,
                sources.join(", "),
                regions.join(", ")
            ));
        }
        if let (Some(threshold), Some(latency)) = (config.p99_latency_above, &requests.latency_ms)
            && latency.p99 > threshold.as_secs_f64() * 1e3
        {
            reasons.push(format!(
                "request p99 {} is above {} (over {} requests in regions: {})",
                human_duration(std::time::Duration::from_secs_f64(latency.p99 / 1e3)),
                PlanDuration(threshold),
                latency.count,
                regions.join(", ")
            ));
        }
    }
    RollbackReport {
        recommended: !reasons.is_empty(),
        triggered: false,
        dry_run: config.is_some_and(|r| r.dry_run),
        reasons,
        action: config
            .and_then(|r| r.action.as_ref())
            .map(|a| a.describe(env)),
        outcome: None,
        error: None,
    }
}

fn fail_reason(checks: &[CheckReport], regions: &[String]) -> String {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail && c.severity == Severity::Critical)
        .map(|c| {
            let failing: Vec<&String> = c
                .regions
                .iter()
                .filter(|(_, r)| r.status == CheckStatus::Fail)
                .map(|(name, _)| name)
                .collect();
            if regions.len() > 1 {
                format!(
                    "{} failed in {} of {} regions",
                    c.name,
                    failing.len(),
                    regions.len()
                )
            } else {
                format!("{} failed", c.name)
            }
        })
        .collect();
    format!("verdict FAIL: {}", failed.join(", "))
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

impl RollbackAction {
    /// The action as an operator would read it in an audit log (secrets masked).
    pub fn describe(&self, env: &dyn Lookup) -> String {
        match self {
            RollbackAction::Kubectl(target) => {
                let (deployment, namespace) = target.resolve(env);
                format!("kubectl rollout undo deployment/{deployment} -n {namespace}")
            }
            RollbackAction::Kubernetes(target) => {
                let (deployment, namespace) = target.resolve(env);
                format!("kubernetes API: undo deployment/{deployment} in namespace {namespace}")
            }
            RollbackAction::Webhook(hook) => format!("POST {}", redact_url(&hook.url)),
            RollbackAction::Command(argv) => argv.join(" "),
        }
    }
}

impl KubeTarget {
    /// Deployment and namespace: the plan's, else `$K8S_DEPLOYMENT` / `$K8S_NAMESPACE`, else
    /// the seed article's `agent-backend` / `default`.
    pub fn resolve(&self, env: &dyn Lookup) -> (String, String) {
        let pick = |own: &Option<String>, var: &str, default: &str| {
            own.clone()
                .or_else(|| env.get(var).filter(|v| !v.is_empty()))
                .unwrap_or_else(|| default.to_owned())
        };
        (
            pick(&self.deployment, "K8S_DEPLOYMENT", "agent-backend"),
            pick(&self.namespace, "K8S_NAMESPACE", "default"),
        )
    }
}
