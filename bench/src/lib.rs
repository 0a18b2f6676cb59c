//! Shared pieces of the benchmark tools.

use std::time::Duration;

use postflight_proto::v1;
use tonic::transport::{Channel, Endpoint};

/// A gRPC channel to `url`.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// A result as a probe would send it for `assignment`, with a distinct id.
pub fn result(run_id: &str, assignment_id: &str, n: u64) -> v1::CheckResult {
    v1::CheckResult {
        result_id: format!("{assignment_id}-{n}"),
        run_id: run_id.to_owned(),
        assignment_id: assignment_id.to_owned(),
        check_index: 0,
        check_name: "health".to_owned(),
        status: v1::CheckStatus::Pass.into(),
        message: "status 200 in 1.2 ms, 1 expectation met".to_owned(),
        duration_ms: 1.2,
        requests: 1,
        request_errors: 0,
        latency_ms: Some(v1::LatencySummary {
            count: 1,
            p50: 1.2,
            p95: 1.2,
            p99: 1.2,
            max: 1.2,
        }),
        latency_sketch: Vec::new(),
        finished_at_unix_ms: 0,
        requests_missing: 0,
    }
}

/// The median of some figures.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
