//! Rollback decisions: whether a finished run (or a monitor's window) calls for a rollback,
//! whether that decision may act, and the sentences that explain both — the reasons that fired
//! and, as carefully, why the triggers that came close did not.
//!
//! The rules (README, "When a verdict may act"): rate and p99 triggers are evaluated per
//! required region and gated by the plan's quorum ([`triggers`]), rates act on the Wilson
//! lower bound rather than on the raw ratio, monitors act on persistence
//! ([`crate::monitor::MonitorSession`]), and missing data never acts. Deciding is pure;
//! executing an action is `postflight-rollback`'s job.

mod triggers;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{KubeTarget, Plan, RollbackAction};
use crate::secrets::redact_url;
use crate::vars::Lookup;
use crate::verdict::Overall;

pub use triggers::{Evaluation, Evidence, Merged, RegionFigures, evaluate, evaluate_at};

/// What became of a decision's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// Claimed and started; the outcome is stored when it ends.
    Pending,
    /// The action reported success.
    Succeeded,
    /// The action failed (or could not be recorded, so it was never started).
    Failed,
    /// Decided but not executed: dry run.
    DryRun,
    /// Not executed: cooldown, executed already, or the run may not act (missing data).
    Skipped,
    /// Its executor stopped while it ran: the outcome is unknown and the action is not run
    /// again (`kubectl rollout undo` twice re-deploys the bad release).
    Interrupted,
}

impl ActionOutcome {
    /// The name used in reports, the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Pending => "pending",
            ActionOutcome::Succeeded => "succeeded",
            ActionOutcome::Failed => "failed",
            ActionOutcome::DryRun => "dry_run",
            ActionOutcome::Skipped => "skipped",
            ActionOutcome::Interrupted => "interrupted",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => ActionOutcome::Pending,
            "succeeded" => ActionOutcome::Succeeded,
            "failed" => ActionOutcome::Failed,
            "dry_run" => ActionOutcome::DryRun,
            "skipped" => ActionOutcome::Skipped,
            "interrupted" => ActionOutcome::Interrupted,
            _ => return None,
        })
    }
}

impl fmt::Display for ActionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `rollback` object of a report.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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
    /// What became of the action; `null` when nothing was attempted.
    pub outcome: Option<ActionOutcome>,
    /// The action's error, when it failed.
    pub error: Option<String>,
    /// Why an action was skipped (cooldown, executed already, missing data) or what it did
    /// (addition).
    #[serde(default)]
    pub detail: Option<String>,
    /// Who executed the action: a coordinator or a CLI (addition).
    #[serde(default)]
    pub executed_by: Option<String>,
    /// Why triggers that came close did not fire: a region alone above a threshold, a rate
    /// without enough evidence, a monitor holding fewer rounds than it needs (addition).
    #[serde(default)]
    pub held_back: Vec<String>,
}

impl RollbackReport {
    /// Whether an action should still be carried out for this decision: recommended, and
    /// nothing (a refusal to act on missing data) has settled it yet.
    pub fn awaits_action(&self) -> bool {
        self.recommended && self.outcome.is_none()
    }
}

/// How a run ended, as far as acting on it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every required region reported.
    Completed,
    /// The run's deadline passed with data missing.
    TimedOut,
    /// An operator stopped it.
    Cancelled,
}

/// Whether a decision taken on a run that ended so, with this verdict, may execute an action;
/// `Err` says why not. Missing data never acts unless the plan says `on_inconclusive: true`.
pub fn may_act(plan: &Plan, overall: Overall, end: RunEnd) -> Result<(), String> {
    if plan.acts_on_inconclusive() {
        return Ok(());
    }
    let why = match end {
        RunEnd::TimedOut => "the run timed out before every region reported",
        RunEnd::Cancelled => "the run was cancelled",
        RunEnd::Completed if overall == Overall::Inconclusive => "the verdict is INCONCLUSIVE",
        RunEnd::Completed => return Ok(()),
    };
    Err(format!(
        "{why}, and missing data never acts (rollback.on_inconclusive: false)"
    ))
}

/// The rollback decision of one finished run, before any action: the triggers on the run's
/// own verdict and requests, and whether the way the run ended allows acting on them (a
/// recommendation that may not act comes back `skipped`, with why in `detail`). `env` resolves
/// the action's defaults (`$K8S_DEPLOYMENT`, …) for its description.
pub fn decide_run(
    plan: &Plan,
    evidence: &Evidence<'_>,
    end: RunEnd,
    env: &dyn Lookup,
) -> RollbackReport {
    let evaluation = evaluate(plan, evidence);
    let mut report = decision(plan, evaluation.reasons, env);
    report.held_back = evaluation.held_back;
    if report.recommended
        && let Err(why) = may_act(plan, evidence.overall, end)
    {
        report.outcome = Some(ActionOutcome::Skipped);
        report.detail = Some(format!("not executed: {why}"));
    }
    report
}

/// A decision with these reasons, not executed yet.
pub fn decision(plan: &Plan, reasons: Vec<String>, env: &dyn Lookup) -> RollbackReport {
    let config = plan.rollback.as_ref();
    RollbackReport {
        recommended: !reasons.is_empty(),
        dry_run: config.is_some_and(|r| r.dry_run),
        reasons,
        action: config
            .and_then(|r| r.action.as_ref())
            .map(|a| a.describe(env)),
        ..RollbackReport::default()
    }
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
            // Shown in logs, reports and the status page: credential arguments masked.
            RollbackAction::Command(argv) => {
                crate::secrets::Secrets::of_action(self).scrub(&argv.join(" "))
            }
        }
    }

    /// `kubectl`, `kubernetes`, `webhook` or `command`: recorded with its claim, for the
    /// audit of interrupted actions.
    pub fn kind(&self) -> &'static str {
        match self {
            RollbackAction::Kubectl(_) => "kubectl",
            RollbackAction::Kubernetes(_) => "kubernetes",
            RollbackAction::Webhook(_) => "webhook",
            RollbackAction::Command(_) => "command",
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
    /// The context of a decision taken on `report` by `executed_by`, now.
    pub fn of(
        plan: &Plan,
        report: &crate::Report,
        monitor_id: Option<&str>,
        executed_by: &str,
        decided_at: std::time::SystemTime,
    ) -> Self {
        Self {
            plan: plan.name.clone(),
            run_id: report.run_id.clone(),
            monitor_id: monitor_id.map(str::to_owned),
            verdict: report.status.as_str().to_owned(),
            summary: report.summary.clone(),
            reasons: report.rollback.reasons.clone(),
            regions: report.regions.clone(),
            decided_at: crate::report::rfc3339(decided_at),
            executed_by: executed_by.to_owned(),
        }
    }

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

/// A share as a percentage with one decimal (`0.1` → `10.0%`).
pub(crate) fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// The span a window covers, for sentences: `over the last 5m (10 rounds)`.
pub(crate) fn window_scope(window: Option<(Duration, usize)>) -> Option<String> {
    window.map(|(span, rounds)| {
        format!(
            "over the last {} ({rounds} rounds)",
            crate::duration::PlanDuration(span)
        )
    })
}
