//! The physical limit of result ingest on this machine: a server built from the same proto as
//! the coordinator that only counts and acknowledges results (no storage, no aggregation), and
//! hands each probe its next assignment when it finishes one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use postflight_proto::v1::probe_message::Kind;
use postflight_proto::v1::probe_service_server::{ProbeService, ProbeServiceServer};
use postflight_proto::v1::{self, CoordinatorMessage, ProbeMessage, coordinator_message};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Counts and acknowledges probe results.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

struct Null {
    results: Arc<AtomicU64>,
}

type Out = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ProbeService for Null {
    type ConnectStream = Out;

    async fn connect(
        &self,
        request: Request<Streaming<ProbeMessage>>,
    ) -> Result<Response<Out>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let results = self.results.clone();
        tokio::spawn(async move {
            let (mut name, mut assigned) = (String::new(), 0u64);
            while let Ok(Some(message)) = inbound.message().await {
                let reply = match message.kind {
                    Some(Kind::Hello(hello)) => {
                        let welcome = coordinator_message::Kind::Welcome(v1::Welcome {
                            coordinator_version: "null".into(),
                            heartbeat_interval_ms: 5000,
                            drop_assignments: vec![],
                        });
                        let _ = tx
                            .send(Ok(CoordinatorMessage {
                                kind: Some(welcome),
                            }))
                            .await;
                        name = hello.name;
                        // A few ahead, as a coordinator with queued runs would have them.
                        for _ in 1..AHEAD {
                            let _ = tx.send(Ok(assignment(&name, &mut assigned))).await;
                        }
                        assignment(&name, &mut assigned).kind
                    }
                    Some(Kind::Results(batch)) => {
                        results.fetch_add(batch.results.len() as u64, Ordering::Relaxed);
                        let ids = batch.results.into_iter().map(|r| r.result_id).collect();
                        Some(coordinator_message::Kind::Ack(v1::ResultAck {
                            result_ids: ids,
                        }))
                    }
                    Some(Kind::Finished(_)) => assignment(&name, &mut assigned).kind,
                    _ => None,
                };
                if let Some(kind) = reply
                    && tx
                        .send(Ok(CoordinatorMessage { kind: Some(kind) }))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Assignments a probe holds at once.
const AHEAD: u64 = 3;

/// The next assignment for probe `name`.
fn assignment(name: &str, assigned: &mut u64) -> CoordinatorMessage {
    *assigned += 1;
    CoordinatorMessage {
        kind: Some(coordinator_message::Kind::Assignment(v1::Assignment {
            assignment_id: format!("null-{name}-{assigned}"),
            run_id: format!("null-run-{assigned}"),
            plan_yaml: String::new(),
            deadline_unix_ms: u64::MAX,
            keep_latencies: false,
        })),
    }
}

/// The same allocator as the coordinator, so that the ratio compares the work, not malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("null-coordinator listening on {}", listener.local_addr()?);
    let service = ProbeServiceServer::new(Null {
        results: Arc::new(AtomicU64::new(0)),
    })
    .max_decoding_message_size(16 * 1024 * 1024);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}
