//! Rollback triggers: whether a finished run (or a monitoring window) calls for a rollback, and
//! the reasons, each naming the measured value, the threshold and where it came from.
//!
//! Deciding is pure; executing an action is the coordinator's job.

use serde::{Deserialize, Serialize};

use crate::duration::{PlanDuration, human_duration};
use crate::model::{KubeTarget, Plan, RollbackAction, Severity};
use std::time::Duration;

use crate::report::{CheckReport, RequestCount, RequestStats};
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
    /// Why an action was skipped (cooldown, executed already) or what it did (addition).
    #[serde(default)]
    pub detail: Option<String>,
    /// Who executed the action: a coordinator or a CLI (addition).
    #[serde(default)]
    pub executed_by: Option<String>,
}

/// What the triggers look at: the latest verdict, and the requests of the run (or, while
/// monitoring, of the sliding window).
#[derive(Debug, Clone)]
pub struct Measurements<'a> {
    /// Verdict of the latest run.
    pub overall: Overall,
    /// Checks of the latest run (to name what failed).
    pub checks: &'a [CheckReport],
    /// Requests made.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Request p99 in milliseconds, merged over every region.
    pub p99_ms: Option<f64>,
    /// Failed and total requests per check, to name where errors came from.
    pub per_check: Vec<(String, RequestCount)>,
    /// Regions the figures cover.
    pub regions: &'a [String],
    /// `None` for one run, else the window's span (and rounds) the figures cover.
    pub window: Option<(Duration, usize)>,
}

impl Measurements<'_> {
    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    fn scope(&self) -> String {
        match self.window {
            None => format!("regions: {}", self.regions.join(", ")),
            Some((span, rounds)) => format!(
                "over the last {} ({rounds} rounds), regions: {}",
                PlanDuration(span),
                self.regions.join(", ")
            ),
        }
    }
}

/// The reasons to roll back, one sentence per trigger that fires; empty when none does.
/// Without a `rollback:` section only the verdict counts (a FAIL recommends rollback, as its
/// summary says).
pub fn triggers(plan: &Plan, m: &Measurements<'_>) -> Vec<String> {
    let mut reasons = Vec::new();
    let config = plan.rollback.as_ref();
    if config.is_none_or(|r| r.on_fail) && m.overall == Overall::Fail {
        reasons.push(fail_reason(m.checks, m.regions));
    }
    let Some(config) = config else {
        return reasons;
    };
    if let Some(threshold) = config.error_rate_above
        && m.requests > 0
        && m.error_rate() > threshold
    {
        let sources: Vec<String> = m
            .per_check
            .iter()
            .filter(|(_, c)| c.errors > 0)
            .map(|(name, c)| format!("{name} {}/{}", c.errors, c.count))
            .collect();
        reasons.push(format!(
            "request error rate {} is above {} ({} of {} requests failed; {}; {})",
            percent(m.error_rate()),
            percent(threshold),
            m.errors,
            m.requests,
            sources.join(", "),
            m.scope()
        ));
    }
    if let (Some(threshold), Some(p99)) = (config.p99_latency_above, m.p99_ms)
        && p99 > threshold.as_secs_f64() * 1e3
    {
        reasons.push(format!(
            "request p99 {} is above {} (over {} requests, {})",
            human_duration(Duration::from_secs_f64(p99 / 1e3)),
            PlanDuration(threshold),
            m.requests,
            m.scope()
        ));
    }
    reasons
}

/// The rollback decision of one finished run, before any action: the triggers on the run's
/// own verdict and requests. `env` resolves the action's defaults (`$K8S_DEPLOYMENT`, …) for
/// its description.
pub fn recommend(
    plan: &Plan,
    overall: Overall,
    checks: &[CheckReport],
    requests: &RequestStats,
    regions: &[String],
    env: &dyn Lookup,
) -> RollbackReport {
    let measurements = Measurements {
        overall,
        checks,
        requests: requests.count,
        errors: requests.errors,
        p99_ms: requests.latency_ms.map(|l| l.p99),
        per_check: checks
            .iter()
            .map(|c| (c.name.clone(), c.requests))
            .collect(),
        regions,
        window: None,
    };
    decision(plan, triggers(plan, &measurements), env)
}

/// A decision with these reasons, not executed yet.
pub fn decision(plan: &Plan, reasons: Vec<String>, env: &dyn Lookup) -> RollbackReport {
    let config = plan.rollback.as_ref();
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
        detail: None,
        executed_by: None,
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

/// What a rollback action is told: sent as the webhook's JSON body and, as environment
/// variables, to a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackContext {
    /// The plan's name.
    pub plan: String,
    /// The run whose result triggered the rollback.
    pub run_id: String,
    /// The monitor that ran it, if any.
    pub monitor_id: Option<String>,
    /// PASS, WARN, FAIL or INCONCLUSIVE.
    pub verdict: String,
    /// The report's summary line.
    pub summary: String,
    /// Why.
    pub reasons: Vec<String>,
    /// Regions the decision covers.
    pub regions: Vec<String>,
    /// RFC 3339.
    pub decided_at: String,
    /// Who executes the action (for the receiver's logs).
    pub executed_by: String,
}

impl RollbackContext {
    /// The webhook body: this context as JSON.
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The environment of a command action.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("POSTFLIGHT_PLAN".into(), self.plan.clone()),
            ("POSTFLIGHT_RUN_ID".into(), self.run_id.clone()),
            (
                "POSTFLIGHT_MONITOR_ID".into(),
                self.monitor_id.clone().unwrap_or_default(),
            ),
            ("POSTFLIGHT_VERDICT".into(), self.verdict.clone()),
            ("POSTFLIGHT_SUMMARY".into(), self.summary.clone()),
            ("POSTFLIGHT_REASONS".into(), self.reasons.join("\n")),
            ("POSTFLIGHT_REGIONS".into(), self.regions.join(",")),
            ("POSTFLIGHT_DECIDED_AT".into(), self.decided_at.clone()),
        ]
    }
}
