//! Talking to a coordinator: submit and follow runs, list probes and runs, read reports.

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use postflight_ops::channel::{Bearer, Connector};
use postflight_ops::secret::Secret;
use postflight_ops::tls::ClientTls;
use postflight_plan::canonical::canonical_yaml;
use postflight_plan::rollback::ActionOutcome;
use postflight_plan::{Report, model::Plan};
use postflight_proto::v1::feedback_service_client::FeedbackServiceClient;
use postflight_proto::v1::run_event::Kind;
use postflight_proto::v1::validation_service_client::ValidationServiceClient;
use postflight_proto::v1::{self, RunEvent};
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::cli::{
    BaselineArgs, FeedbackArgs, FeedbackCommand, FeedbackKindArg, Output, RemoteArgs, RunArgs,
    RunIdArgs, RunsArgs,
};
use crate::render;

/// Usage errors (an unknown run id, a plan the coordinator rejects).
const EXIT_USAGE: u8 = 2;
/// The coordinator cannot be reached or the run cannot complete.
const EXIT_NO_RUN: u8 = 5;

/// `--coordinator`, else `$POSTFLIGHT_COORDINATOR`, else the default address.
pub fn coordinator_url(arg: Option<&str>) -> String {
    let url = arg
        .map(str::to_owned)
        .or_else(|| {
            std::env::var("POSTFLIGHT_COORDINATOR")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "http://127.0.0.1:7700".to_owned());
    if url.contains("://") {
        url
    } else {
        format!("http://{url}")
    }
}

/// A failure, already explained, with its exit code.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// A failure with its exit code.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The explanation.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prints the explanation and returns the exit code.
    pub fn exit(self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// The failure a gRPC status means for the operator.
pub fn from_status(url: &str, status: &Status) -> Failure {
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument => Failure::new(
            EXIT_USAGE,
            format!("the coordinator rejected the request: {message}"),
        ),
        Code::NotFound => Failure::new(EXIT_USAGE, message),
        _ if postflight_ops::channel::is_transport_failure(status) => Failure::new(
            EXIT_NO_RUN,
            format!(
                "cannot reach the coordinator at {url}: {}",
                connector(url).explain_status(status)
            ),
        ),
        Code::Unauthenticated => Failure::new(
            EXIT_NO_RUN,
            format!("the coordinator at {url} refused the credentials: {message}"),
        ),
        _ => Failure::new(
            EXIT_NO_RUN,
            format!(
                "the coordinator at {url} answered {}: {message}",
                status.code()
            ),
        ),
    }
}

/// How this process presents itself to coordinators (`--token`, `--tls-*`), set once by
/// `main` from the global flags; every command that connects uses it.
static CREDENTIALS: OnceLock<(ClientTls, Option<Secret>)> = OnceLock::new();

/// Records the global connection flags.
pub fn set_credentials(tls: ClientTls, token: Option<Secret>) {
    let _ = CREDENTIALS.set((tls, token));
}

fn connector(url: &str) -> Connector {
    let (tls, token) = CREDENTIALS.get().cloned().unwrap_or_default();
    Connector {
        url: url.to_owned(),
        tls,
        token,
    }
}

/// The client every command uses: a channel plus the token interceptor.
pub type Client = ValidationServiceClient<InterceptedService<Channel, Bearer>>;

/// A connected client, or a failure that explains why not (exit code 5).
pub async fn client(url: &str) -> Result<Client, Failure> {
    let (channel, bearer) = connect(url).await?;
    Ok(ValidationServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024))
}

/// `postflight run PLAN --coordinator URL`: submit, follow, print, exit with the verdict.
pub async fn run(args: &RunArgs, plan: &Plan) -> Result<ExitCode, Failure> {
    let url = coordinator_url(args.coordinator.as_deref());
    let options = v1::RunOptions {
        dry_run: args.dry_run,
        regions: args.regions.clone(),
        timeout_ms: args.timeout.map_or(0, |t| t.as_millis() as u64),
        against: args.against.clone().unwrap_or_default(),
        migration: args.migration.clone().unwrap_or_default(),
        stage: args.stage.clone().unwrap_or_default(),
        force: args.force,
        ..Default::default()
    };
    let report = submit_and_follow(&url, plan, &args.plan.display().to_string(), options).await?;
    Ok(print_report(&report, args.output))
}

