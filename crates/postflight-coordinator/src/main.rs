//! `postflight-coordinator`: serves the probes and the operators.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use postflight_coordinator::auth::ProbeTokens;
use postflight_coordinator::seal::Sealer;
use postflight_coordinator::storage::AnyStore;
use postflight_coordinator::{Config, Coordinator, grpc, http};
use postflight_ops::logging::{self, LogFormat};
use postflight_ops::secret;
use postflight_ops::shutdown::{GRACE, Shutdown};
use postflight_ops::tls::ServerTls;

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

    /// Read the probe token from this file (e.g. a mounted Kubernetes Secret).
    #[arg(long, value_name = "FILE")]
    probe_token_file: Option<PathBuf>,

    /// Per-probe tokens: one probe per line, `TOKEN NAME REGION` (`#` comments). A probe
    /// presenting one may only connect under that name in that region, and then only the
    /// regions of probes with their own credential count where a plan names no regions.
    #[arg(long, value_name = "FILE", env = "POSTFLIGHT_PROBE_TOKENS_FILE")]
    probe_tokens: Option<PathBuf>,

    /// Every ValidationService call (CLI, grpcurl) must present this token; health and
    /// reflection stay open.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "POSTFLIGHT_OPERATOR_TOKEN",
        hide_env_values = true
    )]
    operator_token: Option<String>,

    /// Read the operator token from this file.
    #[arg(long, value_name = "FILE")]
    operator_token_file: Option<PathBuf>,

    /// Serve gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS for probes and
    /// operators.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,

    /// File with the key that seals stored plans (created on first start). Coordinators that
    /// share a PostgreSQL must share this file. [default: next to the SQLite file, else
    /// ./postflight-data.key]
    #[arg(long, value_name = "FILE")]
    data_key_file: Option<PathBuf>,

    /// Also serve HTTP here: Prometheus /metrics, /healthz, /readyz and the status page at /
    /// (e.g. 127.0.0.1:7701; plain HTTP, for a cluster-internal port).
    #[arg(long, value_name = "ADDR", env = "POSTFLIGHT_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,

    /// Timeout of runs that do not set their own.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = duration)]
    run_timeout: Duration,

    /// How long a disconnected probe keeps its assignments before they move to another probe
    /// of its region.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = duration)]
    reassign_after: Duration,

    /// Coordinators sharing a PostgreSQL: how long this coordinator's claim on a run lasts
    /// without renewal (renewed every third of it). Another coordinator adopts the run only
    /// after it, so this is how long a dead coordinator's runs wait for an adopter.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = lease)]
    run_lease: Duration,

    /// How long a probe that no longer connects stays in the probe list (`postflight probes`,
    /// the status page). At most 10,000 probes are kept; the least recently seen go first.
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = duration)]
    forget_probes_after: Duration,

    /// This coordinator's name in the rollback audit, and the owner of its runs in the
    /// database: unique among coordinators sharing one [default: coordinator HOSTNAME:PORT].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Let plans run `command` rollback actions on this machine. Off by default: a command
    /// runs any program with the coordinator's rights, so whoever may submit plans could.
    #[arg(long, env = "POSTFLIGHT_ALLOW_COMMAND_ACTIONS")]
    allow_command_actions: bool,

    /// Listen beyond loopback without authentication (no probe or operator token, no mutual
    /// TLS). Only for a network where everyone who can connect may submit plans and act as a
    /// probe.
    #[arg(long)]
    insecure: bool,

    /// Log verbosity: -v info (default), -vv debug; or POSTFLIGHT_LOG.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log lines as text or as JSON objects (one per line, with run_id, probe, check fields).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
}

