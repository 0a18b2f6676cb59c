//! The rollback controller: from a decision to an executed (or deliberately skipped) action.
//! Shared by the coordinator (whose ledger is its database) and the CLI's local runs (whose
//! ledger is a file), so both follow the same rules: at most once per subject, never within
//! the plan's cooldown, nothing executed in a dry run, every outcome recorded.
//!
//! Acting is two steps, so that the decision is durable before anything happens:
//! [`claim`] records the claim in the ledger (durably, before it returns) and marks the
//! decision `pending`; whoever owns the action then runs [`execute`], which records the
//! outcome. An executor that dies between the two leaves a claim without outcome: whoever
//! finds it records `interrupted` ([`interrupted`]) and never runs it again — `kubectl rollout
//! undo` twice re-deploys the bad release.

use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use postflight_plan::model::Plan;
use postflight_plan::model::RollbackAction;
use postflight_plan::rollback::{ActionOutcome, RollbackContext, RollbackReport};
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
    /// `kubectl`, `kubernetes`, `webhook` or `command`, for the audit.
    pub action_kind: String,
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

/// Where claims are recorded; exactly one claimant of a subject gets `Claimed`, and a
/// `Claimed` answer is durable (it survives a crash of the claimant right after).
pub trait Ledger: Send + Sync {
    /// Why the ledger could not read or record a claim (the database's or the file's error):
    /// its message ends up in the decision's `error` and the log.
    type Error: std::fmt::Display + Send;
    /// Claims `claim` unless its subject was claimed or its plan rolled back within
    /// `cooldown_ms`.
    fn claim(
        &self,
        claim: &RollbackClaim,
        cooldown_ms: i64,
    ) -> impl Future<Output = Result<ClaimOutcome, Self::Error>> + Send;
    /// Records how a claimed rollback went.
    fn finish(
        &self,
        subject: &str,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

fn when(ms: i64) -> String {
    postflight_plan::report::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// A claimed action: whoever holds it runs [`execute`] exactly once.
#[derive(Debug, Clone)]
pub struct ClaimedAction {
    /// The claim's subject.
    pub subject: String,
    /// What to execute.
    pub action: RollbackAction,
    /// What the action is told.
    pub context: RollbackContext,
}

/// What [`claim`] settled.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Claimed: execute it (the decision says `pending`).
    Execute(Box<ClaimedAction>),
    /// Nothing to execute; the decision says why (and `claim` is the ledger's answer when it
    /// was asked).
    Settled {
        /// The ledger's answer, when a claim was made.
        claim: Option<ClaimOutcome>,
    },
}

/// The first step of acting on `decision` (which holds its reasons): when a rollback is
/// recommended and may still act, claims it in the ledger and marks the decision `pending`;
/// otherwise records in the decision why nothing happens (no action, dry run, cooldown,
/// executed already, the ledger failed). Never fails.
pub async fn claim(
    plan: &Plan,
    decision: &mut RollbackReport,
    context: &RollbackContext,
    subject: &str,
    ledger: &impl Ledger,
    env: &dyn Lookup,
) -> Prepared {
    let settled = Prepared::Settled { claim: None };
    if !decision.awaits_action() {
        return settled;
    }
    let Some(config) = &plan.rollback else {
        decision.detail = Some("the plan has no rollback section: recommended only".to_owned());
        return settled;
    };
    let Some(action) = &config.action else {
        decision.detail =
            Some("the plan's rollback has no action: decision recorded only".to_owned());
        return settled;
    };
    if decision.dry_run {
        decision.triggered = true;
        decision.outcome = Some(ActionOutcome::DryRun);
        decision.detail = Some(format!(
            "dry run: `{}` was not executed",
            action.describe(env)
        ));
        tracing::warn!(plan = %plan.name, subject, "rollback decided (dry run): {}", decision.reasons.join("; "));
        return settled;
    }
    let request = RollbackClaim {
        subject: subject.to_owned(),
        plan_name: plan.name.clone(),
        run_id: context.run_id.clone(),
        executed_by: context.executed_by.clone(),
        claimed_ms: postflight_ops::host::now_ms(),
        action_kind: action.kind().to_owned(),
    };
    let answer = match ledger
        .claim(&request, config.cooldown.as_millis() as i64)
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "cannot claim a rollback");
            decision.outcome = Some(ActionOutcome::Failed);
            decision.error = Some(format!(
                "cannot record the rollback, so it was not executed: {e}"
            ));
            return settled;
        }
    };
    match &answer {
        ClaimOutcome::Claimed => {
            decision.triggered = true;
            decision.executed_by = Some(context.executed_by.clone());
            decision.outcome = Some(ActionOutcome::Pending);
            decision.detail = Some(format!("`{}` is running", action.describe(env)));
            let mut context = context.clone();
            context.reasons = decision.reasons.clone();
            return Prepared::Execute(Box::new(ClaimedAction {
                subject: subject.to_owned(),
                action: action.clone(),
                context,
            }));
        }
        ClaimOutcome::AlreadyClaimed { by, at_ms } => {
            decision.outcome = Some(ActionOutcome::Skipped);
            decision.detail = Some(format!("already executed by {by} at {}", when(*at_ms)));
        }
        ClaimOutcome::CoolingDown { by, at_ms, run_id } => {
            decision.outcome = Some(ActionOutcome::Skipped);
            decision.detail = Some(format!(
                "cooldown: {by} rolled back plan {} at {} (run {run_id}); no second rollback within {}",
                plan.name,
                when(*at_ms),
                postflight_plan::duration::PlanDuration(config.cooldown)
            ));
        }
    }
    Prepared::Settled {
        claim: Some(answer),
    }
}

