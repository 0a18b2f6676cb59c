//! The gRPC surface: the postflight services (probes, validation, feedback), health, and server reflection (v1 and
//! v1alpha, since grpcurl 1.8 speaks v1alpha), with message size limits.

mod feedback_service;
mod probe_service;
mod timing;
mod validation_service;
mod wire;

use std::future::Future;
use std::time::Duration;

use postflight_ops::secret::Secret;
use postflight_proto::v1::feedback_service_server::FeedbackServiceServer;
use postflight_proto::v1::probe_service_server::ProbeServiceServer;
use postflight_proto::v1::validation_service_server::ValidationServiceServer;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;
use tonic::transport::server::TcpIncoming;

use crate::auth::{OperatorAuth, ProbeAuth, ProbeTokens};
use crate::engine::Coordinator;
use crate::storage::Store;

pub use feedback_service::{FeedbackApi, feedback_message};
pub use probe_service::ProbeApi;
pub use validation_service::ValidationApi;

/// Largest message accepted or sent: plans and result batches are far smaller; anything
/// beyond is a bug or an attack.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Accepted connections with `TCP_NODELAY`: answers leave at once instead of waiting for
/// Nagle and a delayed ACK (a report took 44 ms instead of 0.4 ms without it), and dead peers
/// are found by TCP keepalive.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

/// Who may call, and over what.
#[derive(Debug, Default)]
pub struct Access {
    /// Token probes must present.
    pub probe_token: Option<Secret>,
    /// Per-probe tokens, each bound to a name and a region.
    pub probe_tokens: ProbeTokens,
    /// Whether client certificates are required (their DNS names then bind probe names).
    pub mutual_tls: bool,
    /// Token every `ValidationService` call must present.
    pub operator_token: Option<Secret>,
    /// TLS (and client certificates) on the gRPC port; plain text when `None`.
    pub tls: Option<ServerTlsConfig>,
}

/// Serves every service on `listener` until `shutdown` completes.
pub async fn serve<S: Store>(
    coordinator: Coordinator<S>,
    listener: TcpListener,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ProbeServiceServer<ProbeApi<S>>>()
        .await;
    health
        .set_serving::<ValidationServiceServer<ValidationApi<S>>>()
        .await;
    health
        .set_serving::<FeedbackServiceServer<FeedbackApi<S>>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(postflight_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(postflight_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let coordinator_metrics = coordinator.metrics().clone();
    let probes = ProbeServiceServer::new(ProbeApi::new(
        coordinator.clone(),
        ProbeAuth {
            shared: access.probe_token,
            bound: access.probe_tokens,
        },
        access.mutual_tls,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let feedback = InterceptedService::new(
        FeedbackServiceServer::new(FeedbackApi::new(coordinator.clone())),
        OperatorAuth(access.operator_token.clone()),
    );
    let validation = ValidationServiceServer::new(ValidationApi::new(coordinator))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let validation = InterceptedService::new(validation, OperatorAuth(access.operator_token));
    let timing = timing::TimingLayer(coordinator_metrics);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = access.tls {
        server = server.tls_config(tls)?;
    }
    server
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(timing)
        .add_service(probes)
        .add_service(validation)
        .add_service(feedback)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}