fn duration(text: &str) -> Result<Duration, String> {
    postflight_plan::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// A run lease: at least a second, so renewing every third of it stays a pause, not a loop.
fn lease(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d < Duration::from_secs(1) => Err("a run lease is at least 1s".to_owned()),
        d => Ok(d),
    }
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
    logging::init(args.log_format, level);
    let probe_tokens = match &args.probe_tokens {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --probe-tokens {}", path.display()))?;
            let tokens = ProbeTokens::parse(&text, &path.display().to_string())
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                !tokens.is_empty(),
                "--probe-tokens {} names no probe",
                path.display()
            );
            tokens
        }
        None => ProbeTokens::default(),
    };
    let mutual_tls = args.tls_client_ca.is_some();
    let identities_bound = mutual_tls || !probe_tokens.is_empty();
    let access = grpc::Access {
        probe_tokens,
        mutual_tls,
        probe_token: secret::resolve(
            args.probe_token.as_deref(),
            args.probe_token_file.as_deref(),
            "--probe-token",
            "--probe-token-file",
        )?,
        operator_token: secret::resolve(
            args.operator_token.as_deref(),
            args.operator_token_file.as_deref(),
            "--operator-token",
            "--operator-token-file",
        )?,
        tls: ServerTls {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
            client_ca: args.tls_client_ca.clone(),
        }
        .config()?,
    };
    if let Some(refusal) = postflight_coordinator::auth::exposure_refusal(
        args.listen,
        args.http_listen,
        identities_bound || access.probe_token.is_some(),
        mutual_tls || access.operator_token.is_some(),
        access.operator_token.is_some(),
        args.insecure,
    ) {
        anyhow::bail!(refusal);
    }
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
        forget_probes_after: args.forget_probes_after,
        run_lease: args.run_lease,
        allow_command_actions: args.allow_command_actions,
        authenticated_regions_only: identities_bound,
        identity: args.name.clone().unwrap_or_else(|| {
            format!(
                "coordinator {}:{}",
                postflight_ops::host::hostname(),
                addr.port()
            )
        }),
        ..Config::default()
    };
    let coordinator = Coordinator::start(store, sealer, config)
        .await
        .context("cannot resume the stored runs")?;
    let http = match args.http_listen {
        Some(http_addr) => {
            let listener = tokio::net::TcpListener::bind(http_addr)
                .await
                .with_context(|| format!("cannot listen on {http_addr} (--http-listen)"))?;
            Some(listener)
        }
        None => None,
    };
    // The one line on stdout: scripts (and tests) read the address from it. Whoever reads it
    // may close the pipe afterwards, so nothing else is printed there and a write error is
    // not fatal.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "postflight-coordinator listening on {addr}");
        let _ = out.flush();
    }
    let shutdown = Shutdown::on_signals().context("cannot listen for SIGTERM and SIGINT")?;
    if let Some(listener) = http {
        let http_addr = listener.local_addr()?;
        tracing::info!(%http_addr, "metrics, health and status page served over HTTP");
        let served = coordinator.clone();
        let stop = shutdown.clone().requested();
        let token = access.operator_token.clone();
        tokio::spawn(async move {
            if let Err(e) = http::serve(served, listener, token, stop).await {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        });
    }
    tracing::info!(
        %addr,
        database = %shown_db,
        tls = access.tls.is_some(),
        mutual_tls = args.tls_client_ca.is_some(),
        probe_token = access.probe_token.is_some(),
        operator_token = access.operator_token.is_some(),
        "coordinator started"
    );
    // On SIGTERM or SIGINT: no new connections, probe streams closed once what they were
    // writing is stored, then a bounded wait for the rest; all within the grace period.
    let stopping = coordinator.clone();
    let stop = shutdown.clone();
    let drained = async move {
        stop.requested().await;
        stopping.shut_down(GRACE / 2).await;
    };
    let settling = coordinator.clone();
    let serving = grpc::serve(coordinator, listener, access, drained);
    let served = tokio::select! {
        served = serving => served,
        () = async {
            shutdown.clone().requested().await;
            tokio::time::sleep(GRACE * 2 / 3).await;
        } => {
            tracing::warn!("client streams still open after {:?}; closing them", GRACE * 2 / 3);
            Ok(())
        }
    };
    // A rollback action that is running gets what is left of the grace period to record its
    // outcome; one still running at exit is recorded interrupted when the coordinator starts
    // again (never run twice).
    if tokio::time::timeout(GRACE / 4, settling.settle_actions())
        .await
        .is_err()
    {
        tracing::error!(
            "a rollback action is still running at exit; it will be recorded interrupted"
        );
    }
    tracing::info!("stopped");
    served
}