/// The second step: executes a claimed action, records its outcome in `decision` and in the
/// ledger. Never fails: a failing action ends up in `outcome` and `error`.
pub async fn execute(
    claimed: &ClaimedAction,
    decision: &mut RollbackReport,
    ledger: &impl Ledger,
    env: &dyn Lookup,
) {
    // What the action says (a command's output, a receiver's error page) is stored and
    // shown: its own credentials are masked first.
    let secrets = postflight_plan::secrets::Secrets::of_action(&claimed.action);
    match crate::execute(&claimed.action, &claimed.context, env).await {
        Ok(done) => {
            decision.outcome = Some(ActionOutcome::Succeeded);
            decision.detail = Some(secrets.scrub(&done));
        }
        Err(error) => {
            decision.outcome = Some(ActionOutcome::Failed);
            decision.detail = None;
            decision.error = Some(secrets.scrub(&error.to_string()));
        }
    }
    let outcome = decision.outcome.unwrap_or(ActionOutcome::Failed);
    if let Err(e) = ledger
        .finish(&claimed.subject, outcome, decision.error.as_deref())
        .await
    {
        tracing::error!(error = %e, subject = %claimed.subject, "cannot record a rollback's outcome");
    }
}

/// Both steps, for an executor that owns its action from start to end (the CLI).
pub async fn carry_out(
    plan: &Plan,
    decision: &mut RollbackReport,
    context: &RollbackContext,
    subject: &str,
    ledger: &impl Ledger,
    env: &dyn Lookup,
) -> Option<ClaimOutcome> {
    match claim(plan, decision, context, subject, ledger, env).await {
        Prepared::Execute(claimed) => {
            execute(&claimed, decision, ledger, env).await;
            Some(ClaimOutcome::Claimed)
        }
        Prepared::Settled { claim } => claim,
    }
}

