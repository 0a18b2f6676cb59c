//! The sliding window of a monitor: requests and latencies per region over the rounds of the
//! last `monitor.window`, so that rate and p99 triggers see more than one round's few requests
//! and still judge each region on its own.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Plan;
use crate::report::{RegionResult, RequestCount};
use crate::rollback::RegionFigures;

/// What one round contributes to the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundSample {
    /// When the round ended, in Unix milliseconds.
    pub at_ms: i64,
    /// Requests per check over every region (plan order), to name where errors came from.
    pub per_check: Vec<(String, RequestCount)>,
    /// Requests and latencies per region.
    pub regions: BTreeMap<String, RegionFigures>,
}

impl RoundSample {
    /// The sample of a round from its per-region results (per check, per region).
    pub fn from_results(
        plan: &Plan,
        results: &[BTreeMap<String, RegionResult>],
        at_ms: i64,
    ) -> Self {
        let per_check = plan
            .checks
            .iter()
            .enumerate()
            .map(|(i, check)| {
                let mut count = RequestCount::default();
                for r in results.get(i).into_iter().flat_map(|m| m.values()) {
                    count.add(r.requests);
                }
                (check.name.clone(), count)
            })
            .collect();
        Self {
            at_ms,
            per_check,
            regions: RegionFigures::of_results(results),
        }
    }

    /// Every region's figures together.
    pub fn merged(&self) -> RegionFigures {
        RegionFigures::total(self.regions.values())
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

    /// Its span.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Adds a round and forgets the rounds that fell out of the window.
    pub fn push(&mut self, sample: RoundSample) {
        let newest = sample.at_ms;
        self.rounds.push_back(sample);
        let oldest_kept = newest.saturating_sub(self.span.as_millis() as i64);
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

    /// Requests and latencies per region over the window.
    pub fn regions(&self) -> BTreeMap<String, RegionFigures> {
        RegionFigures::by_region(self.rounds.iter().flat_map(|round| {
            round
                .regions
                .iter()
                .map(|(region, f)| (region.as_str(), f.requests, &f.sketch))
        }))
    }

    /// Requests per check over the window (every region), in order of first appearance.
    pub fn per_check(&self) -> Vec<(String, RequestCount)> {
        let mut per_check: Vec<(String, RequestCount)> = Vec::new();
        for round in &self.rounds {
            for (name, count) in &round.per_check {
                match per_check.iter_mut().find(|(n, _)| n == name) {
                    Some((_, total)) => total.add(*count),
                    None => per_check.push((name.clone(), *count)),
                }
            }
        }
        per_check
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::LatencySketch;

    fn figures(ok: u64, failed: u64, latency_ms: f64) -> RegionFigures {
        let mut sketch = LatencySketch::new();
        for _ in 0..ok + failed {
            sketch.add(latency_ms);
        }
        RegionFigures {
            requests: RequestCount {
                count: ok + failed,
                errors: failed,
                missing: 0,
            },
            sketch,
        }
    }

    fn sample(at_ms: i64, region: &str, ok: u64, failed: u64) -> RoundSample {
        let figures = figures(ok, failed, 5.0);
        RoundSample {
            at_ms,
            per_check: vec![("api".into(), figures.requests)],
            regions: [(region.to_owned(), figures)].into(),
        }
    }

    #[test]
    fn rounds_older_than_the_window_are_forgotten() {
        let mut w = Window::new(Duration::from_secs(10));
        w.push(sample(0, "eu", 10, 0));
        w.push(sample(5_000, "eu", 10, 0));
        assert_eq!(w.len(), 2);
        w.push(sample(10_000, "eu", 10, 0));
        assert_eq!(w.len(), 2, "the round at 0 s is 10 s old");
    }

    #[test]
    fn regions_and_checks_add_up_over_the_window() {
        let mut w = Window::new(Duration::from_secs(10));
        w.push(sample(0, "eu", 7, 3));
        w.push(sample(1_000, "eu", 5, 5));
        w.push(sample(2_000, "us", 10, 0));
        let regions = w.regions();
        assert_eq!(
            regions["eu"].requests,
            RequestCount {
                count: 20,
                errors: 8,
                missing: 0
            }
        );
        assert_eq!(regions["eu"].sketch.count(), 20);
        assert_eq!(regions["us"].requests.count, 10);
        assert_eq!(
            w.per_check(),
            [(
                "api".to_owned(),
                RequestCount {
                    count: 30,
                    errors: 8,
                    missing: 0
                }
            )]
        );
    }

    #[test]
    fn a_round_sample_survives_json() {
        let s = sample(42, "eu", 3, 1);
        let back: RoundSample = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.at_ms, 42);
        assert_eq!(back.regions["eu"].requests, s.regions["eu"].requests);
        assert_eq!(back.regions["eu"].sketch.count(), 4);
        assert_eq!(back.merged().requests.errors, 1);
    }
}
