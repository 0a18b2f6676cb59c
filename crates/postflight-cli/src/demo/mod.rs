//! `postflight demo`: the whole loop on one machine. A demo agent backend and its SQLite
//! database are validated before a simulated migration (PASS) and after it (FAIL, rollback
//! recommended), with nothing to install.

pub mod target;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use postflight_plan::vars::Expander;
use postflight_plan::{Overall, Plan, parse_plan};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::cli::{DemoArgs, Output};
use crate::{local, render};
use target::{Behavior, DemoTarget};

const PLAN: &str = include_str!("plan.yaml");

/// The demo backend's database before the migration.
const SCHEMA: &str = "
CREATE TABLE conversations (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL);
CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL, body TEXT);
CREATE INDEX messages_conversation_id_idx ON messages (conversation_id);
CREATE TABLE tool_calls (id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL, tool TEXT);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_name TEXT NOT NULL);
INSERT INTO sessions (id, user_name) VALUES (1, 'ada'), (2, 'grace'), (3, 'linus');
";

/// What the simulated migration does to the database.
const MIGRATION: &str = "DROP INDEX messages_conversation_id_idx;";

/// What the simulated migration does to the service: tool look-ups break, answers slow down.
const AFTER_MIGRATION: Behavior = Behavior {
    tools_broken: true,
    empty_answers: false,
    delay_ms: 350,
    errors: false,
};

/// Runs the demo, or only serves the target with `--serve-target`.
pub async fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.serve_target {
        return serve(addr, args.mode).await;
    }
    let table = args.output == Output::Table;
    let color = render::stdout_color();
    let dir = tempfile::tempdir().context("cannot create a temporary folder for the demo")?;
    let db_url = create_database(dir.path()).await?;
    let target = DemoTarget::start(SocketAddr::from(([127, 0, 0, 1], 0)), Behavior::default())
        .await
        .context("cannot start the demo agent backend on 127.0.0.1")?;
    let plan = demo_plan(&target.url(), &db_url)?;
    let say = |text: &str| {
        if table {
            println!("{text}");
        }
    };
    say("postflight demo: validating an agent backend before and after a migration\n");
    say(&format!(
        "The demo agent backend listens on {} with its SQLite database in {}.",
        target.url(),
        dir.path().display()
    ));
    say(&format!(
        "The plan has the seed article's four checks: {}.\n",
        plan.checks
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    say("1. Before the migration");
    let before = local::run(&plan, None, table).await?;
    if table {
        print!("{}", render::report(&before, Output::Table, color));
    }
    say(
        "\n2. The migration: tool look-ups break, answers slow down by 350 ms, and an index is dropped.\n",
    );
    target.set_behavior(AFTER_MIGRATION);
    migrate(&db_url).await?;
    say("3. After the migration");
    let after = local::run(&plan, None, table).await?;
    if table {
        print!("{}", render::report(&after, Output::Table, color));
    } else {
        let both = serde_json::json!({"before": before, "after": after});
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
                "Rollback decision: roll back ({}) — dry run: the demo executes nothing.",
                action
            );
        }
        if as_expected {
            println!(
                "postflight told the healthy service (PASS) from the broken one (FAIL) and explained why."
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

fn demo_plan(url: &str, db_url: &str) -> anyhow::Result<Plan> {
    let vars = HashMap::from([
        ("DEMO_URL".to_owned(), url.to_owned()),
        ("DEMO_DATABASE_URL".to_owned(), db_url.to_owned()),
    ]);
    parse_plan(PLAN, "demo/plan.yaml", Expander::both(&vars, &vars))
        .map_err(|e| anyhow::anyhow!("the built-in demo plan is invalid:\n{}", e.render()))
}

async fn create_database(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("agent.db");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
    conn.close().await?;
    Ok(format!("sqlite:{}", path.display()))
}

async fn migrate(db_url: &str) -> anyhow::Result<()> {
    let mut conn = SqliteConnection::connect(db_url).await?;
    sqlx::raw_sql(MIGRATION).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

async fn serve(addr: SocketAddr, mode: target::Mode) -> anyhow::Result<ExitCode> {
    let mut target = DemoTarget::start(addr, mode.behavior())
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("{}", target.url());
    eprintln!(
        "demo agent backend listening on {} ({mode:?}); change it with\n  curl -X PUT {}/admin/behavior -H 'content-type: application/json' -d '{{\"tools_broken\": true}}'\nPress Ctrl-C to stop.",
        target.url(),
        target.url()
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
        let plan = demo_plan("http://127.0.0.1:1", "sqlite:/tmp/x.db").unwrap();
        assert_eq!(plan.checks.len(), 4);
        assert!(plan.rollback.as_ref().unwrap().dry_run);
    }
}
