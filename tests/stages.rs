//! Stages of a migration, end to end: a production run is refused until the same plan passed
//! at staging for the same migration, `--force` is recorded, and the migration label shows in
//! reports, `runs`, the status page and the metrics. Locally (`--local`, history in the CLI's
//! state folder) and on a real coordinator with a real probe.

use std::path::Path;

use postflight_e2e::{
    DemoBackend, Finished, coordinator_with_one_probe, free_port, http_request, run_postflight,
};

fn cli(state: &Path, args: &[&str]) -> Finished {
    run_postflight(args, &[("POSTFLIGHT_STATE_DIR", state.to_str().unwrap())])
}

fn plan(dir: &Path, base_url: &str) -> String {
    let path = dir.join("staged.yaml");
    std::fs::write(
        &path,
        format!(
            "name: staged\ntarget: {{base_url: \"{base_url}\"}}\nchecks:\n  - name: up\n    http: {{url: /health}}\nstages: [staging, production]\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Runs the gate's story with `target` (`--local`, or `--coordinator URL`).
fn the_gate_holds(state: &Path, plan: &str, target: &[&str]) {
    let run = |extra: &[&str]| {
        let mut args = vec!["run", plan, "-o", "json"];
        args.extend_from_slice(target);
        args.extend_from_slice(extra);
        cli(state, &args)
    };
    // Production before staging: refused, naming the stage to run first.
    let out = run(&["--migration", "m-9", "--stage", "production"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "plan staged at stage production needs a passing run at stage staging for migration m-9 first (none ran)"
        ),
        "{}",
        out.stderr
    );
    let out = run(&["--migration", "m-9", "--stage", "stagin"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("stage `stagin` is not one of plan staged's stages: staging, production"),
        "{}",
        out.stderr
    );
    let out = run(&["--migration", "m-9", "--stage", "staging"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let staging = out.json();
    assert_eq!(staging["migration"], "m-9");
    assert_eq!(staging["stage"], "staging");
    // Now production may run.
    let out = run(&["--migration", "m-9", "--stage", "production"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let production = out.json();
    assert_eq!(production["stage"], "production");
    assert!(production.get("forced").is_none(), "{production}");
    // Another migration starts over; --force lets it through and is recorded.
    let out = run(&["--migration", "m-10", "--stage", "production", "--force"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let forced = out.json();
    assert!(
        forced["forced"]
            .as_str()
            .unwrap()
            .contains("needs a passing run at stage staging for migration m-10"),
        "{forced}"
    );
    let table = {
        let mut args = vec!["run", plan];
        args.extend_from_slice(target);
        args.extend_from_slice(&["--migration", "m-10", "--stage", "production", "--force"]);
        cli(state, &args)
    };
    assert!(
        table
            .stdout
            .contains("· migration m-10 · stage production\nstage gate overridden with --force: "),
        "{}",
        table.stdout
    );
    // A stage needs a migration (clap says so before anything runs).
    let out = run(&["--stage", "staging"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn locally_production_waits_for_staging() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let plan = plan(dir.path(), &backend.url);
    the_gate_holds(&dir.path().join("state"), &plan, &["--local"]);
}

#[test]
fn on_a_coordinator_production_waits_for_staging_and_the_label_is_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let http = format!("127.0.0.1:{}", free_port());
    let (_coordinator, url, _probe) =
        coordinator_with_one_probe(dir.path(), &["--http-listen", &http], &[]);
    let plan = plan(dir.path(), &backend.url);
    let state = dir.path().join("state");
    the_gate_holds(&state, &plan, &["--coordinator", &url]);

    let runs = cli(&state, &["runs", "--coordinator", &url, "-o", "json"]).json();
    let labelled = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["migration"] == "m-9")
        .count();
    assert_eq!(labelled, 2, "{runs}");
    let table = cli(&state, &["runs", "--coordinator", &url]);
    assert!(table.stdout.contains("m-9@production"), "{}", table.stdout);
    let (_, page) = http_request(&http, "GET", "/", None, "");
    assert!(page.contains("m-9 @ staging"), "{page}");
    let (_, metrics) = http_request(&http, "GET", "/metrics", None, "");
    assert!(
        metrics.contains(
            "postflight_migration_runs_total{migration=\"m-9\",stage=\"production\",verdict=\"PASS\"} 1"
        ),
        "{metrics}"
    );
}
