//! Feedback about a migration: what people and tools report after it ran ("checkout is slower
//! since m-42"), kept per migration. `regression` reports can act: a plan's
//! `rollback.feedback_above: N` calls for a rollback when more than N arrived within the
//! monitor window.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Plan;
use crate::rollback::RollbackReport;
use crate::vars::Lookup;

/// The longest feedback text.
pub const MAX_FEEDBACK_TEXT: usize = 4096;
/// The longest source name.
pub const MAX_FEEDBACK_SOURCE: usize = 128;

/// What a feedback report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackKind {
    /// Something that worked before the migration does not any more: counts for
    /// `rollback.feedback_above`.
    Regression,
    /// A defect, not necessarily caused by the migration.
    Bug,
    /// Anything else worth knowing.
    Info,
}

impl FeedbackKind {
    /// The name used in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Regression => "regression",
            FeedbackKind::Bug => "bug",
            FeedbackKind::Info => "info",
        }
    }

    /// Parses a name; empty is `info`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "regression" => FeedbackKind::Regression,
            "bug" => FeedbackKind::Bug,
            "info" | "" => FeedbackKind::Info,
            _ => return None,
        })
    }
}

/// One feedback report, as reports and listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackItem {
    /// regression, bug or info.
    pub kind: FeedbackKind,
    /// What was seen.
    pub text: String,
    /// Who or what reported it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// When it arrived (RFC 3339).
    pub created_at: String,
}

/// The reason to roll back when more `regression` reports about `migration` arrived within
/// `window` than the plan's `rollback.feedback_above` allows; `None` otherwise (or when the
/// plan does not act on feedback).
pub fn feedback_trigger(
    plan: &Plan,
    migration: &str,
    regressions: u64,
    window: Duration,
) -> Option<String> {
    let above = plan.rollback.as_ref()?.feedback_above?;
    (regressions > u64::from(above)).then(|| {
        format!(
            "{regressions} regression reports about migration {migration} in the last {} (more than feedback_above {above})",
            crate::duration::PlanDuration(window)
        )
    })
}

/// Adds `reason` to a rollback decision: a decision that recommended nothing now recommends
/// the plan's action for this reason.
pub fn add_reason(plan: &Plan, decision: &mut RollbackReport, reason: String, env: &dyn Lookup) {
    if !decision.recommended {
        let held_back = std::mem::take(&mut decision.held_back);
        let dry_run = decision.dry_run;
        *decision = crate::rollback::decision(plan, Vec::new(), env);
        decision.held_back = held_back;
        decision.dry_run |= dry_run;
        decision.recommended = true;
    }
    decision.reasons.push(reason);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{Expander, parse_plan};

    fn plan(rollback: &str) -> Plan {
        let env: HashMap<String, String> = HashMap::new();
        parse_plan(
            &format!(
                "name: p\nchecks:\n  - name: up\n    http: {{url: \"http://x/\"}}\n{rollback}"
            ),
            "p.yaml",
            Expander::plan(&env),
        )
        .unwrap()
    }

    #[test]
    fn more_regressions_than_allowed_call_for_the_plans_action() {
        let plan = plan("rollback:\n  feedback_above: 2\n  action: {command: [./undo.sh]}\n");
        let window = Duration::from_secs(300);
        assert_eq!(feedback_trigger(&plan, "m-1", 2, window), None);
        let reason = feedback_trigger(&plan, "m-1", 3, window).unwrap();
        assert_eq!(
            reason,
            "3 regression reports about migration m-1 in the last 5m (more than feedback_above 2)"
        );
        let env: HashMap<String, String> = HashMap::new();
        let mut decision = RollbackReport {
            held_back: vec!["kept".into()],
            ..RollbackReport::default()
        };
        add_reason(&plan, &mut decision, reason.clone(), &env);
        assert!(decision.recommended);
        assert_eq!(decision.reasons, [reason]);
        assert_eq!(decision.action.as_deref(), Some("./undo.sh"));
        assert_eq!(decision.held_back, ["kept"]);
        // Without feedback_above, feedback never acts.
        let quiet = super::tests::plan("rollback: {on_fail: true}\n");
        assert_eq!(feedback_trigger(&quiet, "m-1", 1000, window), None);
    }

    #[test]
    fn kinds_parse_and_default_to_info() {
        assert_eq!(FeedbackKind::parse(""), Some(FeedbackKind::Info));
        assert_eq!(
            FeedbackKind::parse("regression"),
            Some(FeedbackKind::Regression)
        );
        assert_eq!(FeedbackKind::parse("Regression"), None);
    }
}
