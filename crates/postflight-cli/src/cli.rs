//! Command-line interface definitions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Validate a service right after a migration or deployment, and decide whether to roll back.
///
/// A plan (YAML) lists the checks that define "still works": the service answers, tool calls
/// return real data, latency stays in bounds, the database still has its tables and indexes.
/// postflight runs them and prints a verdict: PASS, WARN, FAIL or INCONCLUSIVE.
///
/// Exit codes of run and check: 0 PASS, 1 FAIL, 2 usage or plan error, 3 WARN,
/// 4 INCONCLUSIVE, 5 the run could not complete.
#[derive(Debug, Parser)]
#[command(
    name = "postflight",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Log verbosity on stderr: -v for info, -vv for debug (or set POSTFLIGHT_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// How to reach a coordinator that requires credentials or TLS.
    #[command(flatten)]
    pub access: AccessArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Credentials and TLS for talking to a coordinator (all commands that connect).
#[derive(Debug, Args)]
#[command(next_help_heading = "Coordinator access")]
pub struct AccessArgs {
    /// Operator token the coordinator requires (sent as `authorization: Bearer …`).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "POSTFLIGHT_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Read the operator token from this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// CA (PEM) that signed an https:// coordinator's certificate [default: the system's roots].
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for a coordinator that requires mutual TLS; needs --tls-key.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a plan and print the verdict (exit 0 PASS, 1 FAIL, 3 WARN, 4 INCONCLUSIVE).
    Run(RunArgs),
    /// Validate a plan without running it (exit 0 when valid, 2 with every error otherwise).
    Check(CheckArgs),
    /// Run a plan before a change and keep what it measured (latencies, request and error
    /// counts per check) as a baseline; later runs compare with it (`run --against`). Only a
    /// run that passes or warns is kept (exit code as `run`).
    Baseline(BaselineArgs),
    /// List the baselines, newest first.
    Baselines(BaselinesArgs),
    /// Report what you saw after a migration (`feedback M "checkout is slow"`), or list the
    /// feedback about one (`feedback list M`). Kept by the coordinator; reports and the status
    /// page show it, and `rollback.feedback_above` acts on regression reports.
    Feedback(FeedbackArgs),
    /// Keep validating after a migration: the plan round after round on its monitor phases
    /// (default: every 30s for 24h, then every 5m for 7d), one line per round, until the last
    /// phase ends (exit 0) or a rollback fires (exit 1).
    Monitor(MonitorArgs),
    /// See postflight work on one machine: a coordinator, probes in three regions and a demo
    /// agent backend, checked before and after a migration that breaks it. Needs nothing
    /// installed.
    Demo(DemoArgs),
    /// List the probes the coordinator knows, connected or not.
    Probes(RemoteArgs),
    /// List recent runs, newest first.
    Runs(RunsArgs),
    /// Print the report of a run (exit code as `run`).
    Report(RunIdArgs),
    /// Follow a run live until its report (exit code as `run`).
    Watch(RunIdArgs),
}

/// Where the coordinator is, and how to print what it says.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The coordinator [default: $POSTFLIGHT_COORDINATOR, then http://127.0.0.1:7700].
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `postflight runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Coordinator and output.
    #[command(flatten)]
    pub remote: RemoteArgs,

    /// Only runs of this plan.
    #[arg(long, value_name = "NAME")]
    pub plan: Option<String>,

    /// How many runs.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: u32,
}

/// `postflight report` and `postflight watch`.
#[derive(Debug, Args)]
pub struct RunIdArgs {
    /// The run's id (see `postflight runs`).
    pub run_id: String,

    /// Coordinator and output.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `postflight run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan file (YAML); `-` reads it from standard input.
    pub plan: PathBuf,

    /// Execute the plan in this process, as the single region `local`.
    #[arg(long)]
    pub local: bool,

    /// Coordinator to submit the run to (the default without --local) [default:
    /// $POSTFLIGHT_COORDINATOR, then http://127.0.0.1:7700].
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    pub coordinator: Option<String>,

    /// Report format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Decide on rollback but never execute it.
    #[arg(long)]
    pub dry_run: bool,

    /// Regions that must report (repeatable); overrides the plan's policy.regions.
    #[arg(long = "region", value_name = "REGION", conflicts_with = "local")]
    pub regions: Vec<String>,

    /// Bound on the whole run (e.g. 90s, 5m); checks without a result by then are missing
    /// data, which is never a pass.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub timeout: Option<Duration>,

    /// With --local: checks in flight at once (1 runs them one after the other, gentlest on
    /// the service and the most faithful latencies).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Compare with a baseline taken before the change, by id (see `postflight baselines`) or
    /// `latest` (the plan's newest); with --local a baseline of this CLI, else one of the
    /// coordinator. A check whose latency or error rate got worse beyond the plan's
    /// `baseline:` limits, with statistical evidence, fails.
    #[arg(long, value_name = "BASELINE_ID|latest")]
    pub against: Option<String>,

    /// The migration this run belongs to (a label, e.g. a ticket): in the report, and what the
    /// plan's stages are passed for.
    #[arg(long, value_name = "M")]
    pub migration: Option<String>,

    /// The stage this run is at (one of the plan's `stages:`); refused (exit 2) until the same
    /// plan passed every earlier stage for the same --migration.
    #[arg(long, value_name = "S", requires = "migration")]
    pub stage: Option<String>,

    /// With --stage: run even though an earlier stage has not passed; the report records it.
    #[arg(long, requires = "stage")]
    pub force: bool,
}

