//! How results are kept in the database: storage's own encoding, independent of the gRPC API,
//! so a change of `proto/` never changes what is stored (nor makes stored rows unreadable).
//!
//! A row of `result_batches` holds the results of one probe message for one assignment as a
//! protobuf-encoded [`StoredBatch`]. The messages are declared here, with their field numbers
//! fixed as format 1 of the column; rows written since migration 0003 are in this format.
//! Run and assignment ids live in the row's columns and check names in the plan, so results
//! do not repeat them. A change to these messages follows protobuf's rules (new fields get
//! new numbers; numbers are never reused), and the golden-bytes test below catches any other.

use std::time::Duration;

use postflight_plan::CheckStatus;
use postflight_plan::report::{
    LatencySummary, MAX_DURATION_MS, ProbeResult, RegionResult, RequestCount,
};
use postflight_plan::sketch::LatencySketch;
use prost::Message;

/// The results of one row.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredBatch {
    /// In arrival order.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<StoredResult>,
}

/// One result. Numbers 2, 3 and 5 (run, assignment, check name) are reserved: they are the
/// row's and the plan's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredResult {
    /// The probe's id of the result.
    #[prost(string, tag = "1")]
    pub result_id: String,
    /// The check's index in the run's plan.
    #[prost(uint32, tag = "4")]
    pub check_index: u32,
    /// 1 pass, 2 warn, 3 fail, 4 inconclusive.
    #[prost(int32, tag = "6")]
    pub status: i32,
    /// The check's message, secrets masked.
    #[prost(string, tag = "7")]
    pub message: String,
    /// Wall time of the check.
    #[prost(double, tag = "8")]
    pub duration_ms: f64,
    /// Requests made.
    #[prost(uint64, tag = "9")]
    pub requests: u64,
    /// Requests that failed.
    #[prost(uint64, tag = "10")]
    pub request_errors: u64,
    /// Exact figures of the probe's requests.
    #[prost(message, optional, tag = "11")]
    pub latency_ms: Option<StoredLatency>,
    /// The latencies as a DDSketch, in the sketch's own encoding.
    #[prost(bytes = "vec", tag = "12")]
    pub latency_sketch: Vec<u8>,
    /// When the probe finished the check, Unix milliseconds.
    #[prost(uint64, tag = "13")]
    pub finished_at_unix_ms: u64,
    /// Requests never attempted.
    #[prost(uint64, tag = "14")]
    pub requests_missing: u64,
    /// The successful requests' latencies in ms, sorted (kept for baselines only).
    #[prost(double, repeated, tag = "15")]
    pub latencies_ms: Vec<f64>,
    /// The JSON answer's shape, path → type (kept for baselines only).
    #[prost(btree_map = "string, string", tag = "16")]
    pub answer_shape: std::collections::BTreeMap<String, String>,
    /// Runs or golden-set cases that passed (0 of 0: the check counts neither).
    #[prost(uint32, tag = "17")]
    pub tally_passed: u32,
    /// Runs or golden-set cases in all.
    #[prost(uint32, tag = "18")]
    pub tally_total: u32,
}

/// Exact latency figures, in milliseconds.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct StoredLatency {
    /// Number of requests.
    #[prost(uint64, tag = "1")]
    pub count: u64,
    /// Median.
    #[prost(double, tag = "2")]
    pub p50: f64,
    /// 95th percentile.
    #[prost(double, tag = "3")]
    pub p95: f64,
    /// 99th percentile.
    #[prost(double, tag = "4")]
    pub p99: f64,
    /// Slowest.
    #[prost(double, tag = "5")]
    pub max: f64,
}

fn status_code(status: CheckStatus) -> i32 {
    match status {
        CheckStatus::Pass => 1,
        CheckStatus::Warn => 2,
        CheckStatus::Fail => 3,
        CheckStatus::Inconclusive => 4,
    }
}

