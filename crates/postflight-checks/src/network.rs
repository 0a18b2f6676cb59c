//! Network checks: `tcp` (a port accepts connections).

use std::time::{Duration, Instant};

use postflight_ops::dns::lookup;
use postflight_ops::http_client::root_cause;
use postflight_plan::duration::{PlanDuration, human_duration};
use postflight_plan::model::TcpCheck;
use postflight_plan::{CheckOutcome, CheckStatus, Sample};
use tokio::net::TcpStream;

/// Connects to the check's address within `timeout`; the connection time is its one sample.
pub async fn tcp(check: &TcpCheck, timeout: Duration) -> CheckOutcome {
    let started = Instant::now();
    let attempt = async {
        let addresses = lookup(&check.host, check.port)
            .await
            .map_err(|e| format!("could not resolve {} ({})", check.host, e.reason))?;
        TcpStream::connect(addresses.as_slice())
            .await
            .map(|stream| stream.peer_addr().ok())
            .map_err(|e| format!("could not connect to {}: {}", check.address, root_cause(&e)))
    };
    let result = tokio::time::timeout(timeout, attempt).await;
    let elapsed = started.elapsed();
    let (status, message) = match result {
        Ok(Ok(peer)) => (
            CheckStatus::Pass,
            format!(
                "{} accepted a connection in {}{}",
                check.address,
                human_duration(elapsed),
                peer.map(|p| format!(" ({p})")).unwrap_or_default()
            ),
        ),
        Ok(Err(message)) => (CheckStatus::Fail, message),
        Err(_) => (
            CheckStatus::Fail,
            format!(
                "{} did not accept a connection within {} (timeout)",
                check.address,
                PlanDuration(timeout)
            ),
        ),
    };
    CheckOutcome {
        samples: vec![Sample {
            latency: elapsed,
            ok: status == CheckStatus::Pass,
        }],
        status,
        message,
        missing: 0,
        duration: elapsed,
        answer_shape: None,
    }
}
