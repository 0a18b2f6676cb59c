//! `postflight monitor`: continuous validation after a migration, locally or on a coordinator.
//!
//! One line per round (status, request error rate and p99 over the sliding window); the
//! command ends with exit code 0 when the last phase ends without rollback, 1 when a rollback
//! fires.

use std::process::ExitCode;
use std::time::Duration;

use postflight_plan::model::Plan;
use postflight_plan::monitor::{MonitorSession, RoundInput, RoundSample, round_timeout};
use postflight_plan::rollback::RollbackReport;
use postflight_plan::vars::ProcessEnv;
use postflight_proto::v1::monitor_event::Kind;
use postflight_proto::v1::{self, MonitorEvent};
use serde_json::json;
use tonic::Code;

use crate::cli::{MonitorArgs, Output};
use crate::ledger::FileLedger;
use crate::{local, plan_file, remote, render};

/// What a round contributes to the output.
struct RoundLine {
    round: u32,
    run_id: String,
    verdict: String,
    requests: u64,
    errors: u64,
    p99_ms: Option<f64>,
    window_rounds: u32,
    every: String,
    reasons: Vec<String>,
    held_back: Vec<String>,
    streak: u32,
    needed: u32,
}

impl RoundLine {
    fn print(&self, output: Output) {
        let error_rate = postflight_plan::report::RequestCount {
            count: self.requests,
            errors: self.errors,
            missing: 0,
        }
        .error_rate();
        match output {
            Output::Json => println!(
                "{}",
                json!({"round": self.round, "run_id": self.run_id, "status": self.verdict,
                       "requests": self.requests, "errors": self.errors, "error_rate": (error_rate * 1e4).round() / 1e4,
                       "p99_ms": self.p99_ms, "window_rounds": self.window_rounds, "every": self.every,
                       "reasons": self.reasons, "held_back": self.held_back,
                       "failing_rounds_held": self.streak, "failing_rounds": self.needed})
            ),
            Output::Table => {
                let held = if self.streak > 0 {
                    format!("  failing {}/{}", self.streak, self.needed)
                } else {
                    String::new()
                };
                println!(
                    "round {:>4}  {}  {:<12}  error rate {:>5.1}% ({}/{})  p99 {:>9}  window {} rounds, every {}{held}",
                    self.round,
                    postflight_plan::report::rfc3339(std::time::SystemTime::now()),
                    self.verdict,
                    error_rate * 100.0,
                    self.errors,
                    self.requests,
                    self.p99_ms.map_or("—".to_owned(), render::ms),
                    self.window_rounds,
                    self.every
                );
                for why in &self.held_back {
                    println!("           held back: {why}");
                }
            }
        }
    }
}

fn print_end(
    status: &str,
    detail: &str,
    rollback: Option<&RollbackReport>,
    output: Output,
) -> ExitCode {
    match output {
        Output::Json => println!(
            "{}",
            json!({"ended": status, "detail": detail, "rollback": rollback})
        ),
        Output::Table => {
            println!("monitor {status}: {detail}");
            if let Some(rb) = rollback {
                if let Some(action) = &rb.action {
                    let outcome = rb.outcome.map_or("not executed", |o| o.as_str());
                    println!("rollback action: {action} → {outcome}");
                }
                if let Some(detail) = &rb.detail {
                    println!("  {detail}");
                }
                if let Some(error) = &rb.error {
                    println!("  error: {error}");
                }
            }
        }
    }
    if status == "rolled_back" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs the command.
pub async fn main(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let plan = match plan_file::load(&args.plan, args.local) {
        Ok(plan) => plan,
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(ExitCode::from(2));
        }
    };
    if args.local {
        return local_monitor(&plan, &args).await;
    }
    Ok(remote_monitor(&plan, &args)
        .await
        .unwrap_or_else(remote::Failure::exit))
}