impl From<&ProbeResult> for StoredResult {
    fn from(p: &ProbeResult) -> Self {
        let r = &p.result;
        Self {
            result_id: p.result_id.clone(),
            check_index: p.check_index,
            status: status_code(r.status),
            message: r.message.clone(),
            duration_ms: r.duration.as_secs_f64() * 1e3,
            requests: r.requests.count,
            request_errors: r.requests.errors,
            latency_ms: r.latency.map(|l| StoredLatency {
                count: l.count,
                p50: l.p50,
                p95: l.p95,
                p99: l.p99,
                max: l.max,
            }),
            latency_sketch: r.sketch.to_bytes(),
            finished_at_unix_ms: p.finished_at_ms,
            requests_missing: r.requests.missing,
            latencies_ms: r.latencies_ms.clone(),
            answer_shape: r.answer_shape.clone().unwrap_or_default(),
            tally_passed: r.tally.map_or(0, |t| t.passed),
            tally_total: r.tally.map_or(0, |t| t.total),
        }
    }
}

/// Encodes results for one row.
pub fn encode(results: &[ProbeResult]) -> Vec<u8> {
    StoredBatch {
        results: results.iter().map(StoredResult::from).collect(),
    }
    .encode_to_vec()
}

/// A stored result that cannot be used: the reason, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored result {result_id}: {reason}")]
pub struct Unreadable {
    /// The result's id, when the row was readable enough to have one.
    pub result_id: String,
    /// Why.
    pub reason: String,
}

/// The results of a row, with the row's run and assignment ids put back. A row that does not
/// decode is one error; within a readable row, each result that cannot be decoded is its own
/// error and the others are kept. Decoded results are not yet checked: callers hold them to
/// [`ProbeResult::check`] and [`ProbeResult::fits`] as they do a probe's.
pub fn decode(
    data: &[u8],
    run_id: &str,
    assignment_id: &str,
) -> Result<Vec<Result<ProbeResult, Unreadable>>, Unreadable> {
    let batch = StoredBatch::decode(data).map_err(|e| Unreadable {
        result_id: String::new(),
        reason: e.to_string(),
    })?;
    Ok(batch
        .results
        .into_iter()
        .map(|s| s.into_probe_result(run_id, assignment_id))
        .collect())
}

