//! `ProbeService.Connect`: one bidirectional stream per probe.

use std::pin::Pin;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use postflight_proto::v1::probe_message::Kind;
use postflight_proto::v1::probe_service_server::ProbeService;
use postflight_proto::v1::{self, CoordinatorMessage, ProbeMessage};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, ProbeAuth};
use crate::engine::link::{self, ProbeLink};
use crate::engine::{Coordinator, ToProbe};
use crate::error::CoordinatorError;
use crate::storage::Store;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The probe-facing service.
pub struct ProbeApi<S: Store> {
    coordinator: Coordinator<S>,
    auth: ProbeAuth,
    mutual_tls: bool,
}

impl<S: Store> ProbeApi<S> {
    /// Authenticates probes with `auth`, and binds their names to their client certificates
    /// when `mutual_tls`.
    pub fn new(coordinator: Coordinator<S>, auth: ProbeAuth, mutual_tls: bool) -> Self {
        Self {
            coordinator,
            auth,
            mutual_tls,
        }
    }
}

/// The DNS names of the client certificate of a stream (its subject alternative names).
fn certificate_names<T>(request: &Request<T>) -> Vec<String> {
    let Some(chain) = request.peer_certs() else {
        return Vec::new();
    };
    let Some(leaf) = chain.first() else {
        return Vec::new();
    };
    match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => cert.valid_dns_names().map(str::to_owned).collect(),
        Err(e) => {
            tracing::warn!(error = ?e, "cannot read the client certificate's names");
            Vec::new()
        }
    }
}

fn validate_hello(hello: &v1::Hello) -> Result<(), CoordinatorError> {
    postflight_proto::check_hello(hello).map_err(|e| e.within("hello").into())
}

type Outbound = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> ProbeService for ProbeApi<S> {
    type ConnectStream = Outbound;

    async fn connect(
        &self,
        request: Request<Streaming<ProbeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let credential = self.auth.credential(request.metadata())?;
        let cert_names = self.mutual_tls.then(|| certificate_names(&request));
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10s"))??
            .ok_or_else(|| Status::cancelled("the stream closed before hello"))?;
        let Some(Kind::Hello(hello)) = first.kind else {
            return Err(CoordinatorError::invalid(
                "kind",
                "the first message of a stream must be hello",
            )
            .into());
        };
        validate_hello(&hello)?;
        let authenticated = auth::bind_identity(
            &hello.name,
            &hello.region,
            &credential,
            cert_names.as_deref(),
        )?;
        let (link, rx) = ProbeLink::channel(link::QUEUE);
        let session = self
            .coordinator
            .probe_connected(&hello.clone().into(), authenticated, link.clone())
            .await?;
        let outbound = link
            .outbound(rx)
            .map(|m| m.map(CoordinatorMessage::from).map_err(Status::from));
        let coordinator = self.coordinator.clone();
        let silence = coordinator.config().heartbeat_interval * 3;
        let name = hello.name.clone();
        let reader = {
            let (coordinator, link, name) = (coordinator.clone(), link.clone(), name.clone());
            async move {
                let cut_off = link.cut_off();
                let closing = link.closing();
                tokio::pin!(cut_off, closing);
                loop {
                    let next = tokio::select! {
                        next = tokio::time::timeout(silence, inbound.message()) => next,
                        () = &mut cut_off => {
                            tracing::warn!(probe = %name, "probe stopped reading its stream: disconnected");
                            break;
                        }
                        () = &mut closing => break,
                    };
                    let message = match next {
                        Ok(Ok(Some(message))) => message,
                        Ok(Ok(None)) => break,
                        Ok(Err(status)) => {
                            tracing::debug!(probe = %name, %status, "probe stream error");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(probe = %name, "probe silent for {silence:?}: closing its stream");
                            break;
                        }
                    };
                    coordinator.probe_seen(&name);
                    if let Err(error) = handle(&coordinator, &name, message, &link).await {
                        link.send(Err(error));
                        break;
                    }
                }
            }
        };
        // Boxed: a future moved into another async block is kept twice in its state (once
        // as the captured value, once inside `catch_unwind`), which cost 20 MiB per 1,000
        // connected probes (bench/run).
        let reader = Box::pin(reader);
        tokio::spawn(async move {
            // Whatever ends the reader, a panic included, the session ends with it: a
            // session that looks connected without a reader would be handed work forever.
            // Once the reader and the session let go of the link, the stream ends after
            // what is queued (the last acknowledgements).
            if std::panic::AssertUnwindSafe(reader)
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!(probe = %name, "the probe's stream handler panicked; disconnecting it");
                link.cut();
            }
            drop(link);
            coordinator.probe_disconnected(&name, session).await;
        });
        Ok(Response::new(Box::pin(outbound)))
    }
}

async fn handle<S: Store>(
    coordinator: &Coordinator<S>,
    probe: &str,
    message: ProbeMessage,
    link: &ProbeLink,
) -> Result<(), CoordinatorError> {
    match message.kind {
        Some(Kind::Heartbeat(_)) => {}
        Some(Kind::Results(batch)) => {
            let results = batch
                .results
                .into_iter()
                .enumerate()
                .map(|(i, wire)| {
                    postflight_proto::probe_result(wire)
                        .map_err(|e| CoordinatorError::from(e.within(&format!("results[{i}]"))))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let acked = coordinator.ingest(probe, results).await?;
            link.send(Ok(ToProbe::Ack { result_ids: acked }));
        }
        Some(Kind::Finished(finished)) => {
            postflight_proto::check_finished(&finished)
                .map_err(|e| CoordinatorError::from(e.within("finished")))?;
            coordinator
                .assignment_finished(probe, &finished.into())
                .await?
        }
        Some(Kind::Rejected(rejected)) => {
            postflight_proto::check_rejected(&rejected)
                .map_err(|e| CoordinatorError::from(e.within("rejected")))?;
            coordinator
                .assignment_rejected(probe, &rejected.into())
                .await?
        }
        Some(Kind::Hello(_)) => {
            return Err(CoordinatorError::invalid(
                "kind",
                "hello is only the first message",
            ));
        }
        None => return Err(CoordinatorError::invalid("kind", "empty message")),
    }
    Ok(())
}