async fn local_monitor(plan: &Plan, args: &MonitorArgs) -> anyhow::Result<ExitCode> {
    let against = match &args.against {
        Some(id) => match crate::baselines::local_against(id, plan) {
            Ok(baseline) => Some(baseline),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let config = plan.monitor.clone().unwrap_or_default();
    let monitor_id = uuid::Uuid::now_v7().to_string();
    let started = tokio::time::Instant::now();
    let mut session = MonitorSession::new(plan);
    let ledger = FileLedger::default_location();
    let regions = vec![postflight_plan::verdict::LOCAL_REGION.to_owned()];
    if args.output == Output::Table {
        eprintln!(
            "monitoring plan {} locally for {} (window {}, acting after {} failing rounds in a row); Ctrl-C stops",
            plan.name,
            postflight_plan::duration::format_duration(config.total()),
            postflight_plan::duration::format_duration(config.window),
            plan.failing_rounds()
        );
    }
    let earlier = crate::local::interrupted_notes(&ledger, plan).await;
    let mut round = 0u32;
    loop {
        let Some(every) = config.every_at(started.elapsed()) else {
            return Ok(print_end(
                "completed",
                "the last phase ended without rollback",
                None,
                args.output,
            ));
        };
        let round_started = tokio::time::Instant::now();
        round += 1;
        let local::Round {
            report,
            results,
            end,
            ..
        } = local::round(
            plan,
            Some(round_timeout(plan)),
            postflight_checks::run::DEFAULT_CONCURRENCY,
            false,
            against.as_ref(),
        )
        .await?;
        let outcome = session.round(
            plan,
            RoundInput {
                sample: RoundSample::from_results(plan, &results, postflight_ops::host::now_ms()),
                overall: report.status,
                checks: &report.checks,
                required: &regions,
                end,
            },
            &ProcessEnv,
        );
        RoundLine {
            round,
            run_id: report.run_id.clone(),
            verdict: report.status.as_str().to_owned(),
            requests: outcome.merged.requests.count,
            errors: outcome.merged.requests.errors,
            p99_ms: outcome.merged.p99_ms,
            window_rounds: outcome.window_rounds as u32,
            every: postflight_plan::duration::format_duration(every),
            reasons: outcome.reasons.clone(),
            held_back: outcome.held_back.clone(),
            streak: outcome.streak,
            needed: outcome.needed,
        }
        .print(args.output);
        if let Some(mut rollback) = outcome.decision {
            rollback.dry_run |= args.dry_run;
            rollback.held_back.extend(earlier);
            let context = local::rollback_context(plan, &report, Some(&monitor_id));
            let subject = format!("monitor:{monitor_id}");
            postflight_rollback::carry_out(
                plan,
                &mut rollback,
                &context,
                &subject,
                &ledger,
                &ProcessEnv,
            )
            .await;
            let detail = format!("rollback: {}", rollback.reasons.join("; "));
            return Ok(print_end(
                "rolled_back",
                &detail,
                Some(&rollback),
                args.output,
            ));
        }
        tokio::select! {
            () = tokio::time::sleep_until(round_started + every) => {}
            _ = tokio::signal::ctrl_c() => {
                return Ok(print_end("stopped", "interrupted", None, args.output));
            }
        }
    }
}

async fn remote_monitor(plan: &Plan, args: &MonitorArgs) -> Result<ExitCode, remote::Failure> {
    let url = remote::coordinator_url(args.coordinator.as_deref());
    let mut client = remote::client(&url).await?;
    let monitor = client
        .start_monitor(v1::StartMonitorRequest {
            plan_yaml: postflight_plan::canonical::canonical_yaml(plan),
            origin: args.plan.display().to_string(),
            options: Some(v1::RunOptions {
                dry_run: args.dry_run,
                regions: args.regions.clone(),
                against: args.against.clone().unwrap_or_default(),
                migration: args.migration.clone().unwrap_or_default(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| remote::from_status(&url, &s))?
        .into_inner();
    if args.detach {
        match args.output {
            Output::Json => println!(
                "{}",
                json!({"monitor_id": monitor.monitor_id, "plan": monitor.plan, "ends_at": monitor.ends_at})
            ),
            Output::Table => println!("{}", monitor.monitor_id),
        }
        eprintln!(
            "monitor {} of plan {} runs on {url} until {}; follow it with `postflight watch {}`",
            monitor.monitor_id, monitor.plan, monitor.ends_at, monitor.monitor_id
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "monitor {} of plan {} started on {url} (until {}); it goes on if this command stops",
        monitor.monitor_id, monitor.plan, monitor.ends_at
    );
    follow(&url, &monitor.monitor_id, args.output).await
}

/// Follows a monitor until it ends, printing a line per round; watches again when the stream
/// breaks (the monitor goes on in the coordinator).
pub async fn follow(
    url: &str,
    monitor_id: &str,
    output: Output,
) -> Result<ExitCode, remote::Failure> {
    let mut seen = 0u32;
    let mut failures = 0;
    loop {
        let attempt = async {
            let mut client = remote::client(url)
                .await
                .map_err(|f| tonic::Status::unavailable(f.message().to_owned()))?;
            let mut stream = client
                .watch_monitor(v1::WatchMonitorRequest {
                    monitor_id: monitor_id.to_owned(),
                })
                .await?
                .into_inner();
            while let Some(event) = stream.message().await? {
                if let Some(code) = on_event(&event, &mut seen, output) {
                    return Ok(Some(code));
                }
            }
            Ok::<_, tonic::Status>(None)
        };
        match attempt.await {
            Ok(Some(code)) => return Ok(code),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                return Err(remote::from_status(url, &status));
            }
            other => {
                failures += 1;
                if failures > 60 {
                    let reason = other
                        .err()
                        .map_or("the stream ended".to_owned(), |s| s.message().to_owned());
                    return Err(remote::Failure::new(
                        5,
                        format!(
                            "lost the coordinator ({reason}); the monitor goes on there: `postflight watch {monitor_id}`"
                        ),
                    ));
                }
                if failures == 1 {
                    eprintln!(
                        "lost the coordinator's stream; retrying (the monitor goes on there)"
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn on_event(event: &MonitorEvent, seen: &mut u32, output: Output) -> Option<ExitCode> {
    match &event.kind {
        Some(Kind::Round(r)) if r.round > *seen => {
            *seen = r.round;
            RoundLine {
                round: r.round,
                run_id: r.run_id.clone(),
                verdict: r.verdict.clone(),
                requests: r.requests,
                errors: r.errors,
                p99_ms: r.p99_ms,
                window_rounds: r.window_rounds,
                every: r.every.clone(),
                reasons: r.reasons.clone(),
                held_back: r.held_back.clone(),
                streak: r.failing_rounds_held,
                needed: r.failing_rounds,
            }
            .print(output);
            None
        }
        Some(Kind::Round(_)) => None,
        Some(Kind::Ended(end)) => {
            let rollback = end
                .rollback
                .clone()
                .and_then(|r| RollbackReport::try_from(r).ok());
            Some(print_end(
                &end.status,
                &end.detail,
                rollback.as_ref(),
                output,
            ))
        }
        None => None,
    }
}
