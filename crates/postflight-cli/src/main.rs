//! `postflight`: the operator's command line.

mod baselines;
mod cli;
mod demo;
mod history;
mod ledger;
mod local;
mod monitor;
mod plan_file;
mod remote;
mod render;
mod state;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{CheckArgs, Cli, Command, RunArgs};

/// Exit code for usage and plan errors.
pub(crate) const EXIT_PLAN_ERROR: u8 = 2;
/// Exit code when the run cannot complete.
pub(crate) const EXIT_NO_RUN: u8 = 5;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; a warning from its in-process coordinator (a dry-run
    // rollback decision, say) would land in the middle of its tables.
    let quiet = matches!(cli.command, Command::Demo(_));
    init_logging(cli.verbose, quiet);
    let token = match postflight_ops::secret::resolve(
        cli.access.token.as_deref(),
        cli.access.token_file.as_deref(),
        "--token",
        "--token-file",
    ) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_PLAN_ERROR);
        }
    };
    remote::set_credentials(
        postflight_ops::tls::ClientTls {
            ca: cli.access.tls_ca.clone(),
            cert: cli.access.tls_cert.clone(),
            key: cli.access.tls_key.clone(),
        },
        token,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_NO_RUN);
        }
    };
    runtime.block_on(async {
        let result = match cli.command {
            Command::Run(args) => run(args).await,
            Command::Check(args) => Ok(check(&args)),
            Command::Baseline(args) => baselines::take(args).await,
            Command::Baselines(args) => Ok(baselines::list(&args).await),
            Command::Feedback(args) => Ok(remote::feedback(&args)
                .await
                .unwrap_or_else(remote::Failure::exit)),
            Command::Demo(args) => demo::main(args).await,
            Command::Monitor(args) => monitor::main(args).await,
            Command::Probes(args) => Ok(remote::probes(&args)
                .await
                .unwrap_or_else(remote::Failure::exit)),
            Command::Runs(args) => Ok(remote::runs(&args)
                .await
                .unwrap_or_else(remote::Failure::exit)),
            Command::Report(args) => Ok(remote::report(&args)
                .await
                .unwrap_or_else(remote::Failure::exit)),
            Command::Watch(args) => Ok(remote::watch(&args)
                .await
                .unwrap_or_else(remote::Failure::exit)),
        };
        result.unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_NO_RUN)
        })
    })
}

fn init_logging(verbose: u8, quiet: bool) {
    // TLS failures are reported in the failing check's message; the verifier's own log line
    // would only repeat it on stderr.
    let default = match verbose {
        0 if quiet => "error,rustls_platform_verifier=off",
        0 => "warn,rustls_platform_verifier=off",
        1 => "info,rustls_platform_verifier=off",
        _ => "debug",
    };
    postflight_ops::logging::init(postflight_ops::logging::LogFormat::Text, default);
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = match plan_file::load(&args.plan, args.local) {
        Ok(plan) => plan,
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(ExitCode::from(EXIT_PLAN_ERROR));
        }
    };
    let against = match (&args.against, args.local) {
        // A coordinator looks its baselines up itself.
        (None, _) | (Some(_), false) => None,
        (Some(id), true) => match baselines::local_against(id, &plan) {
            Ok(baseline) => Some(baseline),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_PLAN_ERROR));
            }
        },
    };
    if !args.local {
        return Ok(remote::run(&args, &plan)
            .await
            .unwrap_or_else(remote::Failure::exit));
    }
    let history = history::LocalHistory::default_location();
    let forced = match &args.stage {
        None => None,
        Some(stage) => {
            let migration = args.migration.as_deref().unwrap_or_default();
            let earlier = history.stage_runs(&plan.name, migration);
            match postflight_plan::stages::check_stage(
                &plan,
                args.migration.as_deref(),
                stage,
                &earlier,
            ) {
                Ok(()) => None,
                Err(
                    refused @ postflight_plan::stages::StageRefused::EarlierStageMissing { .. },
                ) if args.force => {
                    eprintln!("warning: --force: {refused}");
                    Some(refused.to_string())
                }
                Err(refused) => {
                    eprintln!("error: {refused}");
                    return Ok(ExitCode::from(EXIT_PLAN_ERROR));
                }
            }
        }
    };
    let show_progress = std::io::stderr().is_terminal();
    let mut report = local::run(
        &plan,
        args.timeout,
        usize::from(args.concurrency),
        show_progress,
        args.dry_run,
        against.as_ref(),
    )
    .await?;
    report.migration = args.migration.clone();
    report.stage = args.stage.clone();
    report.forced = forced;
    if let Some(migration) = &args.migration {
        let entry = history::Entry {
            plan: plan.name.clone(),
            migration: migration.clone(),
            stage: args.stage.clone(),
            run_id: report.run_id.clone(),
            status: report.status,
        };
        if let Err(e) = history.record(&entry) {
            eprintln!("warning: cannot record the run in the local history: {e}");
        }
    }
    print!(
        "{}",
        render::report(&report, args.output, render::stdout_color())
    );
    Ok(ExitCode::from(report.status.exit_code()))
}

fn check(args: &CheckArgs) -> ExitCode {
    match plan_file::load(&args.plan, false) {
        Ok(plan) => {
            let count = |kind: &str| {
                plan.checks
                    .iter()
                    .filter(|c| c.kind.as_str() == kind)
                    .count()
            };
            let kinds: Vec<String> = postflight_plan::model::CheckKind::NAMES
                .iter()
                .filter(|k| count(k) > 0)
                .map(|k| match (*k, count(k)) {
                    ("steps", 1) => "1 flow".to_owned(),
                    ("steps", n) => format!("{n} flows"),
                    (k, n) => format!("{n} {k}"),
                })
                .collect();
            let checks = match plan.checks.len() {
                1 => "1 check".to_owned(),
                n => format!("{n} checks"),
            };
            println!(
                "{}: plan {} is valid: {checks} ({})",
                args.plan.display(),
                plan.name,
                kinds.join(", ")
            );
            if let Some(rollback) = &plan.rollback {
                let action = rollback
                    .action
                    .as_ref()
                    .map(|a| a.describe(&postflight_plan::vars::ProcessEnv))
                    .unwrap_or_else(|| "no action (decisions are recorded only)".to_owned());
                println!(
                    "  rollback: {action}{}",
                    if rollback.dry_run { " (dry run)" } else { "" }
                );
            }
            if let Some(monitor) = &plan.monitor {
                println!("  monitor: {} phases", monitor.phases.len());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(EXIT_PLAN_ERROR)
        }
    }
}
