//! End-to-end: rollback triggers and actions, and monitoring, through the real binaries.
//!
//! `kubectl` is a stand-in executable put first on `PATH` that records its arguments (no
//! Kubernetes cluster can run here; the Kubernetes API action is tested against recorded API
//! objects in postflight-rollback). Every other part is real: the demo backend, coordinators,
//! probes, PostgreSQL and the shell commands the actions run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use postflight_e2e::{
    DemoBackend, ScratchDb, free_port, run_postflight, spawn_coordinator, spawn_probe,
    wait_for_probes,
};
use serde_json::Value;

/// A `kubectl` that records its arguments in `calls.txt` and exits with `code`.
fn stand_in_kubectl(dir: &Path, code: i32) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("kubectl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\n[ {code} -eq 0 ] || echo 'error: deployments.apps \"web\" not found' >&2\nexit {code}\n",
            dir.join("calls.txt").display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The seed's tool check against `url`, with a rollback section.
fn plan(url: &str, rollback: &str, extra: &str) -> String {
    format!(
        "name: rollback-e2e\ntarget: {{base_url: \"{url}\"}}\nchecks:\n  - name: tool-calling-works\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: \"Look up invoice INV-001\"}}\n      expect: {{json: [{{path: $.response, contains: INV-001}}]}}\nrollback:\n{rollback}{extra}"
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn run_local_rolls_back_with_kubectl_once_and_honours_dry_run_and_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_in_kubectl(dir.path(), 0);
    let broken = DemoBackend::spawn("broken-tools");
    let plan = write(
        dir.path(),
        "p.yaml",
        &plan(
            &broken.url,
            "  on_fail: true\n  action: {kubectl: {}}\n  cooldown: 1h\n",
            "",
        ),
    );
    let state = dir.path().join("state");
    let env = [
        ("PATH", path_with(&bin)),
        ("K8S_DEPLOYMENT", "web".to_owned()),
        ("K8S_NAMESPACE", "prod".to_owned()),
        ("POSTFLIGHT_STATE_DIR", state.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let plan_arg = plan.to_str().unwrap();

    // --dry-run decides and records, never acts.
    let dry = run_postflight(
        &["run", plan_arg, "--local", "-o", "json", "--dry-run"],
        &env,
    );
    assert_eq!(dry.code, 1, "{}", dry.stderr);
    let rb = &dry.json()["rollback"];
    assert_eq!(
        (
            rb["recommended"].as_bool(),
            rb["triggered"].as_bool(),
            rb["dry_run"].as_bool()
        ),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(rb["outcome"], "dry_run");
    assert_eq!(rb["action"], "kubectl rollout undo deployment/web -n prod");
    assert!(
        lines(&dir.path().join("calls.txt")).is_empty(),
        "kubectl was not called"
    );

    // For real: the stand-in records `kubectl rollout undo deployment/web -n prod`.
    let real = run_postflight(&["run", plan_arg, "--local", "-o", "json"], &env);
    assert_eq!(
        real.code, 1,
        "the verdict's exit code, whatever the rollback did"
    );
    let report = real.json();
    let rb = &report["rollback"];
    assert_eq!(
        (rb["triggered"].as_bool(), rb["outcome"].as_str()),
        (Some(true), Some("succeeded")),
        "{rb}"
    );
    assert_eq!(rb["reasons"][0], "verdict FAIL: tool-calling-works failed");
    assert_eq!(rb["error"], Value::Null);
    assert!(
        rb["executed_by"]
            .as_str()
            .unwrap()
            .starts_with("postflight CLI on ")
    );
    assert_eq!(
        lines(&dir.path().join("calls.txt")),
        ["rollout undo deployment/web -n prod"]
    );

    // A second FAIL within the cooldown is recorded as skipped; kubectl is not called again.
    let again = run_postflight(&["run", plan_arg, "--local", "-o", "json"], &env);
    let rb = &again.json()["rollback"];
    assert_eq!(
        (rb["triggered"].as_bool(), rb["outcome"].as_str()),
        (Some(false), Some("skipped"))
    );
    assert!(
        rb["detail"]
            .as_str()
            .unwrap()
            .starts_with("cooldown: postflight CLI on "),
        "{rb}"
    );
    assert_eq!(lines(&dir.path().join("calls.txt")).len(), 1);
    // The table says it too.
    let table = run_postflight(&["run", plan_arg, "--local"], &env);
    assert!(
        table
            .stdout
            .contains("rollback action: kubectl rollout undo deployment/web -n prod → skipped"),
        "{}",
        table.stdout
    );
}

#[test]
fn a_failing_kubectl_is_recorded_and_leaves_the_exit_code_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_in_kubectl(dir.path(), 1);
    let broken = DemoBackend::spawn("broken-tools");
    let plan = write(
        dir.path(),
        "p.yaml",
        &plan(&broken.url, "  action: {kubectl: {deployment: web}}\n", ""),
    );
    let state = dir.path().join("state").display().to_string();
    let path = path_with(&bin);
    let out = run_postflight(
        &["run", plan.to_str().unwrap(), "--local", "-o", "json"],
        &[
            ("PATH", &path),
            ("POSTFLIGHT_STATE_DIR", &state),
            ("K8S_NAMESPACE", ""),
        ],
    );
    assert_eq!(out.code, 1);
    let rb = &out.json()["rollback"];
    assert_eq!(rb["outcome"], "failed");
    assert_eq!(
        rb["error"],
        "`kubectl rollout undo deployment/web -n default` exited with 1: error: deployments.apps \"web\" not found"
    );
    assert_eq!(
        lines(&dir.path().join("calls.txt")),
        ["rollout undo deployment/web -n default"]
    );
}

#[test]
fn thresholds_fire_at_their_boundary_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = DemoBackend::spawn("healthy");
    healthy.set(r#"{"delay_ms": 300}"#);
    let state = dir.path().join("state").display().to_string();
    let run = |name: &str, rollback: &str| {
        let path = write(dir.path(), name, &plan(&healthy.url, rollback, ""));
        run_postflight(
            &["run", path.to_str().unwrap(), "--local", "-o", "json"],
            &[("POSTFLIGHT_STATE_DIR", &state)],
        )
        .json()
    };
    let fired = run(
        "slow.yaml",
        "  on_fail: false\n  p99_latency_above: 250ms\n",
    );
    let reasons = fired["rollback"]["reasons"].as_array().unwrap().clone();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].as_str().unwrap().starts_with("request p99 3"),
        "{reasons:?}"
    );
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .contains("is above 250ms (over 1 requests, regions: local)"),
        "{reasons:?}"
    );
    assert_eq!(fired["rollback"]["recommended"], true);
    let calm = run(
        "calm.yaml",
        "  on_fail: false\n  p99_latency_above: 5s\n  error_rate_above: 0\n",
    );
    assert_eq!(
        calm["rollback"]["recommended"], false,
        "0 errors are not above 0%"
    );
    assert_eq!(calm["rollback"]["reasons"], serde_json::json!([]));
}

fn monitor_plan(url: &str, marker: &Path, every: &str, length: &str) -> String {
    plan(
        url,
        &format!(
            "  error_rate_above: 0.3\n  action: {{command: [sh, -c, \"echo $POSTFLIGHT_PLAN $POSTFLIGHT_MONITOR_ID $ROLE >> {}\"]}}\n  cooldown: 1h\n",
            marker.display()
        ),
        &format!("monitor:\n  phases: [{{every: {every}, for: {length}}}]\n  window: 10s\n"),
    )
}

#[test]
fn a_healthy_target_is_never_rolled_back_and_the_monitor_ends_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = DemoBackend::spawn("healthy");
    let marker = dir.path().join("rolled.txt");
    let plan = write(
        dir.path(),
        "m.yaml",
        &monitor_plan(&healthy.url, &marker, "500ms", "3s"),
    );
    let state = dir.path().join("state").display().to_string();
    let out = run_postflight(
        &["monitor", plan.to_str().unwrap(), "--local", "-o", "json"],
        &[("POSTFLIGHT_STATE_DIR", &state)],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rounds = events.iter().filter(|e| e.get("round").is_some()).count();
    assert!(
        (4..=7).contains(&rounds),
        "about six rounds of 500 ms in 3 s, got {rounds}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e.get("round").is_some())
            .all(|e| e["status"] == "PASS" && e["error_rate"] == 0.0)
    );
    assert_eq!(events.last().unwrap()["ended"], "completed");
    assert!(!marker.exists(), "never rolled back");
}

#[test]
fn a_local_monitor_rolls_back_a_target_that_turns_bad_within_two_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let marker = dir.path().join("rolled.txt");
    let plan = write(
        dir.path(),
        "m.yaml",
        &monitor_plan(&backend.url, &marker, "1s", "1m"),
    );
    let state = dir.path().join("state").display().to_string();
    let child = std::process::Command::new(postflight_e2e::bin("postflight"))
        .args(["monitor", plan.to_str().unwrap(), "--local", "-o", "json"])
        .env("POSTFLIGHT_STATE_DIR", &state)
        .env("ROLE", "cli")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Three healthy rounds (one request each) before the target turns bad: with them in the
    // 10 s window, one bad round's error rate (1 of 4) stays below the 30% trigger, so only
    // `failing_rounds` holds the first bad round back.
    backend.wait_for("three healthy rounds", |requests, _| requests >= 3);
    backend.set(r#"{"tools_broken": true}"#);
    let turned_bad = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let end = events.last().unwrap();
    assert_eq!(end["ended"], "rolled_back");
    assert_eq!(end["rollback"]["outcome"], "succeeded");
    let bad: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("round").is_some() && e["status"] == "FAIL")
        .collect();
    assert_eq!(
        bad.len(),
        2,
        "the second bad round in a row triggers the rollback (failing_rounds: 2): {stdout}"
    );
    assert_eq!(bad[0]["failing_rounds_held"], 1);
    assert_eq!(
        bad[0]["held_back"],
        serde_json::json!(["held 1 of 2 rounds in a row (rollback.failing_rounds: 2)"])
    );
    assert_eq!(bad[1]["failing_rounds_held"], 2);
    assert!(turned_bad.elapsed() < Duration::from_secs(10));
    let written = lines(&marker);
    assert_eq!(written.len(), 1);
    assert!(
        written[0].starts_with("rollback-e2e ") && written[0].ends_with(" cli"),
        "{written:?}"
    );
}

