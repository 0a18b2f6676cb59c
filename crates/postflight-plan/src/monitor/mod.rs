//! Monitoring: the plan round after round, the triggers evaluated after every round over a
//! sliding window, and the persistence rule — a trigger must hold in `rollback.failing_rounds`
//! consecutive rounds before a monitor acts, so a blip never rolls back.
//!
//! [`MonitorSession`] is the whole decision, round in → outcome out; the coordinator's monitors
//! and `postflight monitor --local` both drive it, so they judge the same rounds the same way.

mod window;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use window::{RoundSample, Window};

use crate::model::Plan;
use crate::report::CheckReport;
use crate::rollback::{
    Evidence, Merged, RollbackReport, RunEnd, decision, evaluate, evaluate_at, may_act,
};
use crate::vars::Lookup;
use crate::verdict::Overall;

/// How long a round may take: its slowest check's timeout, plus a little for the report.
pub fn round_timeout(plan: &Plan) -> Duration {
    let slowest = plan
        .checks
        .iter()
        .map(|c| c.timeout)
        .max()
        .unwrap_or_default();
    slowest + Duration::from_secs(2)
}

/// A round as the session judges it.
#[derive(Debug, Clone)]
pub struct RoundInput<'a> {
    /// The round's requests.
    pub sample: RoundSample,
    /// The round's verdict.
    pub overall: Overall,
    /// The round's checks (to name what failed).
    pub checks: &'a [CheckReport],
    /// Regions that had to report.
    pub required: &'a [String],
    /// How the round's run ended.
    pub end: RunEnd,
}

/// What a round decided.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    /// Requests and p99 over the window, every region merged.
    pub merged: Merged,
    /// Rounds in the window.
    pub window_rounds: usize,
    /// Triggers that held after this round.
    pub reasons: Vec<String>,
    /// Why triggers that came close did not fire, and why a holding trigger did not act yet.
    pub held_back: Vec<String>,
    /// Whether this round counted towards `failing_rounds` (a trigger held and the round may
    /// act); stored, so that a resumed monitor knows its streak.
    pub counted: bool,
    /// Consecutive rounds, this one included, in which a trigger held.
    pub streak: u32,
    /// Consecutive rounds needed (`rollback.failing_rounds`).
    pub needed: u32,
    /// The decision to roll back, when the streak reached `needed`; not executed yet.
    pub decision: Option<RollbackReport>,
}

/// The decision state of one monitor: its window and its streak of failing rounds.
#[derive(Debug, Clone)]
pub struct MonitorSession {
    window: Window,
    streak: u32,
}

impl MonitorSession {
    /// A new monitor of `plan`.
    pub fn new(plan: &Plan) -> Self {
        Self::resume(plan, Vec::new(), 0)
    }

    /// A monitor resumed after a restart: the stored rounds of its window, oldest first, and
    /// the number of consecutive counted rounds it had reached.
    pub fn resume(plan: &Plan, rounds: Vec<RoundSample>, streak: u32) -> Self {
        let mut window = Window::new(plan.monitor.clone().unwrap_or_default().window);
        for round in rounds {
            window.push(round);
        }
        Self { window, streak }
    }

    /// Rounds in the window.
    pub fn window_rounds(&self) -> usize {
        self.window.len()
    }

    /// Adds a round and decides. A round counts towards `failing_rounds` when a trigger holds
    /// over the window (the evidence) *and* on the round's own requests (the problem is still
    /// there: a burst that has passed stays in the window for its whole span, and must not
    /// count again round after round). A round whose run may not act (timed out, cancelled,
    /// INCONCLUSIVE) breaks the streak, like a round where nothing holds.
    pub fn round(&mut self, plan: &Plan, round: RoundInput<'_>, env: &dyn Lookup) -> RoundOutcome {
        let own = Evidence {
            overall: round.overall,
            checks: round.checks,
            required: round.required,
            regions: &round.sample.regions,
            per_check: &round.sample.per_check,
            window: None,
        };
        // This round alone, on the raw ratio: its few requests are recency, not evidence.
        let still_failing = !evaluate_at(plan, &own, 0.0).reasons.is_empty();
        self.window.push(round.sample);
        let regions = self.window.regions();
        let per_check = self.window.per_check();
        let evidence = Evidence {
            overall: round.overall,
            checks: round.checks,
            required: round.required,
            regions: &regions,
            per_check: &per_check,
            window: Some((self.window.span(), self.window.len())),
        };
        let evaluation = evaluate(plan, &evidence);
        let mut held_back = evaluation.held_back;
        let needed = plan.failing_rounds();
        let counted = if evaluation.reasons.is_empty() {
            false
        } else if let Err(why) = may_act(plan, round.overall, round.end) {
            held_back.push(format!("round not counted: {why}"));
            false
        } else if !still_failing {
            held_back.push(
                "round not counted: this round's own requests exceed no threshold in enough regions (the window still holds earlier failures)"
                    .to_owned(),
            );
            false
        } else {
            true
        };
        self.streak = if counted { self.streak + 1 } else { 0 };
        if counted && self.streak < needed {
            held_back.push(format!(
                "held {} of {needed} rounds in a row (rollback.failing_rounds: {needed})",
                self.streak
            ));
        }
        let decision = (counted && self.streak >= needed).then(|| {
            let mut decision = decision(plan, evaluation.reasons.clone(), env);
            decision.held_back = held_back.clone();
            decision
        });
        RoundOutcome {
            merged: evidence.merged(),
            window_rounds: self.window.len(),
            reasons: evaluation.reasons,
            held_back,
            counted,
            streak: self.streak,
            needed,
            decision,
        }
    }
}

/// The streak a monitor had reached, from whether its latest rounds counted (newest first).
pub fn streak_of(counted_newest_first: impl IntoIterator<Item = bool>) -> u32 {
    counted_newest_first
        .into_iter()
        .take_while(|counted| *counted)
        .count() as u32
}
