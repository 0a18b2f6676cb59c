//! `postflight-coordinator`: serves the probes and the operators.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use postflight_coordinator::seal::Sealer;
use postflight_coordinator::storage::AnyStore;
use postflight_coordinator::{Config, Coordinator, grpc};

/// Dispatches validation plans to regional probes, merges their results into one verdict and
/// keeps the history.
///
/// Probes connect with `postflight-probe --coordinator URL --region R`; operators use
/// `postflight run PLAN --coordinator URL`, or grpcurl (server reflection is on).
#[derive(Debug, Parser)]
#[command(name = "postflight-coordinator", version, max_term_width = 100)]
struct Args {
    /// Address of the gRPC server (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7700", value_name = "ADDR")]
    listen: SocketAddr,

    /// History database: sqlite://FILE (created on first start) or postgres://…
    #[arg(
        long,
        default_value = "sqlite://postflight.db",
        value_name = "URL",
        env = "POSTFLIGHT_DATABASE"
    )]
    database: String,

    /// Probes must present this token (`authorization: Bearer …`); without it any probe may
    /// connect.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "POSTFLIGHT_PROBE_TOKEN",
        hide_env_values = true
    )]
    probe_token: Option<String>,

    /// File with the key that seals stored plans (created on first start). Coordinators that
    /// share a PostgreSQL must share this file. [default: next to the SQLite file, else
    /// ./postflight-data.key]
    #[arg(long, value_name = "FILE")]
    data_key_file: Option<PathBuf>,

    /// Timeout of runs that do not set their own.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = duration)]
    run_timeout: Duration,

    /// How long a disconnected probe keeps its assignments before they move to another probe
    /// of its region.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = duration)]
    reassign_after: Duration,

    /// This coordinator's name in the rollback audit [default: coordinator HOSTNAME:PORT].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Log verbosity: -v info (default), -vv debug; or POSTFLIGHT_LOG.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn duration(text: &str) -> Result<Duration, String> {
    postflight_plan::duration::parse_duration(text).map_err(|e| e.to_string())
}

fn default_key_file(database: &str) -> PathBuf {
    let sqlite_path = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p));
    match sqlite_path {
        Some(path) if !path.is_empty() && !path.starts_with(':') => {
            PathBuf::from(format!("{path}.key"))
        }
        _ => PathBuf::from("postflight-data.key"),
    }
}

/// mimalloc: the ingest path allocates and frees many small strings per result across
/// threads, where glibc's allocator spent a third of the coordinator's time (bench/run).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = match args.verbose {
        0 | 1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTFLIGHT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let shown_db = postflight_plan::secrets::redact_url(&args.database);
    let store = AnyStore::open(&args.database)
        .await
        .with_context(|| format!("cannot open the database {shown_db}"))?;
    let key_file = args
        .data_key_file
        .clone()
        .unwrap_or_else(|| default_key_file(&args.database));
    let sealer = Sealer::load_or_create(&key_file)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let config = Config {
        default_timeout: args.run_timeout,
        reassign_after: args.reassign_after,
        identity: args.name.clone().unwrap_or_else(|| {
            format!(
                "coordinator {}:{}",
                postflight_checks::hostname(),
                addr.port()
            )
        }),
        ..Config::default()
    };
    let coordinator = Coordinator::start(store, sealer, config)
        .await
        .context("cannot resume the stored runs")?;
    // The one line on stdout: scripts (and tests) read the address from it.
    println!("postflight-coordinator listening on {addr}");
    tracing::info!(%addr, database = %shown_db, probe_token = args.probe_token.is_some(), "coordinator started");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    grpc::serve(coordinator, listener, args.probe_token, shutdown).await
}