#[test]
fn a_coordinator_monitor_survives_the_cli_and_a_restart_and_the_coordinator_acts() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let marker = dir.path().join("rolled.txt");
    let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let port = free_port();
    let log = dir.path().join("coordinator.log");
    let (mut coordinator, url) = spawn_coordinator(
        port,
        &db,
        &["--allow-command-actions", "--name", "coordinator-A"],
        &log,
    );
    // The probe has ROLE=probe, the coordinator ROLE unset: the marker shows who acted.
    let _probe = spawn_probe(
        &url,
        "eu",
        "probe-eu",
        &[("ROLE", "probe")],
        &[],
        &dir.path().join("probe.log"),
    );
    wait_for_probes(&url, 1);
    let plan = write(
        dir.path(),
        "m.yaml",
        &monitor_plan(&backend.url, &marker, "1s", "10m"),
    );
    let started = run_postflight(
        &[
            "monitor",
            plan.to_str().unwrap(),
            "--coordinator",
            &url,
            "--detach",
        ],
        &[],
    );
    assert_eq!(started.code, 0, "{}", started.stderr);
    let monitor_id = started.stdout.trim().to_owned();
    assert_eq!(monitor_id.len(), 36, "{}", started.stdout);
    // The CLI is gone; the monitor goes on (two rounds reach the target). Then the
    // coordinator dies and comes back.
    backend.wait_for("two rounds without the CLI", |requests, _| requests >= 2);
    coordinator.kill();
    let (_coordinator, _) = spawn_coordinator(
        port,
        &db,
        &["--allow-command-actions", "--name", "coordinator-A"],
        &log,
    );
    wait_for_probes(&url, 1);
    postflight_e2e::wait_for_log(&log, "resuming monitor");
    backend.set(r#"{"tools_broken": true}"#);
    let watched = run_postflight(&["watch", &monitor_id, "--coordinator", &url], &[]);
    assert_eq!(
        watched.code, 1,
        "watching a monitor that rolled back: {}\n{}",
        watched.stdout, watched.stderr
    );
    assert!(
        watched
            .stdout
            .contains("monitor rolled_back: rollback: verdict FAIL: tool-calling-works failed"),
        "{}",
        watched.stdout
    );
    let written = lines(&marker);
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(
        written[0],
        format!("rollback-e2e {monitor_id}"),
        "the coordinator ran it, not the probe"
    );
    let runs = run_postflight(&["runs", "--coordinator", &url, "-o", "json"], &[]).json();
    let decided = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rollback"]["triggered"] == true)
        .expect("the triggering round");
    assert_eq!(decided["rollback"]["outcome"], "succeeded");
    assert_eq!(decided["rollback"]["executed_by"], "coordinator-A");
}

