//! Simulated probes: many gRPC streams that push check results as fast as the server
//! acknowledges them (a bounded window of batches in flight per stream), or that only stay
//! connected (`--idle`, for footprint). Each probe works as a real one does: one result per
//! check of its assignment (HTTP and latency checks with real sketches), then
//! `AssignmentFinished`, then the next assignment. Against a real coordinator (`--submit`) it
//! keeps submitting runs of a plan whose required regions are the simulated probes' regions,
//! a few ahead of the slowest probe, as a monitor's rounds would: every result belongs to a
//! real assignment and is stored and aggregated, and every run is finalized.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use postflight_bench::{ResultTemplates, channel, median, plan_yaml};
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
    /// Checks in the plan (one result each per assignment).
    #[arg(long, default_value_t = 500)]
    checks: u32,
    /// Submit a run to the coordinator first (a real coordinator needs one).
    #[arg(long)]
    submit: bool,
    /// Stop after this many results in total, finish the run and time GetReport.
    #[arg(long)]
    total: Option<u64>,
    /// Only connect and heartbeat.
    #[arg(long)]
    idle: bool,
    /// Regions the simulated probes are spread over (stream i is in region i mod N); with
    /// fewer regions than streams, the plan asks every probe of a region
    /// (`probes_per_region: all`) [default: one region per stream].
    #[arg(long)]
    regions: Option<usize>,
    /// Print the plan the simulated probes answer (for a monitor started elsewhere) and exit.
    #[arg(long)]
    print_plan: bool,
}

/// Runs submitted ahead of the slowest probe.
const RUNS_AHEAD: u64 = 3;

