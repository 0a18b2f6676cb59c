//! Simulated probes: many gRPC streams that push check results as fast as the server
//! acknowledges them (a bounded window of batches in flight per stream), or that only stay
//! connected (`--idle`, for footprint). Against a real coordinator (`--submit`) it first
//! submits a run whose required regions are the simulated probes' regions, so every result
//! belongs to a real assignment and is stored and aggregated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use postflight_bench::{channel, median, result};
use postflight_proto::v1::probe_service_client::ProbeServiceClient;
use postflight_proto::v1::validation_service_client::ValidationServiceClient;
use postflight_proto::v1::{self, coordinator_message, probe_message};
use tokio::sync::{Barrier, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Pushes results from simulated probes.
#[derive(Parser)]
struct Args {
    /// The coordinator (or null server) URL.
    #[arg(long)]
    coordinator: String,
    /// Simulated probes (one gRPC stream and connection each).
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// How long to push (or, with --idle, to stay connected), in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Results per message.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Unacknowledged batches in flight per stream.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Submit a run to the coordinator first (a real coordinator needs one).
    #[arg(long)]
    submit: bool,
    /// Stop after this many results in total, finish the run and time GetReport.
    #[arg(long)]
    total: Option<u64>,
    /// Only connect and heartbeat.
    #[arg(long)]
    idle: bool,
}

fn plan_yaml(regions: usize) -> String {
    let list: Vec<String> = (0..regions).map(|i| format!("bench-{i}")).collect();
    format!(
        "name: bench-ingest\nchecks:\n  - name: health\n    http: {{url: \"http://127.0.0.1:9/health\"}}\npolicy: {{regions: [{}], quorum: any}}\n",
        list.join(", ")
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let acked = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(Barrier::new(args.streams + 1));
    let started = Arc::new(Barrier::new(args.streams + 1));
    let per_stream_total = args.total.map(|t| t.div_ceil(args.streams as u64));
    let mut tasks = Vec::new();
    for i in 0..args.streams {
        let url = args.coordinator.clone();
        let acked = acked.clone();
        let connected = connected.clone();
        let started = started.clone();
        let (batch, window, idle, seconds) = (args.batch, args.window, args.idle, args.seconds);
        tasks.push(tokio::spawn(async move {
            stream(
                i,
                &url,
                batch,
                window,
                idle,
                seconds,
                per_stream_total,
                acked,
                connected,
                started,
            )
            .await
        }));
    }
    connected.wait().await;
    let mut run_id = None;
    if args.submit && !args.idle {
        let mut validation = ValidationServiceClient::new(channel(&args.coordinator).await?);
        let run = validation
            .submit_run(v1::SubmitRunRequest {
                plan_yaml: plan_yaml(args.streams),
                origin: "bench".into(),
                options: Some(v1::RunOptions {
                    dry_run: true,
                    regions: vec![],
                    timeout_ms: 3_600_000,
                }),
            })
            .await?
            .into_inner();
        run_id = Some(run.run_id);
    }
    started.wait().await;
    let clock = Instant::now();
    let mut total_acked = 0;
    for task in tasks {
        total_acked += task.await??;
    }
    let seconds = clock.elapsed().as_secs_f64();
    let mut out = serde_json::json!({
        "streams": args.streams,
        "results": total_acked,
        "seconds": seconds,
        "results_per_s": total_acked as f64 / seconds,
    });
    if let (Some(run_id), Some(_)) = (run_id, args.total) {
        let mut validation = ValidationServiceClient::new(channel(&args.coordinator).await?);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let run = validation
                .get_run(v1::GetRunRequest {
                    run_id: run_id.clone(),
                })
                .await?
                .into_inner();
            if run.status == "completed" {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the run did not complete: {}",
                run.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut times = Vec::new();
        for _ in 0..51 {
            let t = Instant::now();
            let report = validation
                .get_report(v1::GetReportRequest {
                    run_id: run_id.clone(),
                })
                .await?
                .into_inner();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(report.checks.len() == 1, "unexpected report");
        }
        let mut run_times = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            validation
                .get_run(v1::GetRunRequest {
                    run_id: run_id.clone(),
                })
                .await?;
            run_times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        out["run_id"] = run_id.into();
        out["report_ms"] = median(&mut times).into();
        out["get_run_ms"] = median(&mut run_times).into();
    }
    println!("{out}");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    i: usize,
    url: &str,
    batch: usize,
    window: usize,
    idle: bool,
    seconds: f64,
    total: Option<u64>,
    acked: Arc<AtomicU64>,
    connected: Arc<Barrier>,
    started: Arc<Barrier>,
) -> anyhow::Result<u64> {
    let mut client =
        ProbeServiceClient::new(channel(url).await?).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<v1::ProbeMessage>(window + 4);
    tx.send(v1::ProbeMessage {
        kind: Some(probe_message::Kind::Hello(v1::Hello {
            name: format!("bench-probe-{i}"),
            region: format!("bench-{i}"),
            version: "bench".into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    // Welcome first.
    inbound.message().await?;
    connected.wait().await;
    started.wait().await;
    if idle {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
        while tokio::time::Instant::now() < deadline {
            tx.send(v1::ProbeMessage {
                kind: Some(probe_message::Kind::Heartbeat(v1::Heartbeat::default())),
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(5).min(Duration::from_secs_f64(seconds))).await;
        }
        return Ok(0);
    }
    let assignment = loop {
        match inbound.message().await? {
            Some(v1::CoordinatorMessage {
                kind: Some(coordinator_message::Kind::Assignment(a)),
            }) => break a,
            Some(_) => continue,
            None => anyhow::bail!("stream {i} closed before an assignment"),
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut sent, mut mine, mut in_flight) = (0u64, 0u64, 0usize);
    let limit = total.unwrap_or(u64::MAX);
    loop {
        while in_flight < window && sent < limit && (total.is_some() || Instant::now() < deadline) {
            let n = (batch as u64).min(limit - sent);
            let results = (sent..sent + n)
                .map(|k| result(&assignment.run_id, &assignment.assignment_id, k))
                .collect();
            tx.send(v1::ProbeMessage {
                kind: Some(probe_message::Kind::Results(v1::ResultBatch { results })),
            })
            .await?;
            sent += n;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        match inbound.message().await? {
            Some(v1::CoordinatorMessage {
                kind: Some(coordinator_message::Kind::Ack(ack)),
            }) => {
                in_flight -= 1;
                mine += ack.result_ids.len() as u64;
                acked.fetch_add(ack.result_ids.len() as u64, Ordering::Relaxed);
            }
            Some(_) => {}
            None => anyhow::bail!("stream {i} closed"),
        }
    }
    if total.is_some() {
        tx.send(v1::ProbeMessage {
            kind: Some(probe_message::Kind::Finished(v1::AssignmentFinished {
                assignment_id: assignment.assignment_id.clone(),
                run_id: assignment.run_id.clone(),
                results: mine as u32,
            })),
        })
        .await?;
        // Let the message leave before the stream closes.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(mine)
}
