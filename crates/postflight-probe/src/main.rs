//! `postflight-probe`: runs validation plans from its region for a coordinator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use postflight_ops::channel::Connector;
use postflight_ops::logging::{self, LogFormat};
use postflight_ops::secret;
use postflight_ops::tls::ClientTls;
use postflight_plan::vars::AllowedEnv;
use postflight_probe::{ProbeConfig, run};

/// Executes the coordinator's validation plans from this region and streams the results back.
///
/// Runs as a sidecar or a small service per region. `${probe:VAR}` in plans is expanded from
/// this process's environment, so per-region targets and secrets stay on this host. The probe
/// reconnects by itself and replays results the coordinator has not acknowledged.
#[derive(Debug, Parser)]
#[command(name = "postflight-probe", version, max_term_width = 100)]
struct Args {
    /// The coordinator's gRPC address, e.g. http://coordinator:7700. Repeat it (or separate
    /// URLs with commas) for several coordinators sharing one database: the probe stays with
    /// one while it answers, moves to the next when it does not, and replays there what was
    /// not acknowledged. One DNS name with several addresses works too: each connection
    /// tries them in turn.
    #[arg(
        long,
        value_name = "URL",
        env = "POSTFLIGHT_COORDINATOR",
        value_delimiter = ',',
        required = true
    )]
    coordinator: Vec<String>,

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

    /// Read the token from this file (e.g. a mounted Kubernetes Secret).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// CA (PEM) that signed the coordinator's certificate, for an https:// coordinator with a
    /// private CA [default: the system's trusted roots].
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for a coordinator that requires mutual TLS; needs --tls-key.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Serve Prometheus /metrics and /healthz over HTTP here (e.g. 127.0.0.1:7702); off by
    /// default, since a sidecar usually needs neither.
    #[arg(long, value_name = "ADDR", env = "POSTFLIGHT_PROBE_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,

    /// Environment variables plans may read as `${probe:VAR}` (glob patterns, `*` for any
    /// characters; repeatable or comma-separated). Others are refused with the reason: a plan
    /// comes from whoever may submit one. The values of secret-looking variables (TOKEN,
    /// SECRET, PASSWORD, …KEY) are masked in everything the probe sends; the probe's own
    /// token is never exposed.
    #[arg(
        long,
        value_name = "GLOB",
        value_delimiter = ',',
        default_values_t = ["*_URL".to_owned(), "POSTFLIGHT_*".to_owned()],
        env = "POSTFLIGHT_ENV_ALLOW"
    )]
    env_allow: Vec<String>,

    /// Unacknowledged results kept while the coordinator is unreachable.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    buffer: usize,

    /// Log verbosity: -v info (default), -vv debug; or POSTFLIGHT_LOG.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log lines as text or as JSON objects (one per line, with run_id, probe, check fields).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
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
    logging::init(args.log_format, level);
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", postflight_ops::host::hostname(), args.region));
    // The probe's own credential and settings never go into a plan.
    let own = [
        "POSTFLIGHT_TOKEN",
        "POSTFLIGHT_COORDINATOR",
        "POSTFLIGHT_ENV_ALLOW",
    ];
    let vars = AllowedEnv::new(args.env_allow.clone(), &own);
    let mut config = ProbeConfig::new("", &name, &args.region, Arc::new(vars));
    config.coordinators = args
        .coordinator
        .iter()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect();
    if config.coordinators.is_empty() {
        anyhow::bail!("--coordinator: no URL given");
    }
    config.labels = args.labels.into_iter().collect::<BTreeMap<_, _>>();
    config.token = secret::resolve(
        args.token.as_deref(),
        args.token_file.as_deref(),
        "--token",
        "--token-file",
    )?;
    config.tls = ClientTls {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    };
    // Wrong TLS files or flags are the operator's to fix: say so now instead of retrying.
    for url in &config.coordinators {
        config.tls.config(
            &Connector {
                url: url.clone(),
                ..Connector::default()
            }
            .uri(),
        )?;
    }
    config.buffer_limit = args.buffer;
    if let Some(addr) = args.http_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http-listen): {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics and health served");
        let metrics = config.metrics.clone();
        let router = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics.encode(),
                        )
                    }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok\n" }));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        });
    }
    tracing::info!(probe = %name, region = %args.region, coordinators = ?config.coordinators, "probe starting");
    let shutdown = postflight_ops::shutdown::Shutdown::on_signals()
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGTERM and SIGINT: {e}"))?;
    run(config, shutdown.requested()).await
}