/// `postflight baseline PLAN --coordinator URL`: a run that keeps what it measured as a
/// baseline on the coordinator when it passes. The report, and the baseline stored or why
/// none was.
pub async fn take_baseline(
    args: &BaselineArgs,
    plan: &Plan,
) -> Result<(Report, Result<v1::BaselineSummary, String>), Failure> {
    let url = coordinator_url(args.coordinator.as_deref());
    let options = v1::RunOptions {
        dry_run: true,
        regions: args.regions.clone(),
        timeout_ms: args.timeout.map_or(0, |t| t.as_millis() as u64),
        take_baseline: true,
        migration: args.migration.clone().unwrap_or_default(),
        ..Default::default()
    };
    let report = submit_and_follow(&url, plan, &args.plan.display().to_string(), options).await?;
    let mut client = client(&url).await?;
    let run = client
        .get_run(v1::GetRunRequest {
            run_id: report.run_id.clone(),
        })
        .await
        .map_err(|s| from_status(&url, &s))?
        .into_inner();
    let stored = if run.baseline_id.is_empty() {
        Err(if run.baseline_refused.is_empty() {
            "the coordinator stored no baseline".to_owned()
        } else {
            run.baseline_refused
        })
    } else {
        let listed = client
            .list_baselines(v1::ListBaselinesRequest {
                plan: plan.name.clone(),
                limit: 50,
            })
            .await
            .map_err(|s| from_status(&url, &s))?
            .into_inner()
            .baselines;
        listed
            .into_iter()
            .find(|b| b.baseline_id == run.baseline_id)
            .ok_or_else(|| format!("baseline {} is not listed", run.baseline_id))
    };
    Ok((report, stored))
}

/// A coordinator's baselines, newest first.
pub async fn baselines(
    coordinator: Option<&str>,
    plan: Option<&str>,
) -> Result<Vec<v1::BaselineSummary>, Failure> {
    let url = coordinator_url(coordinator);
    let mut client = client(&url).await?;
    Ok(client
        .list_baselines(v1::ListBaselinesRequest {
            plan: plan.unwrap_or_default().to_owned(),
            limit: 0,
        })
        .await
        .map_err(|s| from_status(&url, &s))?
        .into_inner()
        .baselines)
}

/// Submits a plan, prints progress on stderr while the probes work, returns the report.
pub async fn submit_and_follow(
    url: &str,
    plan: &Plan,
    origin: &str,
    options: v1::RunOptions,
) -> Result<Report, Failure> {
    let mut client = client(url).await?;
    let request = v1::SubmitRunRequest {
        plan_yaml: canonical_yaml(plan),
        origin: origin.to_owned(),
        options: Some(options),
    };
    let run = client
        .submit_run(request)
        .await
        .map_err(|s| from_status(url, &s))?
        .into_inner();
    eprintln!(
        "run {} of plan {} submitted to {url} (regions: {})",
        run.run_id,
        run.plan,
        run.regions.join(", ")
    );
    let report = follow(url, &mut client, &run.run_id).await?;
    Ok(await_action(url, &mut client, report).await)
}

/// How long the CLI waits for a rollback action that is still running when the report
/// arrives: the action's own time limit, and a little more.
const ACTION_WAIT: Duration =
    Duration::from_secs(postflight_rollback::ACTION_TIMEOUT.as_secs() + 30);

