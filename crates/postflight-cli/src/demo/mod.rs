//! `postflight demo`: the whole system on one machine, with nothing to install. A
//! coordinator (SQLite in a temporary folder), probes in three regions and a demo agent
//! backend per region run in this process and talk real gRPC and HTTP over loopback. The plan
//! is validated before a simulated migration (and kept as a baseline), and after it, compared
//! with the baseline; the regression shows in some regions only, one of them only through the
//! comparison. The demo streams progress, prints the per-region table, the comparison, the
//! merged verdict and the rollback decision (dry run).

pub mod target;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postflight_coordinator::seal::Sealer;
use postflight_coordinator::storage::{AnyStore, SqliteStore};
use postflight_coordinator::{Config, Coordinator, grpc};
use postflight_plan::vars::Expander;
use postflight_plan::{Overall, Report, model::Plan, parse_plan};
use postflight_probe::ProbeConfig;
use postflight_proto::v1;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::cli::{DemoArgs, Output};
use crate::{remote, render};
use target::{Behavior, DemoTarget};

const PLAN: &str = include_str!("plan.yaml");

/// The label of the demo's migration (on its runs and its baseline).
const MIGRATION_LABEL: &str = "demo-migration";

/// The regions of the demo, each with its probe and its backend.
const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// The demo backend's database before the migration; written so that serving again on an
/// existing file (`--database`) keeps its data.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL,
                                     body TEXT, session_token TEXT);
CREATE INDEX IF NOT EXISTS messages_conversation_id_idx ON messages (conversation_id);
CREATE TABLE IF NOT EXISTS tool_calls (id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL, tool TEXT);
CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY, user_name TEXT NOT NULL, token TEXT UNIQUE);
INSERT OR IGNORE INTO sessions (id, user_name) VALUES (1, 'ada'), (2, 'grace'), (3, 'linus');
";

/// What the simulated migration does to the database.
const MIGRATION: &str = "DROP INDEX messages_conversation_id_idx;";

/// Every backend's answers take this long before the migration, as a real agent's would.
const BEFORE_DELAY_MS: u64 = 20;

/// What the simulated migration does to each region's backend: tool look-ups break in two
/// regions, answers slow down a lot in one and by half in another (still far under the
/// plan's fixed 250 ms threshold: only the comparison with the baseline catches it).
fn after_migration(region: &str) -> Behavior {
    match region {
        "us-east" => Behavior {
            delay_ms: BEFORE_DELAY_MS * 3 / 2,
            ..Behavior::default()
        },
        "eu-west" => Behavior {
            tools_broken: true,
            delay_ms: BEFORE_DELAY_MS,
            ..Behavior::default()
        },
        "ap-south" => Behavior {
            tools_broken: true,
            delay_ms: 350,
            ..Behavior::default()
        },
        _ => Behavior::default(),
    }
}