/// `postflight monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The plan file (YAML); `-` reads it from standard input.
    pub plan: PathBuf,

    /// Monitor from this process, as the single region `local`.
    #[arg(long)]
    pub local: bool,

    /// Coordinator that runs the monitor (the default without --local); it goes on when this
    /// command exits [default: $POSTFLIGHT_COORDINATOR, then http://127.0.0.1:7700].
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    pub coordinator: Option<String>,

    /// Decide on rollback but never execute it.
    #[arg(long)]
    pub dry_run: bool,

    /// Start the monitor on the coordinator, print its id and return.
    #[arg(long, conflicts_with = "local")]
    pub detach: bool,

    /// Regions that must report in every round (repeatable).
    #[arg(long = "region", value_name = "REGION", conflicts_with = "local")]
    pub regions: Vec<String>,

    /// Output: a line per round, or a JSON object per line (NDJSON).
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Compare every round with a baseline taken before the change (an id, or `latest`):
    /// rounds whose checks are worse fail, and the monitor's triggers act on them.
    #[arg(long, value_name = "BASELINE_ID|latest")]
    pub against: Option<String>,

    /// The migration the monitor belongs to (a label); its rounds carry it.
    #[arg(long, value_name = "M")]
    pub migration: Option<String>,
}

/// `postflight check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The plan file (YAML); `-` reads it from standard input.
    pub plan: PathBuf,
}

/// `postflight baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// The plan file (YAML); `-` reads it from standard input.
    pub plan: PathBuf,

    /// Execute the plan in this process, as the single region `local`, and keep the baseline
    /// in the CLI's state folder ($POSTFLIGHT_STATE_DIR/baselines).
    #[arg(long)]
    pub local: bool,

    /// Coordinator that runs the plan on its probes and keeps the baseline (the default
    /// without --local) [default: $POSTFLIGHT_COORDINATOR, then http://127.0.0.1:7700].
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    pub coordinator: Option<String>,

    /// Regions that must report (repeatable); overrides the plan's policy.regions.
    #[arg(long = "region", value_name = "REGION", conflicts_with = "local")]
    pub regions: Vec<String>,

    /// The migration this baseline is taken for (a label, e.g. a ticket).
    #[arg(long, value_name = "M")]
    pub migration: Option<String>,

    /// Report format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Bound on the whole run (e.g. 90s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub timeout: Option<Duration>,

    /// Checks in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

/// `postflight baselines`.
#[derive(Debug, Args)]
pub struct BaselinesArgs {
    /// The baselines kept by this CLI (`baseline --local`).
    #[arg(long)]
    pub local: bool,

    /// The coordinator whose baselines to list (the default without --local) [default:
    /// $POSTFLIGHT_COORDINATOR, then http://127.0.0.1:7700].
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    pub coordinator: Option<String>,

    /// Only baselines of this plan.
    #[arg(long, value_name = "NAME")]
    pub plan: Option<String>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `postflight feedback`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct FeedbackArgs {
    /// List instead of report.
    #[command(subcommand)]
    pub command: Option<FeedbackCommand>,

    /// The migration the feedback is about.
    #[arg(required = true)]
    pub migration: Option<String>,

    /// What you saw.
    #[arg(required = true)]
    pub text: Option<String>,

    /// What kind of report: a regression counts for the plan's `rollback.feedback_above`.
    #[arg(long, value_enum, default_value_t = FeedbackKindArg::Info)]
    pub kind: FeedbackKindArg,

    /// Who or what reports it (a person, a support queue).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,

    /// Coordinator and output.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `postflight feedback list`.
#[derive(Debug, Subcommand)]
pub enum FeedbackCommand {
    /// The feedback about a migration (or about every migration), newest first.
    List {
        /// The migration; every migration when left out.
        migration: Option<String>,

        /// Coordinator and output.
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// The kinds of feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeedbackKindArg {
    /// Something that worked before the migration does not any more.
    Regression,
    /// A defect, not necessarily caused by the migration.
    Bug,
    /// Anything else worth knowing.
    Info,
}

/// `postflight demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Report format of the two verdicts.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Only serve the demo agent backend (to try your own plans against it) instead of
    /// running the demo. Prints its URL, then serves until interrupted.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8000")]
    pub serve_target: Option<SocketAddr>,

    /// With --serve-target: how the demo backend behaves.
    #[arg(long, value_enum, default_value_t = crate::demo::target::Mode::Healthy, requires = "serve_target")]
    pub mode: crate::demo::target::Mode,

    /// With --serve-target: the backend's SQLite database (sessions, messages), created with
    /// the demo schema when missing and kept afterwards; default: a temporary file removed
    /// when the backend stops.
    #[arg(long, value_name = "FILE", requires = "serve_target")]
    pub database: Option<std::path::PathBuf>,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people; colour on a terminal only.
    Table,
    /// JSON for scripts: a run's report (docs/plan.md and README, "The report"); for
    /// `probes` and `runs` a list object; for `monitor` and `watch` of a monitor one line per
    /// round (see docs/cli.md).
    Json,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    match postflight_plan::duration::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be greater than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "postflight",
            "run",
            "p.yaml",
            "--local",
            "-o",
            "json",
            "--timeout",
            "90s",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!()
        };
        assert!(run.local);
        assert_eq!(run.output, Output::Json);
        assert_eq!(run.timeout, Some(Duration::from_secs(90)));
        let err =
            Cli::try_parse_from(["postflight", "run", "p.yaml", "--timeout", "90"]).unwrap_err();
        assert!(err.to_string().contains("has no unit"), "{err}");
        assert!(
            Cli::try_parse_from([
                "postflight",
                "run",
                "p.yaml",
                "--local",
                "--coordinator",
                "http://x"
            ])
            .is_err()
        );
    }
}
