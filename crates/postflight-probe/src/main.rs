//! `postflight-probe`: runs validation plans from its region for a coordinator.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;

use clap::Parser;
use postflight_plan::vars::ProcessEnv;
use postflight_probe::{ProbeConfig, run};

/// Executes the coordinator's validation plans from this region and streams the results back.
///
/// Runs as a sidecar or a small service per region. `${probe:VAR}` in plans is expanded from
/// this process's environment, so per-region targets and secrets stay on this host. The probe
/// reconnects by itself and replays results the coordinator has not acknowledged.
#[derive(Debug, Parser)]
#[command(name = "postflight-probe", version, max_term_width = 100)]
struct Args {
    /// The coordinator's gRPC address, e.g. http://coordinator:7700.
    #[arg(long, value_name = "URL", env = "POSTFLIGHT_COORDINATOR")]
    coordinator: String,

    /// The region this probe validates from (e.g. us-east).
    #[arg(long, value_name = "REGION", env = "POSTFLIGHT_REGION")]
    region: String,

    /// Unique probe name, stable across restarts [default: HOSTNAME-REGION].
    #[arg(long, value_name = "NAME", env = "POSTFLIGHT_PROBE_NAME")]
    name: Option<String>,

    /// A label shown by `postflight probes` (repeatable), e.g. --label zone=eu-west-1a.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    labels: Vec<(String, String)>,

    /// Token the coordinator requires from probes.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "POSTFLIGHT_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Unacknowledged results kept while the coordinator is unreachable.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    buffer: usize,

    /// Log verbosity: -v info (default), -vv debug; or POSTFLIGHT_LOG.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = match args.verbose {
        0 | 1 => "info,rustls_platform_verifier=off",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTFLIGHT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", postflight_checks::hostname(), args.region));
    let mut config = ProbeConfig::new(&args.coordinator, &name, &args.region, Arc::new(ProcessEnv));
    config.labels = args.labels.into_iter().collect::<BTreeMap<_, _>>();
    config.token = args.token;
    config.buffer_limit = args.buffer;
    tracing::info!(probe = %name, region = %args.region, coordinator = %args.coordinator, "probe starting");
    run(config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