/// Runs the demo, or only serves the backend with `--serve-target`.
pub async fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.serve_target {
        return serve(addr, args.mode, args.database).await;
    }
    let table = args.output == Output::Table;
    let color = render::stdout_color();
    let say = |text: &str| {
        if table {
            println!("{text}");
        }
    };
    let dir = tempfile::tempdir().context("cannot create a temporary folder for the demo")?;
    let (db_url, pool) = create_database(&dir.path().join("agent.db")).await?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut targets = Vec::new();
    for region in REGIONS {
        let before = Behavior {
            delay_ms: BEFORE_DELAY_MS,
            ..Behavior::default()
        };
        let target = DemoTarget::start(loopback, before, Some(pool.clone()))
            .await
            .context("cannot start the demo agent backend on 127.0.0.1")?;
        targets.push((region, target));
    }
    let coordinator_url = start_coordinator(dir.path()).await?;
    for (region, target) in &targets {
        start_probe(&coordinator_url, region, &target.url(), &db_url);
    }
    say(
        "postflight demo: an agent backend validated from three regions, before and after a migration\n",
    );
    say(&format!(
        "coordinator  {coordinator_url} (SQLite history in {})",
        dir.path().display()
    ));
    for (region, target) in &targets {
        say(&format!(
            "probe        {region:<9} → agent backend {}",
            target.url()
        ));
    }
    wait_for_probes(&coordinator_url).await?;
    let plan = demo_plan()?;
    say(&format!(
        "plan         {} checks: {}\n",
        plan.checks.len(),
        plan.checks
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    say("1. Before the migration (kept as a baseline to compare with afterwards)");
    let before_options = v1::RunOptions {
        take_baseline: true,
        migration: MIGRATION_LABEL.to_owned(),
        ..Default::default()
    };
    let before = validate(&coordinator_url, &plan, before_options).await?;
    if table {
        print!("{}", render::report(&before, Output::Table, color));
    }
    let baseline = baseline_of(&coordinator_url, &before.run_id).await?;
    say(&format!(
        "baseline {baseline} kept: every latency per check and region, and the error counts\n"
    ));
    say(
        "2. The migration: tool look-ups break in eu-west and ap-south, ap-south answers 350 ms slower,",
    );
    say(
        "   us-east answers 50% slower (still far under the plan's 250 ms threshold), and an index",
    );
    say("   of the shared database is dropped.\n");
    for (region, target) in &targets {
        target.set_behavior(after_migration(region));
    }
    migrate(&db_url).await?;
    let feedback = "invoice look-ups answer \"I could not find it\" in eu-west";
    submit_feedback(&coordinator_url, feedback).await?;
    say(&format!(
        "   Support reports a regression (`postflight feedback {MIGRATION_LABEL} …`): {feedback}\n"
    ));
    say("3. After the migration, compared with the baseline");
    let after_options = v1::RunOptions {
        against: baseline.clone(),
        migration: MIGRATION_LABEL.to_owned(),
        ..Default::default()
    };
    let after = validate(&coordinator_url, &plan, after_options).await?;
    if table {
        print!("{}", render::report(&after, Output::Table, color));
    } else {
        let both = serde_json::json!({"before": before, "baseline_id": baseline, "after": after});
        println!("{}", serde_json::to_string_pretty(&both)?);
    }
    let as_expected = before.status == Overall::Pass && after.status == Overall::Fail;
    if table {
        println!();
        if after.rollback.recommended {
            let action = after
                .rollback
                .action
                .as_deref()
                .unwrap_or("no action configured");
            println!(
                "Rollback decision: roll back with `{action}` (dry run: the demo executes nothing)."
            );
        }
        let caught = after.baseline.as_ref().and_then(|b| {
            b.comparisons.iter().find(|c| {
                c.region == "us-east" && c.decision == postflight_plan::baseline::Decision::Worse
            })
        });
        if let Some(c) = caught {
            println!(
                "The baseline caught what the fixed 250 ms threshold let through: {} in us-east got {:+.0}% slower.",
                c.check,
                c.latency.increase.unwrap_or(0.0) * 100.0
            );
        }
        if as_expected {
            println!(
                "postflight told the healthy release (PASS) from the broken one (FAIL), region by region."
            );
        }
    }
    if as_expected {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: the demo expected PASS before and FAIL after the migration, got {} and {}",
            before.status, after.status
        );
        Ok(ExitCode::from(1))
    }
}

/// A coordinator on SQLite in `dir`, serving on a free loopback port; returns its URL.
async fn start_coordinator(dir: &Path) -> anyhow::Result<String> {
    let db = format!("sqlite://{}", dir.join("postflight.db").display());
    let store = AnyStore::Sqlite(SqliteStore::open(&db).await?);
    let sealer = Sealer::load_or_create(&dir.join("postflight.db.key"))?;
    let config = Config {
        default_timeout: Duration::from_secs(60),
        identity: "demo coordinator".to_owned(),
        ..Config::default()
    };
    let coordinator = Coordinator::start(store, sealer, config).await?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = grpc::serve(
            coordinator,
            listener,
            grpc::Access::default(),
            std::future::pending(),
        )
        .await
        {
            tracing::error!(error = %e, "demo coordinator stopped");
        }
    });
    Ok(url)
}

/// A probe for `region` whose `${probe:…}` variables point at its region's backend.
fn start_probe(coordinator: &str, region: &str, target: &str, db_url: &str) {
    let vars: HashMap<String, String> = HashMap::from([
        ("DEMO_URL".to_owned(), target.to_owned()),
        ("DEMO_DATABASE_URL".to_owned(), db_url.to_owned()),
    ]);
    let mut config = ProbeConfig::new(
        coordinator,
        &format!("demo-probe-{region}"),
        region,
        Arc::new(vars),
    );
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs(1);
    tokio::spawn(async move {
        if let Err(e) = postflight_probe::run(config, std::future::pending()).await {
            tracing::error!(error = %e, "demo probe stopped");
        }
    });
}