/// What every stream shares.
struct Shared {
    templates: ResultTemplates,
    checks: u32,
    batch: usize,
    window: usize,
    idle: bool,
    seconds: f64,
    /// Results this stream may send in all (`--total`).
    total: Option<u64>,
    /// Per stream: assignments finished.
    finished: Vec<AtomicU64>,
    /// Region count (stream i is in region `bench-{i % regions}`).
    regions: usize,
    /// Streams that have sent everything and had it all acknowledged.
    done: AtomicU64,
    /// Nanoseconds since `epoch` of the last acknowledgement or finish any stream saw.
    last_word_ns: AtomicU64,
    epoch: Instant,
    connected: Barrier,
    started: Barrier,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.checks > 0, "--checks must be at least 1");
    let regions = args
        .regions
        .unwrap_or(args.streams)
        .clamp(1, args.streams.max(1));
    let plan = plan_yaml(
        "bench-ingest",
        args.checks as usize,
        &(0..regions)
            .map(|i| format!("bench-{i}"))
            .collect::<Vec<_>>(),
        regions < args.streams,
    );
    if args.print_plan {
        print!("{plan}");
        return Ok(());
    }
    // Whole assignments only, so that every run completes.
    let checks = u64::from(args.checks);
    let per_stream_total = args
        .total
        .map(|t| t.div_ceil(args.streams as u64).div_ceil(checks) * checks);
    let shared = Arc::new(Shared {
        templates: ResultTemplates::new(),
        checks: args.checks,
        batch: args.batch,
        window: args.window,
        idle: args.idle,
        seconds: args.seconds,
        total: per_stream_total,
        finished: (0..args.streams).map(|_| AtomicU64::new(0)).collect(),
        regions,
        done: AtomicU64::new(0),
        last_word_ns: AtomicU64::new(0),
        epoch: Instant::now(),
        connected: Barrier::new(args.streams + 1),
        started: Barrier::new(args.streams + 1),
    });
    let mut tasks = Vec::new();
    for i in 0..args.streams {
        let url = args.coordinator.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move { stream(i, &url, &shared).await }));
    }
    shared.connected.wait().await;
    // Runs every stream needs with --total; otherwise as many as the time allows.
    let runs_needed = per_stream_total.map(|t| t.div_ceil(u64::from(args.checks)));
    let mut validation = None;
    let mut last_run = None;
    let mut submitted = 0u64;
    let submit_more = |submitted: u64| {
        let slowest = shared
            .finished
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        submitted < slowest + RUNS_AHEAD && runs_needed.is_none_or(|n| submitted < n)
    };
    if args.submit && !args.idle {
        let mut client = ValidationServiceClient::new(channel(&args.coordinator).await?)
            .max_encoding_message_size(16 << 20)
            .max_decoding_message_size(64 << 20);
        while submit_more(submitted) {
            last_run = Some(submit(&mut client, &plan).await?);
            submitted += 1;
        }
        validation = Some(client);
    }
    shared.started.wait().await;
    let clock = Instant::now();
    let mut pending: Vec<_> = tasks.into_iter().map(Some).collect();
    let mut total_acked = 0;
    // With --total of runs submitted at once, the moment the last run's report is stored: once every stream said its
    // last word, its status is polled closely (an active run reads from memory; it shows
    // `completed` only once its report is in the database).
    let finalized = match (&last_run, args.total, &validation) {
        // Every run submitted already (one run's worth of results, say): its last one.
        (Some(run_id), Some(_), Some(client)) if runs_needed == Some(submitted) => {
            let (run_id, mut client, shared) = (run_id.clone(), client.clone(), shared.clone());
            let streams = args.streams as u64;
            Some(tokio::spawn(async move {
                while shared.done.load(Ordering::SeqCst) < streams {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                loop {
                    let run = client
                        .get_run(v1::GetRunRequest {
                            run_id: run_id.clone(),
                        })
                        .await?
                        .into_inner();
                    if run.status == "completed" {
                        return anyhow::Ok(shared.epoch.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }))
        }
        _ => None,
    };
    while pending.iter().any(Option::is_some) {
        // Keep runs coming while the probes work through them.
        if let Some(client) = &mut validation {
            while submit_more(submitted) {
                last_run = Some(submit(client, &plan).await?);
                submitted += 1;
            }
        }
        for slot in &mut pending {
            if slot
                .as_ref()
                .is_some_and(tokio::task::JoinHandle::is_finished)
                && let Some(task) = slot.take()
            {
                total_acked += task.await??;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = clock.elapsed().as_secs_f64();
    let mut out = serde_json::json!({
        "streams": args.streams,
        "checks": args.checks,
        "runs": submitted,
        "results": total_acked,
        "seconds": seconds,
        "results_per_s": total_acked as f64 / seconds,
    });
    if let (Some(run_id), Some(_), Some(mut validation)) = (last_run, args.total, validation) {
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
        for _ in 0..21 {
            let t = Instant::now();
            let report = validation
                .get_report(v1::GetReportRequest {
                    run_id: run_id.clone(),
                })
                .await?
                .into_inner();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(
                report.checks.len() == args.checks as usize,
                "unexpected report"
            );
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
        if let Some(finalized) = finalized {
            let stored = finalized.await??;
            let last_word = Duration::from_nanos(shared.last_word_ns.load(Ordering::SeqCst));
            out["finalize_ms"] = (stored.saturating_sub(last_word).as_secs_f64() * 1e3).into();
        }
        out["run_id"] = run_id.into();
        out["report_ms"] = median(&mut times).into();
        out["get_run_ms"] = median(&mut run_times).into();
    }
    println!("{out}");
    Ok(())
}

/// Submits one run of `plan`; its id.
async fn submit(
    client: &mut ValidationServiceClient<tonic::transport::Channel>,
    plan: &str,
) -> anyhow::Result<String> {
    Ok(client
        .submit_run(v1::SubmitRunRequest {
            plan_yaml: plan.to_owned(),
            origin: "bench".into(),
            options: Some(v1::RunOptions {
                dry_run: true,
                regions: vec![],
                timeout_ms: 3_600_000,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .run_id)
}

/// One simulated probe; the results acknowledged to it.
async fn stream(i: usize, url: &str, shared: &Shared) -> anyhow::Result<u64> {
    // Thousands of connections at once overflow the listen backlog: a connection that is
    // not welcomed within a few seconds is tried again, as a real probe reconnects.
    let mut attempt = 0u64;
    let (tx, mut inbound) = loop {
        let tried = tokio::time::timeout(Duration::from_secs(5), handshake(i, url, shared)).await;
        match tried {
            Ok(Ok(open)) => break open,
            Ok(Err(e)) if attempt >= 20 => return Err(e),
            Err(_) if attempt >= 20 => anyhow::bail!("stream {i}: no welcome after 20 attempts"),
            _ => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    };
    // Heartbeats from the welcome on, as a real probe sends them: connecting thousands of
    // streams takes longer than the coordinator lets a silent probe stay.
    let beating = {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let beat = v1::ProbeMessage {
                    kind: Some(probe_message::Kind::Heartbeat(v1::Heartbeat::default())),
                };
                if tx.send(beat).await.is_err() {
                    return;
                }
            }
        })
    };
    let _stop_beating = AbortOnDrop(beating);
    shared.connected.wait().await;
    shared.started.wait().await;
    if shared.idle {
        tokio::time::sleep(Duration::from_secs_f64(shared.seconds)).await;
        return Ok(0);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(shared.seconds);
    let limit = shared.total.unwrap_or(u64::MAX);
    let mut queue: VecDeque<v1::Assignment> = VecDeque::new();
    // The assignment being worked on and its next check.
    let mut current: Option<(v1::Assignment, u32)> = None;
    let (mut sent, mut mine, mut in_flight) = (0u64, 0u64, 0usize);
    loop {
        let working = sent < limit && (shared.total.is_some() || Instant::now() < deadline);
        while working && in_flight < shared.window {
            if current.is_none() {
                current = queue.pop_front().map(|a| (a, 0));
            }
            let Some((assignment, next)) = &mut current else {
                break;
            };
            let n = (shared.batch as u64)
                .min(limit - sent)
                .min(u64::from(shared.checks - *next)) as u32;
            let results = (*next..*next + n)
                .map(|k| {
                    shared
                        .templates
                        .result(&assignment.run_id, &assignment.assignment_id, k)
                })
                .collect();
            tx.send(v1::ProbeMessage {
                kind: Some(probe_message::Kind::Results(v1::ResultBatch { results })),
            })
            .await?;
            sent += u64::from(n);
            *next += n;
            in_flight += 1;
            if *next == shared.checks {
                tx.send(v1::ProbeMessage {
                    kind: Some(probe_message::Kind::Finished(v1::AssignmentFinished {
                        assignment_id: assignment.assignment_id.clone(),
                        run_id: assignment.run_id.clone(),
                        results: shared.checks,
                    })),
                })
                .await?;
                current = None;
                shared.finished[i].fetch_add(1, Ordering::Relaxed);
                note_word(shared);
            }
        }
        if in_flight == 0 && !working {
            break;
        }
        // Without a window to fill or an assignment to work on, wait for the server.
        let message = if in_flight == 0 {
            match tokio::time::timeout(Duration::from_millis(50), inbound.message()).await {
                Ok(message) => message?,
                Err(_) => continue,
            }
        } else {
            inbound.message().await?
        };
        match message {
            Some(v1::CoordinatorMessage {
                kind: Some(coordinator_message::Kind::Ack(ack)),
            }) => {
                in_flight -= 1;
                mine += ack.result_ids.len() as u64;
                note_word(shared);
            }
            Some(v1::CoordinatorMessage {
                kind: Some(coordinator_message::Kind::Assignment(a)),
            }) => queue.push_back(a),
            Some(_) => {}
            None => anyhow::bail!("stream {i} closed"),
        }
    }
    shared.done.fetch_add(1, Ordering::SeqCst);
    // Let the last messages leave before the stream closes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(mine)
}

/// Connects simulated probe `i`, says hello and waits for the welcome: the stream's sender
/// and what the coordinator sends.
async fn handshake(
    i: usize,
    url: &str,
    shared: &Shared,
) -> anyhow::Result<(
    mpsc::Sender<v1::ProbeMessage>,
    tonic::Streaming<v1::CoordinatorMessage>,
)> {
    let mut client =
        ProbeServiceClient::new(channel(url).await?).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<v1::ProbeMessage>(shared.window + 4);
    tx.send(v1::ProbeMessage {
        kind: Some(probe_message::Kind::Hello(v1::Hello {
            name: format!("bench-probe-{i}"),
            region: format!("bench-{}", i % shared.regions),
            version: "bench".into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    // Welcome first.
    inbound.message().await?;
    Ok((tx, inbound))
}

/// Aborts a task when dropped (a stream's heartbeats end with the stream).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records that a stream just heard an acknowledgement or sent a finish.
fn note_word(shared: &Shared) {
    let at = shared.epoch.elapsed().as_nanos() as u64;
    shared.last_word_ns.fetch_max(at, Ordering::SeqCst);
}
