//! End-to-end: the real `postflight-coordinator`, `postflight-probe` and `postflight` binaries
//! on loopback, against demo backends running as separate processes, and the real grpcurl.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postflight_e2e::{
    DemoBackend, Finished, Proc, free_port, grpcurl, run_postflight, spawn_coordinator,
    spawn_probe, wait_for_probes,
};
use serde_json::Value;

/// Two checks of the seed article, validated from three regions; each probe checks the
/// backend named by its own `AGENT_URL`.
fn plan(dir: &Path, quorum: &str, regions: &[&str]) -> PathBuf {
    let yaml = format!(
        "name: regional\ntarget: {{base_url: \"${{probe:AGENT_URL}}\", timeout: 10s}}\nchecks:\n  - name: agent-responds\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: \"Hello, what can you help me with?\"}}\n      expect: {{json: [{{path: $.response, min_length: 11}}]}}\n  - name: tool-calling-works\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: \"Look up invoice INV-001\"}}\n      expect: {{json: [{{path: $.response, contains: INV-001}}]}}\npolicy: {{regions: [{}], quorum: {quorum}}}\n",
        regions.join(", ")
    );
    let path = dir.join(format!("plan-{quorum}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn run_remote(plan: &Path, coordinator: &str, extra: &[&str]) -> Finished {
    let mut args = vec![
        "run",
        plan.to_str().unwrap(),
        "--coordinator",
        coordinator,
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    run_postflight(&args, &[])
}

struct Cluster {
    dir: tempfile::TempDir,
    _coordinator: Proc,
    url: String,
    probes: Vec<Proc>,
}

impl Cluster {
    /// A coordinator on SQLite and one probe per `(region, name, backend URL)`.
    fn start(probes: &[(&str, &str, &str)], coordinator_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
        let (coordinator, url) = spawn_coordinator(
            0,
            &db,
            coordinator_args,
            &dir.path().join("coordinator.log"),
        );
        let probes = probes
            .iter()
            .map(|(region, name, backend)| {
                spawn_probe(
                    &url,
                    region,
                    name,
                    &[("AGENT_URL", backend)],
                    &[],
                    &dir.path().join(format!("{name}.log")),
                )
            })
            .collect::<Vec<_>>();
        wait_for_probes(&url, probes.len());
        Self {
            dir,
            _coordinator: coordinator,
            url,
            probes,
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

#[test]
fn one_broken_region_warns_under_majority_fails_under_any_and_grpcurl_reads_it() {
    let healthy = DemoBackend::spawn("healthy");
    let broken = DemoBackend::spawn("broken-tools");
    let cluster = Cluster::start(
        &[
            ("us-east", "probe-us-east", &healthy.url),
            ("eu-west", "probe-eu-west", &healthy.url),
            ("ap-south", "probe-ap-south", &broken.url),
        ],
        &[],
    );
    let regions = ["us-east", "eu-west", "ap-south"];
    let majority = run_remote(
        &plan(cluster.dir.path(), "majority", &regions),
        &cluster.url,
        &[],
    );
    assert_eq!(
        majority.code, 0,
        "one warning is within max_warnings: {}\n{}",
        majority.stdout, majority.stderr
    );
    let report = majority.json();
    assert_eq!(
        report["regions"],
        serde_json::json!(["ap-south", "eu-west", "us-east"])
    );
    let tools = check(&report, "tool-calling-works");
    assert_eq!(tools["status"], "warn");
    assert_eq!(
        tools["message"],
        "failed in 1 of 3 regions (ap-south), fewer than the 2 needed to fail: $.response does not contain \"INV-001\" (got: \"I could not find it\")"
    );
    assert_eq!(tools["regions"]["ap-south"]["status"], "fail");
    assert_eq!(tools["regions"]["us-east"]["status"], "pass");
    assert_eq!(report["requests"]["count"], 6);
    assert_eq!(report["requests"]["errors"], 1);
    assert!(
        majority
            .stderr
            .contains("[ap-south] FAIL tool-calling-works"),
        "live progress: {}",
        majority.stderr
    );

    let any = run_remote(
        &plan(cluster.dir.path(), "any", &regions),
        &cluster.url,
        &[],
    );
    assert_eq!(any.code, 1, "{}", any.stdout);
    let any_report = any.json();
    assert_eq!(any_report["status"], "FAIL");
    assert_eq!(
        check(&any_report, "tool-calling-works")["message"],
        "failed in 1 of 3 regions (ap-south): $.response does not contain \"INV-001\" (got: \"I could not find it\")"
    );
    assert_eq!(
        any_report["rollback"]["reasons"][0],
        "verdict FAIL: tool-calling-works failed in 1 of 3 regions"
    );

    // The listings of the contract.
    let probes = run_postflight(
        &["probes", "--coordinator", &cluster.url, "-o", "json"],
        &[],
    );
    assert_eq!(probes.code, 0);
    let list = probes.json()["probes"].as_array().unwrap().clone();
    assert_eq!(list.len(), 3);
    for p in &list {
        for key in [
            "name",
            "region",
            "labels",
            "connected",
            "last_seen",
            "version",
        ] {
            assert!(p.get(key).is_some(), "probes[].{key} in {p}");
        }
        assert_eq!(p["connected"], true);
    }
    let runs = run_postflight(&["runs", "--coordinator", &cluster.url, "-o", "json"], &[]);
    let runs = runs.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        for key in [
            "run_id",
            "plan",
            "status",
            "started_at",
            "finished_at",
            "rollback",
        ] {
            assert!(r.get(key).is_some(), "runs[].{key} in {r}");
        }
        assert_eq!(r["status"], "completed");
    }
    assert_eq!(runs[0]["run_id"], any_report["run_id"], "newest first");
    // A finished run can be watched and reported again, with the run's exit code.
    let run_id = any_report["run_id"].as_str().unwrap();
    let watched = run_postflight(
        &["watch", run_id, "--coordinator", &cluster.url, "-o", "json"],
        &[],
    );
    assert_eq!(watched.code, 1, "{}", watched.stderr);
    assert_eq!(watched.json(), any_report);
    let table = run_postflight(&["report", run_id, "--coordinator", &cluster.url], &[]);
    assert_eq!(table.code, 1);
    assert!(table.stdout.contains("PER REGION"), "{}", table.stdout);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(" tool-calling-works")
                && l.contains("FAIL")
                && l.contains("PASS")),
        "{}",
        table.stdout
    );

    // grpcurl, through server reflection.
    let addr = cluster.url.trim_start_matches("http://");
    let (ok, listing) = grpcurl(&["-plaintext", addr, "list"]);
    assert!(ok, "{listing}");
    for service in [
        "postflight.v1.ProbeService",
        "postflight.v1.ValidationService",
        "grpc.health.v1.Health",
    ] {
        assert!(listing.contains(service), "{listing}");
    }
    let (ok, probes) = grpcurl(&[
        "-plaintext",
        addr,
        "postflight.v1.ValidationService/ListProbes",
    ]);
    assert!(ok && probes.contains("\"probe-ap-south\""), "{probes}");
    let run_id = any_report["run_id"].as_str().unwrap();
    let request = format!("{{\"run_id\": \"{run_id}\"}}");
    let (ok, wire) = grpcurl(&[
        "-plaintext",
        "-d",
        &request,
        addr,
        "postflight.v1.ValidationService/GetReport",
    ]);
    assert!(ok, "{wire}");
    let wire: Value = serde_json::from_str(&wire).unwrap();
    assert_eq!(wire["status"], "FAIL");
    assert_eq!(wire["summary"], "FAIL — rollback recommended");
    assert_eq!(wire["checks"][1]["regions"]["ap-south"]["status"], "fail");
    let (ok, missing) = grpcurl(&[
        "-plaintext",
        "-d",
        "{\"run_id\": \"no-such-run\"}",
        addr,
        "postflight.v1.ValidationService/GetReport",
    ]);
    assert!(!ok);
    assert!(
        missing.contains("NotFound") && missing.contains("no run with id no-such-run"),
        "{missing}"
    );
    let (ok, health) = grpcurl(&["-plaintext", addr, "grpc.health.v1.Health/Check"]);
    assert!(ok && health.contains("SERVING"), "{health}");
    let (ok, invalid) = grpcurl(&[
        "-plaintext",
        "-d",
        "{\"plan_yaml\": \"name: x\\nchecks: []\\n\"}",
        addr,
        "postflight.v1.ValidationService/SubmitRun",
    ]);
    assert!(!ok);
    assert!(
        invalid.contains("InvalidArgument") && invalid.contains("plan_yaml: invalid plan"),
        "{invalid}"
    );
}

#[test]
fn a_required_region_without_a_probe_is_inconclusive_at_the_timeout() {
    let healthy = DemoBackend::spawn("healthy");
    let cluster = Cluster::start(
        &[
            ("us-east", "probe-us-east", &healthy.url),
            ("eu-west", "probe-eu-west", &healthy.url),
        ],
        &[],
    );
    let started = Instant::now();
    let out = run_remote(
        &plan(
            cluster.dir.path(),
            "majority",
            &["us-east", "eu-west", "ap-south"],
        ),
        &cluster.url,
        &["--timeout", "3s"],
    );
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the run ended at its timeout"
    );
    let report = out.json();
    assert_eq!(report["summary"], "INCONCLUSIVE — not enough data");
    let responds = check(&report, "agent-responds");
    assert_eq!(responds["status"], "inconclusive");
    assert!(
        responds["message"]
            .as_str()
            .unwrap()
            .starts_with("no result from ap-south"),
        "{responds}"
    );
    assert_eq!(report["regions"], serde_json::json!(["eu-west", "us-east"]));
    let runs = run_postflight(&["runs", "--coordinator", &cluster.url, "-o", "json"], &[]);
    assert_eq!(runs.json()["runs"][0]["status"], "timed_out");
}

#[test]
fn a_coordinator_restart_mid_run_and_after_the_run_loses_nothing() {
    let slow = DemoBackend::spawn("healthy");
    slow.set(r#"{"delay_ms": 1500}"#);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let port = free_port();
    let log = dir.path().join("coordinator.log");
    let (mut coordinator, url) = spawn_coordinator(port, &db, &[], &log);
    let regions = ["us-east", "eu-west", "ap-south"];
    let _probes: Vec<Proc> = regions
        .iter()
        .map(|r| {
            spawn_probe(
                &url,
                r,
                &format!("probe-{r}"),
                &[("AGENT_URL", &slow.url)],
                &[],
                &dir.path().join(format!("{r}.log")),
            )
        })
        .collect();
    wait_for_probes(&url, 3);
    let plan = plan(dir.path(), "majority", &regions);
    let cli = Command::new(postflight_e2e::bin("postflight"))
        .args([
            "run",
            plan.to_str().unwrap(),
            "--coordinator",
            &url,
            "-o",
            "json",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the probes wait on the slow backend, the coordinator dies under them.
    slow.wait_for("three probes waiting on the slow backend", |_, waiting| {
        waiting >= 3
    });
    coordinator.kill();
    // They finish their checks while it is gone, buffering the results.
    slow.wait_for("every request answered", |requests, waiting| {
        requests >= 3 && waiting == 0
    });
    let (mut coordinator, _) = spawn_coordinator(port, &db, &[], &log);
    let out = cli.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{stderr}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "PASS");
    assert_eq!(
        report["regions"],
        serde_json::json!(["ap-south", "eu-west", "us-east"])
    );
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let coordinator_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        coordinator_log.contains("resuming run"),
        "{coordinator_log}"
    );
    let probe_log = std::fs::read_to_string(dir.path().join("us-east.log")).unwrap();
    assert!(
        probe_log.contains("connection lost"),
        "the probe saw the coordinator go: {probe_log}"
    );
    assert!(
        stderr.contains("lost the coordinator's stream; retrying"),
        "{stderr}"
    );
    // Every result was stored exactly once, replays included: 2 checks × 3 regions.
    let addr = url.trim_start_matches("http://");
    let request = format!("{{\"run_id\": \"{run_id}\"}}");
    let (ok, run) = grpcurl(&[
        "-plaintext",
        "-d",
        &request,
        addr,
        "postflight.v1.ValidationService/GetRun",
    ]);
    assert!(ok, "{run}");
    let run: Value = serde_json::from_str(&run).unwrap();
    assert_eq!(run["results"], 6, "{run}");
    assert_eq!(run["status"], "completed");
    // Restarted after the run, the coordinator still has the report, and the probes return.
    coordinator.kill();
    let (_coordinator, _) = spawn_coordinator(port, &db, &[], &log);
    wait_for_probes(&url, 3);
    let again = run_postflight(
        &["report", &run_id, "--coordinator", &url, "-o", "json"],
        &[],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        again.json(),
        report,
        "the stored report is the one the CLI printed"
    );
}

#[test]
fn a_killed_probe_moves_its_assignment_or_leaves_its_region_missing() {
    let slow = DemoBackend::spawn("healthy");
    slow.set(r#"{"delay_ms": 1500}"#);
    let mut cluster = Cluster::start(
        &[
            ("us-east", "probe-us-east", &slow.url),
            ("eu-west", "probe-eu-west-a", &slow.url),
            ("eu-west", "probe-eu-west-b", &slow.url),
        ],
        &["--reassign-after", "1s"],
    );
    // eu-west-a gets eu-west (least busy, then by name); it dies mid-run.
    let plan_path = plan(cluster.dir.path(), "majority", &["us-east", "eu-west"]);
    let cli = Command::new(postflight_e2e::bin("postflight"))
        .args([
            "run",
            plan_path.to_str().unwrap(),
            "--coordinator",
            &cluster.url,
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    slow.wait_for("both regions' probes at work", |_, waiting| waiting >= 2);
    cluster.probes[1].kill();
    let out = cli.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "PASS");
    assert_eq!(
        check(&report, "agent-responds")["regions"]["eu-west"]["status"],
        "pass"
    );
    assert!(
        cluster
            .log("coordinator.log")
            .contains("probe gone: moving its assignment")
    );

    // us-east has one probe: killed mid-run, its region is missing — never a pass.
    let cli = Command::new(postflight_e2e::bin("postflight"))
        .args([
            "run",
            plan_path.to_str().unwrap(),
            "--coordinator",
            &cluster.url,
            "-o",
            "json",
            "--timeout",
            "5s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    slow.wait_for("both regions' probes at work", |_, waiting| waiting >= 2);
    cluster.probes[0].kill();
    let out = cli.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(check(&report, "agent-responds")["status"], "inconclusive");
    assert!(
        check(&report, "agent-responds")["regions"]
            .get("us-east")
            .is_none()
    );
}

#[test]
fn a_probe_token_is_required_when_configured() {
    let healthy = DemoBackend::spawn("healthy");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let (_coordinator, url) = spawn_coordinator(
        0,
        &db,
        &["--probe-token", "s3cret-probe-token"],
        &dir.path().join("coordinator.log"),
    );
    let env = [("AGENT_URL", healthy.url.as_str())];
    let _anonymous = spawn_probe(
        &url,
        "us-east",
        "anonymous",
        &env,
        &[],
        &dir.path().join("anonymous.log"),
    );
    let _wrong = spawn_probe(
        &url,
        "us-east",
        "wrong",
        &env,
        &["--token", "guess"],
        &dir.path().join("wrong.log"),
    );
    let _right = spawn_probe(
        &url,
        "eu-west",
        "right",
        &env,
        &["--token", "s3cret-probe-token"],
        &dir.path().join("right.log"),
    );
    wait_for_probes(&url, 1);
    postflight_e2e::wait_for_log(
        &dir.path().join("anonymous.log"),
        "this coordinator requires a probe token",
    );
    postflight_e2e::wait_for_log(&dir.path().join("wrong.log"), "wrong probe token");
    let probes = run_postflight(&["probes", "--coordinator", &url, "-o", "json"], &[]).json();
    let names: Vec<&str> = probes["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["right"], "refused probes are not registered");
    let anonymous = std::fs::read_to_string(dir.path().join("anonymous.log")).unwrap();
    assert!(
        anonymous.contains("this coordinator requires a probe token"),
        "{anonymous}"
    );
    let wrong = std::fs::read_to_string(dir.path().join("wrong.log")).unwrap();
    assert!(wrong.contains("wrong probe token"), "{wrong}");
    let coordinator_log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
    assert!(
        !coordinator_log.contains("s3cret-probe-token"),
        "the token is never logged"
    );
}

#[test]
fn the_coordinator_and_probe_explain_bad_usage() {
    let out = Command::new(postflight_e2e::bin("postflight-coordinator"))
        .args(["--database", "mysql://u:pw@h/db", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unsupported database url `mysql://u:****@h/db`"),
        "{stderr}"
    );
    assert!(!stderr.contains(":pw@"), "{stderr}");
    let out = Command::new(postflight_e2e::bin("postflight-probe"))
        .args(["--coordinator", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--region"));
}