/// The error recorded for an action whose executor stopped while it ran.
pub fn interrupted(executed_by: &str, claimed_ms: i64) -> String {
    format!(
        "{executed_by} stopped while the action ran (claimed at {}): its outcome is unknown and it is not run again, since a second undo would re-deploy the release it replaced; check the deployment",
        when(claimed_ms)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use postflight_plan::{Expander, parse_plan};

    use super::*;

    /// An in-memory ledger with the same rules as the real ones.
    #[derive(Default)]
    struct Memory(Mutex<Vec<(RollbackClaim, Option<ActionOutcome>)>>);

    impl Ledger for Memory {
        type Error = std::convert::Infallible;
        async fn claim(
            &self,
            claim: &RollbackClaim,
            cooldown_ms: i64,
        ) -> Result<ClaimOutcome, Self::Error> {
            let mut book = self.0.lock().unwrap();
            if let Some((c, _)) = book.iter().find(|(c, _)| c.subject == claim.subject) {
                return Ok(ClaimOutcome::AlreadyClaimed {
                    by: c.executed_by.clone(),
                    at_ms: c.claimed_ms,
                });
            }
            if let Some((c, _)) = book.iter().find(|(c, _)| {
                c.plan_name == claim.plan_name && c.claimed_ms > claim.claimed_ms - cooldown_ms
            }) {
                return Ok(ClaimOutcome::CoolingDown {
                    by: c.executed_by.clone(),
                    at_ms: c.claimed_ms,
                    run_id: c.run_id.clone(),
                });
            }
            book.push((claim.clone(), None));
            Ok(ClaimOutcome::Claimed)
        }
        async fn finish(
            &self,
            subject: &str,
            outcome: ActionOutcome,
            _error: Option<&str>,
        ) -> Result<(), Self::Error> {
            for (c, o) in self.0.lock().unwrap().iter_mut() {
                if c.subject == subject {
                    *o = Some(outcome);
                }
            }
            Ok(())
        }
    }

    fn plan(rollback: &str) -> Plan {
        let env: HashMap<String, String> = HashMap::new();
        parse_plan(
            &format!("name: p\nchecks:\n  - name: a\n    http: {{url: http://h/}}\n{rollback}"),
            "p.yaml",
            Expander::plan(&env),
        )
        .unwrap()
    }

    fn recommended() -> RollbackReport {
        RollbackReport {
            recommended: true,
            triggered: false,
            dry_run: false,
            reasons: vec!["verdict FAIL: a failed".into()],
            action: Some("x".into()),
            outcome: None,
            error: None,
            detail: None,
            executed_by: None,
            held_back: Vec::new(),
        }
    }

    fn context(run: &str) -> RollbackContext {
        RollbackContext {
            plan: "p".into(),
            run_id: run.into(),
            monitor_id: None,
            verdict: "FAIL".into(),
            summary: "FAIL — rollback recommended".into(),
            reasons: vec![],
            regions: vec!["local".into()],
            decided_at: "now".into(),
            executed_by: "tester".into(),
        }
    }

    #[tokio::test]
    async fn executes_once_per_subject_and_respects_the_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("count");
        let p = plan(&format!(
            "rollback:\n  cooldown: 1h\n  action: {{command: [sh, -c, \"echo x >> {}\"]}}\n",
            marker.display()
        ));
        let ledger = Memory::default();
        let env: HashMap<String, String> = HashMap::new();
        let mut first = recommended();
        assert_eq!(
            carry_out(&p, &mut first, &context("r1"), "run:r1", &ledger, &env).await,
            Some(ClaimOutcome::Claimed)
        );
        assert_eq!(
            (first.triggered, first.outcome),
            (true, Some(ActionOutcome::Succeeded))
        );
        assert_eq!(first.executed_by.as_deref(), Some("tester"));
        let mut replay = recommended();
        carry_out(&p, &mut replay, &context("r1"), "run:r1", &ledger, &env).await;
        assert_eq!(
            (replay.triggered, replay.outcome),
            (false, Some(ActionOutcome::Skipped))
        );
        assert!(
            replay
                .detail
                .as_deref()
                .unwrap()
                .starts_with("already executed by tester")
        );
        let mut other = recommended();
        carry_out(&p, &mut other, &context("r2"), "run:r2", &ledger, &env).await;
        assert_eq!(other.outcome, Some(ActionOutcome::Skipped));
        assert!(
            other
                .detail
                .as_deref()
                .unwrap()
                .starts_with("cooldown: tester rolled back plan p at"),
            "{:?}",
            other.detail
        );
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "x\n",
            "executed exactly once"
        );
    }

    #[tokio::test]
    async fn a_claim_is_pending_until_it_is_executed() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let p = plan(&format!(
            "rollback:\n  action: {{command: [touch, \"{}\"]}}\n",
            marker.display()
        ));
        let ledger = Memory::default();
        let env: HashMap<String, String> = HashMap::new();
        let mut decision = recommended();
        let Prepared::Execute(claimed) =
            claim(&p, &mut decision, &context("r"), "run:r", &ledger, &env).await
        else {
            panic!("claimed")
        };
        assert_eq!(decision.outcome, Some(ActionOutcome::Pending));
        assert!(decision.triggered);
        assert_eq!(ledger.0.lock().unwrap()[0].0.action_kind, "command");
        assert_eq!(ledger.0.lock().unwrap()[0].1, None, "no outcome yet");
        assert!(!marker.exists(), "claiming executes nothing");
        execute(&claimed, &mut decision, &ledger, &env).await;
        assert_eq!(decision.outcome, Some(ActionOutcome::Succeeded));
        assert!(marker.exists());
        assert_eq!(
            ledger.0.lock().unwrap()[0].1,
            Some(ActionOutcome::Succeeded)
        );
        assert!(interrupted("coordinator-A", 0).starts_with(
            "coordinator-A stopped while the action ran (claimed at 1970-01-01T00:00:00.000Z): its outcome is unknown and it is not run again"
        ));
    }

    #[tokio::test]
    async fn dry_run_decides_and_records_without_acting() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("never");
        let p = plan(&format!(
            "rollback:\n  action: {{command: [touch, \"{}\"]}}\n",
            marker.display()
        ));
        let mut decision = recommended();
        decision.dry_run = true;
        let env: HashMap<String, String> = HashMap::new();
        assert_eq!(
            carry_out(
                &p,
                &mut decision,
                &context("r"),
                "run:r",
                &Memory::default(),
                &env
            )
            .await,
            None
        );
        assert_eq!(
            (decision.triggered, decision.outcome),
            (true, Some(ActionOutcome::DryRun))
        );
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn a_failing_action_is_recorded_not_raised() {
        let p = plan("rollback:\n  action: {command: [sh, -c, \"echo no cluster >&2; exit 7\"]}\n");
        let mut decision = recommended();
        let env: HashMap<String, String> = HashMap::new();
        let ledger = Memory::default();
        carry_out(&p, &mut decision, &context("r"), "run:r", &ledger, &env).await;
        assert_eq!(decision.outcome, Some(ActionOutcome::Failed));
        assert!(
            decision
                .error
                .as_deref()
                .unwrap()
                .ends_with("exited with 7: no cluster")
        );
        assert_eq!(ledger.0.lock().unwrap()[0].1, Some(ActionOutcome::Failed));
    }

    #[tokio::test]
    async fn without_an_action_or_a_recommendation_nothing_happens() {
        let env: HashMap<String, String> = HashMap::new();
        let mut decision = recommended();
        carry_out(
            &plan("rollback: {}\n"),
            &mut decision,
            &context("r"),
            "run:r",
            &Memory::default(),
            &env,
        )
        .await;
        assert_eq!((decision.triggered, decision.outcome), (false, None));
        assert_eq!(
            decision.detail.as_deref(),
            Some("the plan's rollback has no action: decision recorded only")
        );
        let mut calm = recommended();
        calm.recommended = false;
        assert_eq!(
            carry_out(
                &plan("rollback: {action: {command: [false]}}\n"),
                &mut calm,
                &context("r"),
                "run:r",
                &Memory::default(),
                &env
            )
            .await,
            None
        );
        assert_eq!(calm.outcome, None);
        // A decision already settled (a run that may not act) is not touched.
        let marker = tempfile::tempdir().unwrap();
        let never = marker.path().join("never");
        let mut settled = recommended();
        settled.outcome = Some(ActionOutcome::Skipped);
        carry_out(
            &plan(&format!(
                "rollback: {{action: {{command: [touch, \"{}\"]}}}}\n",
                never.display()
            )),
            &mut settled,
            &context("r"),
            "run:r",
            &Memory::default(),
            &env,
        )
        .await;
        assert_eq!(settled.outcome, Some(ActionOutcome::Skipped));
        assert!(!never.exists());
    }
}