async fn wait_for_probes(url: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if let Ok(mut client) = remote::client(url).await
            && let Ok(list) = client.list_probes(v1::ListProbesRequest::default()).await
            && list.get_ref().probes.iter().filter(|p| p.connected).count() == REGIONS.len()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the demo probes did not connect to the demo coordinator within 5 s")
}

async fn validate(url: &str, plan: &Plan, options: v1::RunOptions) -> anyhow::Result<Report> {
    remote::submit_and_follow(url, plan, "demo/plan.yaml", options)
        .await
        .map_err(|f| anyhow::anyhow!("{}", f.message()))
}

/// A regression report about the demo's migration, as support would send it.
async fn submit_feedback(url: &str, text: &str) -> anyhow::Result<()> {
    remote::feedback_client(url)
        .await
        .map_err(|f| anyhow::anyhow!("{}", f.message()))?
        .submit_feedback(v1::SubmitFeedbackRequest {
            migration: MIGRATION_LABEL.to_owned(),
            text: text.to_owned(),
            kind: "regression".to_owned(),
            source: "support".to_owned(),
        })
        .await?;
    Ok(())
}

/// The baseline the run `run_id` took.
async fn baseline_of(url: &str, run_id: &str) -> anyhow::Result<String> {
    let mut client = remote::client(url)
        .await
        .map_err(|f| anyhow::anyhow!("{}", f.message()))?;
    let run = client
        .get_run(v1::GetRunRequest {
            run_id: run_id.to_owned(),
        })
        .await?
        .into_inner();
    if run.baseline_id.is_empty() {
        anyhow::bail!(
            "the run before the migration kept no baseline: {}",
            run.baseline_refused
        );
    }
    Ok(run.baseline_id)
}

fn demo_plan() -> anyhow::Result<Plan> {
    let none: HashMap<String, String> = HashMap::new();
    parse_plan(PLAN, "demo/plan.yaml", Expander::plan(&none))
        .map_err(|e| anyhow::anyhow!("the built-in demo plan is invalid:\n{}", e.render()))
}

/// The backend's database at `path` (created with the demo's schema when missing): its URL
/// for plans, and a pool for the backend's sessions.
async fn create_database(path: &Path) -> anyhow::Result<(String, sqlx::SqlitePool)> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open or create {}", path.display()))?;
    sqlx::raw_sql(SCHEMA)
        .execute(&pool)
        .await
        .with_context(|| format!("cannot create the demo schema in {}", path.display()))?;
    Ok((format!("sqlite:{}", path.display()), pool))
}

async fn migrate(db_url: &str) -> anyhow::Result<()> {
    let mut conn = SqliteConnection::connect(db_url).await?;
    sqlx::raw_sql(MIGRATION).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

async fn serve(
    addr: SocketAddr,
    mode: target::Mode,
    database: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    // The backend's database, for sessions and plans' database checks: the given file, or a
    // temporary one removed when the backend stops.
    let dir = tempfile::tempdir().context("cannot create a temporary folder for the demo")?;
    let path = database.unwrap_or_else(|| dir.path().join("agent.db"));
    let (db_url, pool) = create_database(&path).await?;
    let mut target = DemoTarget::start(addr, mode.behavior(), Some(pool))
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    // Whoever started the backend may close its pipes once it has read what it needs: a
    // failed write here must not stop the backend.
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{}", target.url());
    let _ = std::io::stdout().flush();
    let _ = writeln!(
        std::io::stderr(),
        "demo agent backend listening on {url} ({mode:?}), its database at {db_url}\n\
         Try a plan against it:\n  \
         export AGENT_URL={url} DATABASE_URL={db_url}\n  \
         postflight run examples/agent-backend.yaml --local\n\
         Change its behaviour with\n  \
         curl -X PUT {url}/admin/behavior -H 'content-type: application/json' -d '{{\"tools_broken\": true}}'\n\
         Press Ctrl-C to stop.",
        url = target.url(),
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = target.wait() => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_plan_is_valid() {
        let plan = demo_plan().unwrap();
        assert_eq!(plan.checks.len(), 4);
        assert_eq!(plan.policy.regions, REGIONS);
        assert!(plan.rollback.as_ref().unwrap().dry_run);
    }
}