/// A report whose rollback action is still running (`pending`) is fetched again until the
/// coordinator has stored the outcome, so the printed report says what the action did. The
/// verdict (and the exit code) does not depend on it; after [`ACTION_WAIT`] the report is
/// printed as it stands.
async fn await_action(url: &str, client: &mut Client, mut report: Report) -> Report {
    if report.rollback.outcome != Some(ActionOutcome::Pending) {
        return report;
    }
    eprintln!(
        "  rollback action running: {}",
        report
            .rollback
            .action
            .as_deref()
            .unwrap_or("the plan's action")
    );
    let deadline = tokio::time::Instant::now() + ACTION_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let fetched = client
            .get_report(v1::GetReportRequest {
                run_id: report.run_id.clone(),
            })
            .await;
        match fetched.map(|r| Report::try_from(r.into_inner())) {
            Ok(Ok(fresh)) if fresh.rollback.outcome != Some(ActionOutcome::Pending) => {
                return fresh;
            }
            Ok(_) => {}
            Err(_) => {
                if let Ok(fresh) = self::client(url).await {
                    *client = fresh;
                }
            }
        }
    }
    eprintln!(
        "  the rollback action is still running; `postflight report {}` shows its outcome later",
        report.run_id
    );
    report.rollback.detail = Some("still running when this command stopped waiting".to_owned());
    report
}

/// Follows a run until its report, printing progress on stderr; survives a coordinator
/// restart by watching again.
async fn follow(url: &str, client: &mut Client, run_id: &str) -> Result<Report, Failure> {
    let mut attempts = 0;
    let mut seen = std::collections::HashSet::new();
    loop {
        let failure = match watch_once(client, run_id, &mut seen).await {
            Ok(Some(report)) => return Ok(report),
            Err(status)
                if matches!(
                    status.code(),
                    Code::NotFound | Code::InvalidArgument | Code::Unauthenticated
                ) =>
            {
                return Err(from_status(url, &status));
            }
            Ok(None) => Failure::new(
                EXIT_NO_RUN,
                format!(
                    "the run did not end while watched; follow it with `postflight watch {run_id}`"
                ),
            ),
            Err(status) => from_status(url, &status),
        };
        // The coordinator may be restarting: the run goes on there, so watch again.
        if attempts >= 30 {
            return Err(failure);
        }
        attempts += 1;
        if attempts == 1 {
            eprintln!("lost the coordinator's stream; retrying (the run goes on there)");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(fresh) = self::client(url).await {
            *client = fresh;
        }
    }
}

/// One watch stream: `Some(report)` when it ended with the report.
async fn watch_once(
    client: &mut Client,
    run_id: &str,
    seen: &mut std::collections::HashSet<(String, String, u32)>,
) -> Result<Option<Report>, Status> {
    let mut stream = client
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.to_owned(),
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        if let Some(report) = progress(&event, seen) {
            return Ok(Some(report));
        }
    }
    Ok(None)
}

/// Prints one event as a progress line; returns the report when the event carries it.
fn progress(
    event: &RunEvent,
    seen: &mut std::collections::HashSet<(String, String, u32)>,
) -> Option<Report> {
    match &event.kind {
        Some(Kind::Status(s)) if !s.detail.is_empty() => eprintln!("  {}: {}", s.status, s.detail),
        Some(Kind::Status(_)) => {}
        // A re-watch replays what was seen already.
        Some(Kind::Result(r))
            if seen.insert((r.region.clone(), r.probe.clone(), r.check_index)) =>
        {
            eprintln!(
                "  [{}] {} {} ({}) — {}",
                r.region,
                r.status.to_uppercase(),
                r.check_name,
                render::ms(r.duration_ms),
                r.probe
            );
        }
        Some(Kind::Result(_)) => {}
        Some(Kind::Report(report)) => {
            return match Report::try_from(report.clone()) {
                Ok(report) => Some(report),
                Err(e) => {
                    eprintln!("error: the coordinator sent an unreadable report: {e}");
                    None
                }
            };
        }
        None => {}
    }
    None
}

fn print_report(report: &Report, output: Output) -> ExitCode {
    print!("{}", render::report(report, output, render::stdout_color()));
    ExitCode::from(report.status.exit_code())
}

/// `postflight watch ID`: a run until its report, or a monitor until it ends.
pub async fn watch(args: &RunIdArgs) -> Result<ExitCode, Failure> {
    let url = coordinator_url(args.remote.coordinator.as_deref());
    let mut client = client(&url).await?;
    let is_monitor = client
        .get_monitor(v1::GetMonitorRequest {
            monitor_id: args.run_id.clone(),
        })
        .await
        .is_ok();
    if is_monitor {
        return crate::monitor::follow(&url, &args.run_id, args.remote.output).await;
    }
    let report = follow(&url, &mut client, &args.run_id).await?;
    let report = await_action(&url, &mut client, report).await;
    Ok(print_report(&report, args.remote.output))
}