/// Two coordinators on one PostgreSQL: the monitor belongs to A, which runs its rounds while
/// B leaves it alone; A is killed (-9), B resumes the monitor once A's lease expired, its
/// rounds continue with B's probe, and when the service breaks the rollback runs once, by B.
#[tokio::test]
async fn a_monitor_fails_over_to_another_coordinator_and_rolls_back_once() {
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let marker = dir.path().join("rolled.txt");
    let key = dir.path().join("shared.key").display().to_string();
    let args = |name: &'static str| {
        [
            "--allow-command-actions",
            "--name",
            name,
            "--data-key-file",
            key.as_str(),
            "--run-lease",
            "3s",
            "--reassign-after",
            "1s",
        ]
    };
    let (mut a, url_a) = spawn_coordinator(
        0,
        &db.url,
        &args("coordinator-A"),
        &dir.path().join("a.log"),
    );
    let (_b, url_b) = spawn_coordinator(
        0,
        &db.url,
        &args("coordinator-B"),
        &dir.path().join("b.log"),
    );
    // probe-a moves to B when A dies (it lists both coordinators, A first).
    let _probe_a = spawn_probe(
        &format!("{url_a},{url_b}"),
        "eu",
        "probe-a",
        &[],
        &[],
        &dir.path().join("probe-a.log"),
    );
    let _probe_b = spawn_probe(
        &url_b,
        "eu",
        "probe-b",
        &[],
        &[],
        &dir.path().join("probe-b.log"),
    );
    wait_for_probes(&url_a, 1);
    wait_for_probes(&url_b, 1);
    let plan = write(
        dir.path(),
        "m.yaml",
        &monitor_plan(&backend.url, &marker, "1s", "10m"),
    );
    let started = run_postflight(
        &[
            "monitor",
            plan.to_str().unwrap(),
            "--coordinator",
            &url_a,
            "--detach",
            "--region",
            "eu",
        ],
        &[],
    );
    assert_eq!(started.code, 0, "{}", started.stderr);
    let monitor_id = started.stdout.trim().to_owned();
    // Every round is a run of the monitor's plan, listed by any coordinator of the database.
    let rounds = |url: &str| -> usize {
        let listed = run_postflight(&["runs", "--coordinator", url, "-o", "json"], &[]).json();
        listed["runs"].as_array().map_or(0, Vec::len)
    };
    postflight_e2e::wait_until("two rounds on A", Duration::from_secs(30), || {
        rounds(&url_a) >= 2
    });
    let b_log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(
        !b_log.contains("resuming monitor"),
        "B leaves A's monitor alone: {b_log}"
    );

    a.kill();
    let before = rounds(&url_b);
    postflight_e2e::wait_for_log(&dir.path().join("b.log"), "resuming monitor");
    postflight_e2e::wait_until("rounds to continue on B", Duration::from_secs(30), || {
        rounds(&url_b) > before
    });
    backend.set(r#"{"tools_broken": true}"#);
    let watched = run_postflight(&["watch", &monitor_id, "--coordinator", &url_b], &[]);
    assert_eq!(watched.code, 1, "{}\n{}", watched.stdout, watched.stderr);
    postflight_e2e::wait_for_log(&dir.path().join("b.log"), "monitor ended");
    postflight_e2e::wait_for_log(
        &dir.path().join("probe-a.log"),
        &format!("connected coordinator={url_b}"),
    );
    assert_eq!(lines(&marker).len(), 1, "exactly one rollback");
    let logs = format!(
        "{}{}",
        std::fs::read_to_string(dir.path().join("a.log")).unwrap(),
        std::fs::read_to_string(dir.path().join("b.log")).unwrap()
    );
    assert_eq!(logs.matches("executing rollback").count(), 1, "{logs}");
    let runs = run_postflight(&["runs", "--coordinator", &url_b, "-o", "json"], &[]).json();
    let decided = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rollback"]["triggered"] == true)
        .expect("the triggering round");
    assert_eq!(decided["rollback"]["executed_by"], "coordinator-B");
}
