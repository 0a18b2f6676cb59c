//! A probe written by hand: a real gRPC client of `ProbeService.Connect` over loopback that
//! sends exactly what a test tells it to, as a hostile, broken or impersonating probe would.
//! The coordinator it talks to is the real binary.

use std::time::Duration;

use postflight_proto::v1::probe_message::Kind;
use postflight_proto::v1::probe_service_client::ProbeServiceClient;
use postflight_proto::v1::{self, CoordinatorMessage, ProbeMessage, coordinator_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// One stream to the coordinator, opened with a hello.
pub struct FakeProbe {
    outbound: mpsc::Sender<ProbeMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
}

/// A hello as the real probe sends it.
pub fn hello(name: &str, region: &str) -> v1::Hello {
    v1::Hello {
        name: name.to_owned(),
        region: region.to_owned(),
        version: "fake".to_owned(),
        ..Default::default()
    }
}

impl FakeProbe {
    /// Connects and says `hello`; `Err` is the status the coordinator refused it with.
    pub async fn connect(url: &str, hello: v1::Hello, token: Option<&str>) -> Result<Self, Status> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = ProbeServiceClient::new(channel)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        let (outbound, rx) = mpsc::channel(64);
        outbound
            .send(ProbeMessage {
                kind: Some(Kind::Hello(hello)),
            })
            .await
            .map_err(|_| Status::internal("channel closed"))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| Status::invalid_argument("token"))?,
            );
        }
        let inbound = client.connect(request).await?.into_inner();
        Ok(Self { outbound, inbound })
    }

    /// Sends one message; false when the stream is gone.
    pub async fn send(&self, kind: Kind) -> bool {
        self.outbound
            .send(ProbeMessage { kind: Some(kind) })
            .await
            .is_ok()
    }

    /// The next message within `within`: `None` on silence or a clean end, `Err` for the
    /// status that ended the stream.
    pub async fn next(&mut self, within: Duration) -> Option<Result<CoordinatorMessage, Status>> {
        match tokio::time::timeout(within, self.inbound.message()).await {
            Ok(Ok(Some(message))) => Some(Ok(message)),
            Ok(Ok(None)) | Err(_) => None,
            Ok(Err(status)) => Some(Err(status)),
        }
    }

    /// Waits for the next assignment (skipping welcomes and acks).
    pub async fn assignment(&mut self, within: Duration) -> v1::Assignment {
        let until = tokio::time::Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Ok(CoordinatorMessage {
                    kind: Some(coordinator_message::Kind::Assignment(a)),
                })) => return a,
                Some(Ok(_)) => {}
                other => panic!("no assignment within {within:?}: {other:?}"),
            }
        }
    }

    /// Sends `kind` and returns the status the coordinator ends the stream with (acks and
    /// other messages before it are skipped).
    pub async fn refused(&mut self, kind: Kind) -> Status {
        assert!(self.send(kind).await, "the stream closed before sending");
        loop {
            match self.next(Duration::from_secs(10)).await {
                Some(Err(status)) => return status,
                Some(Ok(_)) => {}
                None => panic!("the coordinator did not refuse the message"),
            }
        }
    }

    /// Keeps the stream open without reading it: the coordinator's messages pile up.
    pub fn stop_reading(self) -> mpsc::Sender<ProbeMessage> {
        std::mem::forget(self.inbound);
        self.outbound
    }
}

/// An operator's client of `ValidationService` (what the CLI uses), without credentials.
pub async fn operator(
    url: &str,
) -> v1::validation_service_client::ValidationServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    v1::validation_service_client::ValidationServiceClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20)
}

/// `SubmitRun` of `plan_yaml` as an operator would; `timeout_ms` 0 is the coordinator's
/// default.
pub async fn submit(url: &str, plan_yaml: &str, timeout_ms: u64) -> Result<v1::Run, Status> {
    operator(url)
        .await
        .submit_run(v1::SubmitRunRequest {
            plan_yaml: plan_yaml.to_owned(),
            origin: "plan.yaml".to_owned(),
            options: Some(v1::RunOptions {
                timeout_ms,
                ..Default::default()
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}