/// `postflight report RUN_ID`.
pub async fn report(args: &RunIdArgs) -> Result<ExitCode, Failure> {
    let url = coordinator_url(args.remote.coordinator.as_deref());
    let mut client = client(&url).await?;
    let wire = client
        .get_report(v1::GetReportRequest {
            run_id: args.run_id.clone(),
        })
        .await
        .map_err(|s| from_status(&url, &s))?
        .into_inner();
    let report = Report::try_from(wire).map_err(|e| {
        Failure::new(
            EXIT_NO_RUN,
            format!("the coordinator sent an unreadable report: {e}"),
        )
    })?;
    Ok(print_report(&report, args.remote.output))
}

/// `postflight probes`.
pub async fn probes(args: &RemoteArgs) -> Result<ExitCode, Failure> {
    let url = coordinator_url(args.coordinator.as_deref());
    let mut client = client(&url).await?;
    let mut probes = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_probes(v1::ListProbesRequest {
                limit: 1000,
                page_token,
            })
            .await
            .map_err(|s| from_status(&url, &s))?
            .into_inner();
        probes.extend(page.probes);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    match args.output {
        Output::Json => {
            let list: Vec<_> = probes
                .iter()
                .map(|p| {
                    let labels: std::collections::BTreeMap<_, _> = p.labels.iter().collect();
                    json!({"name": p.name, "region": p.region, "labels": labels,
                           "connected": p.connected, "last_seen": p.last_seen, "version": p.version})
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "probes": list })).unwrap_or_default()
            );
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = probes
                .iter()
                .map(|p| {
                    let mut labels: Vec<String> =
                        p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    labels.sort();
                    vec![
                        p.name.clone(),
                        p.region.clone(),
                        if p.connected {
                            "connected"
                        } else {
                            "disconnected"
                        }
                        .to_owned(),
                        p.last_seen.clone(),
                        p.version.clone(),
                        labels.join(" "),
                    ]
                })
                .collect();
            print!(
                "{}",
                render::simple_table(
                    &["NAME", "REGION", "STATE", "LAST SEEN", "VERSION", "LABELS"],
                    rows
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `postflight runs`.
pub async fn runs(args: &RunsArgs) -> Result<ExitCode, Failure> {
    let url = coordinator_url(args.remote.coordinator.as_deref());
    let mut client = client(&url).await?;
    let runs = client
        .list_runs(v1::ListRunsRequest {
            limit: args.limit,
            plan: args.plan.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| from_status(&url, &s))?
        .into_inner()
        .runs;
    match args.remote.output {
        Output::Json => {
            let list: Vec<_> = runs
                .iter()
                .map(|r| {
                    let rollback = r.rollback.clone().and_then(|rb| {
                        postflight_plan::rollback::RollbackReport::try_from(rb).ok()
                    });
                    json!({"run_id": r.run_id, "plan": r.plan, "status": r.status,
                           "verdict": (!r.verdict.is_empty()).then_some(&r.verdict),
                           "started_at": (!r.started_at.is_empty()).then_some(&r.started_at),
                           "finished_at": (!r.finished_at.is_empty()).then_some(&r.finished_at),
                           "regions": r.regions, "rollback": rollback,
                           "migration": (!r.migration.is_empty()).then_some(&r.migration),
                           "stage": (!r.stage.is_empty()).then_some(&r.stage)})
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "runs": list })).unwrap_or_default()
            );
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    let rollback = match &r.rollback {
                        Some(rb) if rb.triggered || rb.outcome.is_some() => {
                            rb.outcome.clone().unwrap_or_else(|| "triggered".to_owned())
                        }
                        Some(rb) if rb.recommended => "recommended".to_owned(),
                        Some(_) => "no".to_owned(),
                        None => "—".to_owned(),
                    };
                    vec![
                        r.run_id.clone(),
                        r.plan.clone(),
                        r.status.clone(),
                        if r.verdict.is_empty() {
                            "—".to_owned()
                        } else {
                            r.verdict.clone()
                        },
                        r.started_at.clone(),
                        r.regions.join(","),
                        match (r.migration.as_str(), r.stage.as_str()) {
                            ("", _) => "—".to_owned(),
                            (m, "") => m.to_owned(),
                            (m, s) => format!("{m}@{s}"),
                        },
                        rollback,
                    ]
                })
                .collect();
            print!(
                "{}",
                render::simple_table(
                    &[
                        "RUN",
                        "PLAN",
                        "STATUS",
                        "VERDICT",
                        "STARTED",
                        "REGIONS",
                        "MIGRATION",
                        "ROLLBACK"
                    ],
                    rows
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `postflight feedback M TEXT` and `postflight feedback list [M]`.
pub async fn feedback(args: &FeedbackArgs) -> Result<ExitCode, Failure> {
    let (remote, listing) = match &args.command {
        Some(FeedbackCommand::List { migration, remote }) => (remote, Some(migration.clone())),
        None => (&args.remote, None),
    };
    let url = coordinator_url(remote.coordinator.as_deref());
    let mut client = feedback_client(&url).await?;
    let as_json = |f: &v1::Feedback| {
        json!({"feedback_id": f.feedback_id, "migration": f.migration, "kind": f.kind,
               "text": f.text, "source": f.source, "created_at": f.created_at})
    };
    if let Some(migration) = listing {
        let found = client
            .list_feedback(v1::ListFeedbackRequest {
                migration: migration.unwrap_or_default(),
                limit: 0,
            })
            .await
            .map_err(|s| from_status(&url, &s))?
            .into_inner()
            .feedback;
        match remote.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"feedback": found.iter().map(as_json).collect::<Vec<_>>()})
                )
                .unwrap_or_default()
            ),
            Output::Table if found.is_empty() => println!("no feedback yet"),
            Output::Table => {
                let rows = found
                    .iter()
                    .map(|f| {
                        vec![
                            f.created_at.clone(),
                            f.migration.clone(),
                            f.kind.clone(),
                            if f.source.is_empty() {
                                "—".to_owned()
                            } else {
                                f.source.clone()
                            },
                            f.text.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render::simple_table(
                        &["WHEN", "MIGRATION", "KIND", "SOURCE", "FEEDBACK"],
                        rows
                    )
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let kind = match args.kind {
        FeedbackKindArg::Regression => "regression",
        FeedbackKindArg::Bug => "bug",
        FeedbackKindArg::Info => "info",
    };
    let stored = client
        .submit_feedback(v1::SubmitFeedbackRequest {
            migration: args.migration.clone().unwrap_or_default(),
            text: args.text.clone().unwrap_or_default(),
            kind: kind.to_owned(),
            source: args.source.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| from_status(&url, &s))?
        .into_inner();
    match remote.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&as_json(&stored)).unwrap_or_default()
        ),
        Output::Table => println!(
            "feedback {} about migration {} recorded ({})",
            stored.feedback_id, stored.migration, stored.kind
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// A feedback client over the same connection settings as [`client`].
pub async fn feedback_client(
    url: &str,
) -> Result<FeedbackServiceClient<InterceptedService<Channel, Bearer>>, Failure> {
    let (channel, bearer) = connect(url).await?;
    Ok(FeedbackServiceClient::with_interceptor(channel, bearer))
}

/// A channel to the coordinator with this process's TLS settings and its token.
async fn connect(url: &str) -> Result<(Channel, Bearer), Failure> {
    let connector = connector(url);
    let usage = |e: postflight_ops::OpsError| Failure::new(EXIT_USAGE, e.to_string());
    let endpoint = connector.endpoint().map_err(usage)?;
    let bearer = connector.bearer().map_err(usage)?;
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::new(
            EXIT_NO_RUN,
            format!(
                "cannot reach the coordinator at {url}: {}",
                connector.explain(&e)
            ),
        )
    })?;
    Ok((channel, bearer))
}