impl StoredResult {
    fn into_probe_result(
        self,
        run_id: &str,
        assignment_id: &str,
    ) -> Result<ProbeResult, Unreadable> {
        let unreadable = |reason: String| Unreadable {
            result_id: self.result_id.clone(),
            reason,
        };
        let status = match self.status {
            1 => CheckStatus::Pass,
            2 => CheckStatus::Warn,
            3 => CheckStatus::Fail,
            4 => CheckStatus::Inconclusive,
            other => return Err(unreadable(format!("status {other} is not 1 to 4"))),
        };
        if !(0.0..=MAX_DURATION_MS).contains(&self.duration_ms) {
            return Err(unreadable(format!("duration {} ms", self.duration_ms)));
        }
        let sketch = LatencySketch::from_bytes(&self.latency_sketch)
            .map_err(|e| unreadable(format!("latency sketch: {e}")))?;
        Ok(ProbeResult {
            run_id: run_id.to_owned(),
            assignment_id: assignment_id.to_owned(),
            check_index: self.check_index,
            finished_at_ms: self.finished_at_unix_ms,
            result: RegionResult {
                status,
                message: self.message,
                duration: Duration::from_secs_f64(self.duration_ms / 1e3),
                requests: RequestCount {
                    count: self.requests,
                    errors: self.request_errors,
                    missing: self.requests_missing,
                },
                latency: self.latency_ms.map(|l| LatencySummary {
                    count: l.count,
                    p50: l.p50,
                    p95: l.p95,
                    p99: l.p99,
                    max: l.max,
                }),
                sketch,
                latencies_ms: self.latencies_ms,
                answer_shape: (!self.answer_shape.is_empty()).then_some(self.answer_shape),
                tally: (self.tally_total > 0).then_some(postflight_plan::Tally {
                    passed: self.tally_passed,
                    total: self.tally_total,
                }),
            },
            result_id: self.result_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, check_index: u32, latencies: &[f64]) -> ProbeResult {
        let mut sketch = LatencySketch::new();
        for l in latencies {
            sketch.add(*l);
        }
        ProbeResult {
            result_id: id.into(),
            run_id: "run-1".into(),
            assignment_id: "a-1".into(),
            check_index,
            finished_at_ms: 1_700_000_000_000,
            result: RegionResult {
                status: CheckStatus::Warn,
                message: "p95 412 ms".into(),
                duration: Duration::from_millis(1500),
                requests: RequestCount {
                    count: latencies.len() as u64,
                    errors: 1,
                    missing: 2,
                },
                latency: sketch.summary(),
                sketch,
                latencies_ms: Vec::new(),
                answer_shape: None,
                tally: None,
            },
        }
    }

    #[test]
    fn results_round_trip_with_the_rows_ids() {
        let mut results = vec![result("r1", 0, &[10.0, 20.0, 400.0]), result("r2", 3, &[])];
        results[0].result.tally = Some(postflight_plan::Tally {
            passed: 2,
            total: 3,
        });
        let data = encode(&results);
        let back: Vec<ProbeResult> = decode(&data, "run-1", "a-1")
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back.len(), 2);
        for (b, r) in back.iter().zip(&results) {
            assert_eq!(b.result_id, r.result_id);
            assert_eq!(b.run_id, "run-1");
            assert_eq!(b.assignment_id, "a-1");
            assert_eq!(b.check_index, r.check_index);
            assert_eq!(b.finished_at_ms, r.finished_at_ms);
            assert_eq!(b.result.status, r.result.status);
            assert_eq!(b.result.message, r.result.message);
            assert_eq!(b.result.duration, r.result.duration);
            assert_eq!(b.result.requests, r.result.requests);
            assert_eq!(b.result.latency, r.result.latency);
            assert_eq!(b.result.sketch.count(), r.result.sketch.count());
            assert_eq!(b.result.tally, r.result.tally);
        }
    }

    /// Format 1, byte for byte: a row written by an earlier coordinator (and by the gRPC
    /// encoding of the same fields at the time) still reads as it did. If this fails, the
    /// stored format changed: keep the old numbers readable, or add a data migration.
    #[test]
    fn format_1_rows_still_read() {
        // result_id "r1", check_index 2, status 3 (fail), message "down", duration 1.5 ms,
        // requests 1, request_errors 1, an empty sketch, finished at 7, requests_missing 0.
        let golden: &[u8] = &[
            0x0a, 0x1d, // field 1 (results), length 29
            0x0a, 0x02, b'r', b'1', // result_id
            0x20, 0x02, // check_index
            0x30, 0x03, // status
            0x3a, 0x04, b'd', b'o', b'w', b'n', // message
            0x41, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // duration_ms 1.5
            0x48, 0x01, // requests
            0x50, 0x01, // request_errors
            0x68, 0x07, // finished_at_unix_ms
        ];
        let back = decode(golden, "run", "a").unwrap();
        let r = back[0].clone().unwrap();
        assert_eq!(r.result_id, "r1");
        assert_eq!(r.check_index, 2);
        assert_eq!(r.result.status, CheckStatus::Fail);
        assert_eq!(r.result.message, "down");
        assert_eq!(r.result.duration, Duration::from_micros(1500));
        assert_eq!(r.result.requests.count, 1);
        assert_eq!(r.result.requests.errors, 1);
        assert_eq!(r.finished_at_ms, 7);
        assert_eq!(r.result.sketch.count(), 0);
    }

    #[test]
    fn unreadable_rows_and_results_say_why() {
        assert!(decode(&[0xff, 0xff], "run", "a").is_err());
        let mut bad = StoredBatch {
            results: vec![StoredResult::from(&result("ok", 0, &[1.0]))],
        };
        let mut junk = bad.results[0].clone();
        junk.result_id = "junk".into();
        junk.status = 9;
        bad.results.push(junk);
        let back = decode(&bad.encode_to_vec(), "run", "a").unwrap();
        assert!(back[0].is_ok());
        let err = back[1].clone().unwrap_err();
        assert_eq!(err.result_id, "junk");
        assert_eq!(
            err.to_string(),
            "stored result junk: status 9 is not 1 to 4"
        );
    }
}
