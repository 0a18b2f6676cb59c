//! The sliding window of a monitor: error rate and p99 over the rounds of the last
//! `monitor.window`, merged over every region through latency sketches.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::model::Plan;
use crate::report::CheckReport;
use crate::report::{RegionResult, RequestCount};
use crate::rollback::Measurements;
use crate::sketch::LatencySketch;
use crate::verdict::Overall;

/// What one round contributes to the window.
#[derive(Debug, Clone)]
pub struct RoundSample {
    /// When the round ended, in Unix milliseconds.
    pub at_ms: i64,
    /// Requests and failed requests per check (plan order).
    pub per_check: Vec<(String, RequestCount)>,
    /// Latency of every request of the round.
    pub sketch: LatencySketch,
}

impl RoundSample {
    /// The sample of a round from its per-region results.
    pub fn from_results(
        plan: &Plan,
        results: &[BTreeMap<String, RegionResult>],
        at_ms: i64,
    ) -> Self {
        let mut sketch = LatencySketch::new();
        let per_check = plan
            .checks
            .iter()
            .enumerate()
            .map(|(i, check)| {
                let mut count = RequestCount::default();
                for r in results.get(i).into_iter().flat_map(|m| m.values()) {
                    count.count += r.requests.count;
                    count.errors += r.requests.errors;
                    sketch.merge(&r.sketch);
                }
                (check.name.clone(), count)
            })
            .collect();
        Self {
            at_ms,
            per_check,
            sketch,
        }
    }
}

/// Rounds of the last `span`.
#[derive(Debug, Clone)]
pub struct Window {
    span: Duration,
    rounds: VecDeque<RoundSample>,
}

impl Window {
    /// An empty window of `span`.
    pub fn new(span: Duration) -> Self {
        Self {
            span,
            rounds: VecDeque::new(),
        }
    }

    /// Adds a round and forgets the rounds that fell out of the window.
    pub fn push(&mut self, sample: RoundSample) {
        let newest = sample.at_ms;
        self.rounds.push_back(sample);
        let oldest_kept = newest - self.span.as_millis() as i64;
        while self.rounds.front().is_some_and(|r| r.at_ms <= oldest_kept) {
            self.rounds.pop_front();
        }
    }

    /// Rounds in the window.
    pub fn len(&self) -> usize {
        self.rounds.len()
    }

    /// Whether the window holds no round.
    pub fn is_empty(&self) -> bool {
        self.rounds.is_empty()
    }

    /// The trigger inputs: the latest verdict and checks, and the window's requests.
    pub fn measurements<'a>(
        &self,
        overall: Overall,
        checks: &'a [CheckReport],
        regions: &'a [String],
    ) -> Measurements<'a> {
        let mut per_check: Vec<(String, RequestCount)> = Vec::new();
        let mut sketch = LatencySketch::new();
        for round in &self.rounds {
            sketch.merge(&round.sketch);
            for (name, count) in &round.per_check {
                match per_check.iter_mut().find(|(n, _)| n == name) {
                    Some((_, total)) => {
                        total.count += count.count;
                        total.errors += count.errors;
                    }
                    None => per_check.push((name.clone(), *count)),
                }
            }
        }
        Measurements {
            overall,
            checks,
            requests: per_check.iter().map(|(_, c)| c.count).sum(),
            errors: per_check.iter().map(|(_, c)| c.errors).sum(),
            p99_ms: sketch.percentile(99.0),
            per_check,
            regions,
            window: Some((self.span, self.rounds.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollback::triggers;
    use crate::{Expander, parse_plan};
    use std::collections::HashMap;

    fn sample(at_ms: i64, ok: u64, failed: u64, latency_ms: f64) -> RoundSample {
        let mut sketch = LatencySketch::new();
        for _ in 0..ok + failed {
            sketch.add(latency_ms);
        }
        RoundSample {
            at_ms,
            per_check: vec![(
                "api".into(),
                RequestCount {
                    count: ok + failed,
                    errors: failed,
                },
            )],
            sketch,
        }
    }

    fn plan() -> Plan {
        let env: HashMap<String, String> = HashMap::new();
        parse_plan(
            "name: p\nchecks:\n  - name: api\n    http: {url: http://h/}\nrollback: {on_fail: false, error_rate_above: 0.2, p99_latency_above: 1s}\nmonitor: {window: 10s}\n",
            "p.yaml",
            Expander::plan(&env),
        )
        .unwrap()
    }

    #[test]
    fn rounds_older_than_the_window_are_forgotten() {
        let mut w = Window::new(Duration::from_secs(10));
        w.push(sample(0, 10, 0, 5.0));
        w.push(sample(5_000, 10, 0, 5.0));
        assert_eq!(w.len(), 2);
        w.push(sample(10_000, 10, 0, 5.0));
        assert_eq!(w.len(), 2, "the round at 0 s is 10 s old");
    }

    #[test]
    fn the_error_rate_trigger_sees_the_whole_window() {
        let plan = plan();
        let regions = vec!["eu".to_owned()];
        let mut w = Window::new(Duration::from_secs(10));
        w.push(sample(0, 10, 0, 5.0));
        w.push(sample(1_000, 7, 3, 5.0));
        // 3 failed of 20 = 15%: below 20%.
        assert!(triggers(&plan, &w.measurements(Overall::Pass, &[], &regions)).is_empty());
        w.push(sample(2_000, 5, 5, 5.0));
        // 8 of 30 = 26.7%.
        let reasons = triggers(&plan, &w.measurements(Overall::Pass, &[], &regions));
        assert_eq!(
            reasons,
            [
                "request error rate 26.7% is above 20.0% (8 of 30 requests failed; api 8/30; over the last 10s (3 rounds), regions: eu)"
            ]
        );
        // Once the bad rounds leave the window, so does the trigger.
        w.push(sample(11_500, 10, 0, 5.0));
        w.push(sample(12_500, 10, 0, 5.0));
        assert!(triggers(&plan, &w.measurements(Overall::Pass, &[], &regions)).is_empty());
    }

    #[test]
    fn the_p99_trigger_merges_the_rounds() {
        let plan = plan();
        let regions = vec!["eu".to_owned(), "us".to_owned()];
        let mut w = Window::new(Duration::from_secs(10));
        w.push(sample(0, 98, 0, 10.0));
        w.push(sample(1_000, 2, 0, 1500.0));
        // 2 slow of 100: the nearest-rank p99 is the 99th value, a slow one.
        let reasons = triggers(&plan, &w.measurements(Overall::Pass, &[], &regions));
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].starts_with("request p99 1.50 s is above 1s (over 100 requests, over the last 10s (2 rounds), regions: eu, us)"), "{}", reasons[0]);
    }
}
