//! Network checks: `tcp` (a port accepts connections) and `grpc_health` (a gRPC server says
//! it is serving, by the standard `grpc.health.v1` protocol).

use std::time::{Duration, Instant};

use postflight_ops::dns::lookup;
use postflight_ops::http_client::root_cause;
use postflight_plan::duration::{PlanDuration, human_duration};
use postflight_plan::model::{GrpcHealthCheck, TcpCheck};
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
        tally: None,
    }
}

/// Asks the server's `grpc.health.v1.Health/Check` about the check's service, within
/// `timeout`; SERVING passes, anything else fails with what the server said.
pub async fn grpc_health(check: &GrpcHealthCheck, timeout: Duration) -> CheckOutcome {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let started = Instant::now();
    let target = if check.service.is_empty() {
        format!("the gRPC server at {}", check.address)
    } else {
        format!("service {} at {}", check.service, check.address)
    };
    let ask = async {
        let scheme = if check.tls { "https" } else { "http" };
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", check.address))
                .map_err(|e| format!("`{}` is not an address: {e}", check.address))?
                .connect_timeout(timeout);
        if check.tls {
            postflight_ops::http_client::install_crypto_provider();
            let config = match &check.ca {
                None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
                Some(path) => {
                    let pem = crate::tls::read_ca_file(path).await?;
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                }
            };
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS setup failed: {}", root_cause(&e)))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let root = root_cause(&e);
            let why = postflight_ops::tls::explain(&root, "the server").unwrap_or(root);
            format!("could not connect to {}: {why}", check.address)
        })?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: check.service.clone(),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::NotFound => format!("{target} is unknown to its health service"),
                tonic::Code::Unimplemented => format!(
                    "{} does not implement grpc.health.v1 (Unimplemented)",
                    check.address
                ),
                code => format!(
                    "{target}: health check answered {code:?}: {}",
                    status.message()
                ),
            })?;
        Ok::<i32, String>(answer.into_inner().status)
    };
    let result = tokio::time::timeout(timeout, ask).await;
    let elapsed = started.elapsed();
    let (status, message) = match result {
        Ok(Ok(code)) if code == ServingStatus::Serving as i32 => (
            CheckStatus::Pass,
            format!("{target} is SERVING ({})", human_duration(elapsed)),
        ),
        Ok(Ok(code)) => {
            let name = ServingStatus::try_from(code)
                .map_or_else(|_| format!("status {code}"), |s| s.as_str_name().to_owned());
            (
                CheckStatus::Fail,
                format!("{target} is {name}, expected SERVING"),
            )
        }
        Ok(Err(message)) => (CheckStatus::Fail, message),
        Err(_) => (
            CheckStatus::Fail,
            format!(
                "{target} did not answer within {} (timeout)",
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
        tally: None,
    }
}
