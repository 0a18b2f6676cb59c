//! End-to-end: SIGTERM stops every binary gracefully, also as PID 1 of a PID namespace
//! (`unshare --pid --fork`), which is how a container runs them. As PID 1 a process without a
//! SIGTERM handler ignores the signal entirely: before this, Kubernetes killed both binaries
//! after the grace period on every rollout, losing what they had buffered.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postflight_e2e::fake_probe::{FakeProbe, hello, submit};
use postflight_e2e::{DemoBackend, Proc, bin, spawn_coordinator};
use postflight_proto::v1::{self, coordinator_message, probe_message::Kind};

/// `binary args…` as PID 1 of a new PID namespace; returns the `unshare` process and the
/// binary's PID as seen from here (the child of `unshare`).
fn spawn_as_pid_1(binary: &str, args: &[&str], log: &std::path::Path) -> (Proc, u32) {
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--"])
        .arg(bin(binary))
        .args(args)
        .env("POSTFLIGHT_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let unshare = child.id();
    let proc = Proc::from_child(child, binary);
    for _ in 0..200 {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let pid: u32 = pid.parse().unwrap();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let nspid = status
                .lines()
                .find(|l| l.starts_with("NSpid:"))
                .unwrap()
                .to_owned();
            assert!(
                nspid.trim_end().ends_with("\t1"),
                "not PID 1 inside: {nspid}"
            );
            return (proc, pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{binary} did not start under unshare");
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits for `proc` to exit; its exit code and how long it took.
fn wait_exit(proc: &mut Proc, within: Duration) -> (Option<i32>, Duration) {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(status) = proc.child.try_wait().unwrap() {
            return (status.code(), started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("still running {within:?} after SIGTERM");
}

/// The coordinator as PID 1: a probe sends a burst of results, SIGTERM arrives in the middle.
/// It exits 0 within 10 s, and every result it acknowledged is in the database: the probe
/// replays the rest to the next coordinator, so nothing is lost and nothing counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_drains_on_sigterm_as_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("postflight.db");
    let database = format!("sqlite://{}", db.display());
    let log = dir.path().join("coordinator.log");
    let (mut coordinator, pid) = spawn_as_pid_1(
        "postflight-coordinator",
        &["--listen", "127.0.0.1:0", "--database", &database],
        &log,
    );
    let mut line = String::new();
    std::io::BufReader::new(coordinator.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    let url = format!("http://{addr}");

    let mut probe = FakeProbe::connect(&url, hello("eu-1", "eu"), None)
        .await
        .unwrap();
    let checks: String = (0..200)
        .map(|i| format!("  - name: c{i}\n    http: {{url: \"http://127.0.0.1:9/\"}}\n"))
        .collect();
    let plan = format!("name: burst\nchecks:\n{checks}policy: {{regions: [eu]}}\n");
    let run = submit(&url, &plan, 0).await.unwrap();
    let assignment = probe.assignment(Duration::from_secs(10)).await;
    assert_eq!(assignment.run_id, run.run_id);
    let result = |i: u32| v1::CheckResult {
        result_id: format!("r{i}"),
        check_index: i,
        check_name: format!("c{i}"),
        status: v1::CheckStatus::Pass.into(),
        duration_ms: 1.0,
        ..Default::default()
    };
    // 200 results in 40 messages, SIGTERM after the first ten once the coordinator has
    // acknowledged some (on a busy machine it may not have read any yet).
    let mut sent = 0;
    let mut signalled = None;
    let mut acked = std::collections::BTreeSet::new();
    for batch in 0..40u32 {
        if batch == 10 {
            while acked.is_empty() {
                match probe.next(Duration::from_secs(10)).await {
                    Some(Ok(message)) => {
                        if let Some(coordinator_message::Kind::Ack(ack)) = message.kind {
                            acked.extend(ack.result_ids);
                        }
                    }
                    other => panic!("no acknowledgement before SIGTERM: {other:?}"),
                }
            }
            sigterm(pid);
            signalled = Some(Instant::now());
        }
        let results = (batch * 5..batch * 5 + 5)
            .map(|i| v1::CheckResult {
                run_id: assignment.run_id.clone(),
                assignment_id: assignment.assignment_id.clone(),
                ..result(i)
            })
            .collect();
        if !probe.send(Kind::Results(v1::ResultBatch { results })).await {
            break;
        }
        sent += 5;
    }
    // Every acknowledgement up to the end of the stream.
    while let Some(Ok(message)) = probe.next(Duration::from_secs(10)).await {
        if let Some(coordinator_message::Kind::Ack(ack)) = message.kind {
            acked.extend(ack.result_ids);
        }
    }
    let (code, _) = wait_exit(&mut coordinator, Duration::from_secs(10));
    let took = signalled.unwrap().elapsed();
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&log).unwrap());
    assert!(took < Duration::from_secs(10), "{took:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("SIGTERM") && logged.contains("stopped"),
        "{logged}"
    );

    use sqlx::Connection;
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(results), 0) FROM result_batches")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "sent {sent}, acknowledged {}, stored {stored}, exited {took:?} after SIGTERM",
        acked.len()
    );
    assert!(!acked.is_empty() && sent >= acked.len());
    assert_eq!(
        stored as usize,
        acked.len(),
        "every acknowledged result is stored, and only those (sent {sent})"
    );
}

/// The probe as PID 1: SIGTERM arrives while a check is waiting for a slow service. It takes
/// no new work, lets the check finish, delivers its result and the assignment's end, closes
/// its stream and exits 0 within 10 s; the run completes with every check's result.
#[test]
fn the_probe_drains_on_sigterm_as_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let (_coordinator, url) =
        spawn_coordinator(0, &database, &[], &dir.path().join("coordinator.log"));
    let slow = DemoBackend::spawn("slow");
    let healthy = DemoBackend::spawn("healthy");
    let log = dir.path().join("probe.log");
    let (mut probe, pid) = spawn_as_pid_1(
        "postflight-probe",
        &["--coordinator", &url, "--region", "eu", "--name", "eu-1"],
        &log,
    );
    postflight_e2e::wait_for_probes(&url, 1);
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: drain\nchecks:\n  - name: slow\n    http: {{method: POST, url: \"{}/api/agent/chat\", json: {{message: hi}}}}\n  - name: quick\n    http: {{method: POST, url: \"{}/api/agent/chat\", json: {{message: hi}}}}\npolicy: {{regions: [eu]}}\n",
            slow.url, healthy.url
        ),
    )
    .unwrap();
    let waiting = std::thread::spawn({
        let url = url.clone();
        let plan = plan.clone();
        move || postflight_e2e::run_plan_on(&plan, &url, &[])
    });
    // The slow check answers after 3.5 s; stop the probe while it waits.
    for _ in 0..200 {
        if std::fs::read_to_string(&log).unwrap().contains("executing") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    sigterm(pid);
    let (code, took) = wait_exit(&mut probe, Duration::from_secs(10));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{logged}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        logged.contains("stopped: every result delivered"),
        "{logged}"
    );
    let out = waiting.join().unwrap();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert!(
        checks.iter().all(|c| c["status"] == "pass"),
        "both results delivered: {report:#}"
    );
}
