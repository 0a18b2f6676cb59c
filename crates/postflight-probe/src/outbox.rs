//! Results waiting for the coordinator's acknowledgement.
//!
//! A result leaves the outbox only when acknowledged, so whatever a broken connection swallowed
//! is sent again on the next one; the coordinator stores each result id once. The outbox is
//! bounded: a probe cut off for long drops its oldest results rather than its memory.

use std::collections::{HashSet, VecDeque};

use postflight_proto::v1;

struct Entry {
    result: v1::CheckResult,
    /// Session in which it was last sent (0: never).
    sent_in: u64,
}

/// Unacknowledged results, oldest first.
pub struct Outbox {
    entries: VecDeque<Entry>,
    limit: usize,
}

impl Outbox {
    /// An outbox holding at most `limit` results.
    pub fn new(limit: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    /// Adds a result; returns how many old ones were dropped to make room.
    pub fn push(&mut self, result: v1::CheckResult) -> usize {
        let mut dropped = 0;
        while self.entries.len() >= self.limit {
            self.entries.pop_front();
            dropped += 1;
        }
        self.entries.push_back(Entry { result, sent_in: 0 });
        dropped
    }

    /// Results not yet sent in `session`, marked as sent, in batches of at most `batch`.
    pub fn take_unsent(&mut self, session: u64, batch: usize) -> Vec<Vec<v1::CheckResult>> {
        let mut batches: Vec<Vec<v1::CheckResult>> = Vec::new();
        for entry in self.entries.iter_mut().filter(|e| e.sent_in != session) {
            entry.sent_in = session;
            match batches.last_mut() {
                Some(last) if last.len() < batch => last.push(entry.result.clone()),
                _ => batches.push(vec![entry.result.clone()]),
            }
        }
        batches
    }

    /// Forgets acknowledged results.
    pub fn acknowledge(&mut self, ids: &[String]) {
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        self.entries
            .retain(|e| !ids.contains(e.result.result_id.as_str()));
    }

    /// Results waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str) -> v1::CheckResult {
        v1::CheckResult {
            result_id: id.into(),
            ..Default::default()
        }
    }

    fn ids(batches: &[Vec<v1::CheckResult>]) -> Vec<Vec<&str>> {
        batches
            .iter()
            .map(|b| b.iter().map(|r| r.result_id.as_str()).collect())
            .collect()
    }

    #[test]
    fn unacknowledged_results_are_sent_again_in_the_next_session() {
        let mut outbox = Outbox::new(10);
        outbox.push(result("a"));
        outbox.push(result("b"));
        outbox.push(result("c"));
        assert_eq!(ids(&outbox.take_unsent(1, 2)), [vec!["a", "b"], vec!["c"]]);
        assert!(outbox.take_unsent(1, 2).is_empty(), "sent once per session");
        outbox.acknowledge(&["a".into(), "zzz".into()]);
        assert_eq!(outbox.len(), 2);
        outbox.push(result("d"));
        assert_eq!(ids(&outbox.take_unsent(1, 10)), [vec!["d"]]);
        // The connection broke: session 2 replays everything unacknowledged, in order.
        assert_eq!(ids(&outbox.take_unsent(2, 10)), [vec!["b", "c", "d"]]);
    }

    #[test]
    fn the_buffer_is_bounded_and_drops_the_oldest() {
        let mut outbox = Outbox::new(2);
        assert_eq!(outbox.push(result("a")), 0);
        assert_eq!(outbox.push(result("b")), 0);
        assert_eq!(outbox.push(result("c")), 1);
        assert_eq!(ids(&outbox.take_unsent(1, 10)), [vec!["b", "c"]]);
    }
}
