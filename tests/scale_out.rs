//! Several coordinators on one PostgreSQL: each run has one owner holding a lease in the
//! database, and no other coordinator touches the run while the lease holds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use postflight_e2e::{
    DemoBackend, ScratchDb, run_postflight, spawn_coordinator, spawn_probe, wait_for_log,
    wait_for_probes, wait_until,
};

/// A run submitted to coordinator A, whose one probe is busy with it, while coordinator B on
/// the same database is killed (-9) and started again: B leaves A's run alone (it neither
/// resumes it nor moves its assignment away from A's probe), and the run ends on A with one
/// report. Before run owners, B resumed every unfinished run of the database.
#[tokio::test]
async fn a_restarting_coordinator_adopts_none_of_a_live_ones_runs() {
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    backend.set(r#"{"delay_ms": 6000}"#);
    let key = dir.path().join("shared.key").display().to_string();
    let args = |name: &'static str| {
        [
            "--name".to_owned(),
            name.to_owned(),
            "--data-key-file".to_owned(),
            key.clone(),
            "--reassign-after".to_owned(),
            "1s".to_owned(),
        ]
    };
    let a_args = args("coordinator-A");
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let b_args = args("coordinator-B");
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let (_a, url_a) = spawn_coordinator(0, &db.url, &a_args, &dir.path().join("a.log"));
    let _probe = spawn_probe(
        &url_a,
        "eu",
        "probe-a",
        &[],
        &[],
        &dir.path().join("probe-a.log"),
    );
    wait_for_probes(&url_a, 1);
    let (mut b, _) = spawn_coordinator(0, &db.url, &b_args, &dir.path().join("b.log"));

    let plan = dir.path().join("slow.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: slow\ntarget: {{base_url: \"{}\", timeout: 30s}}\nchecks:\n  - name: answers\n    http: {{method: POST, url: /api/agent/chat, json: {{message: Hi}}}}\npolicy: {{regions: [eu]}}\n",
            backend.url
        ),
    )
    .unwrap();
    let submitted = {
        let plan = plan.clone();
        let url_a = url_a.clone();
        std::thread::spawn(move || {
            run_postflight(
                &[
                    "run",
                    plan.to_str().unwrap(),
                    "--coordinator",
                    &url_a,
                    "-o",
                    "json",
                ],
                &[],
            )
        })
    };
    backend.wait_for("the run's request to be in flight", |_, waiting| {
        waiting >= 1
    });

    b.kill();
    let b2_log = dir.path().join("b2.log");
    let (_b2, _) = spawn_coordinator(0, &db.url, &b_args, &b2_log);
    wait_for_log(&b2_log, "run owned by a live coordinator: not adopting it");

    let out = submitted.join().unwrap();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["status"], "PASS", "{report}");
    assert_eq!(
        report["requests"]["count"], 1,
        "one request, never repeated elsewhere"
    );
    let b2 = std::fs::read_to_string(&b2_log).unwrap();
    assert!(!b2.contains("resuming run"), "{b2}");
    assert!(!b2.contains("moving its assignment"), "{b2}");
    let a = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(!a.contains("moving its assignment"), "{a}");
}

/// The owner of a run is killed (-9) mid-run; another coordinator on the database adopts the
/// run once the owner's lease expired, moves its assignment to a probe of the region
/// connected to it, and ends the run with one report: the request the dead coordinator's
/// probe was making is not counted, nothing is counted twice.
#[tokio::test]
async fn a_dead_coordinators_run_is_adopted_after_its_lease() {
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    backend.set(r#"{"delay_ms": 3000}"#);
    let key = dir.path().join("shared.key").display().to_string();
    let args = |name: &str| {
        [
            "--name".to_owned(),
            name.to_owned(),
            "--data-key-file".to_owned(),
            key.clone(),
            "--reassign-after".to_owned(),
            "1s".to_owned(),
            "--run-lease".to_owned(),
            "3s".to_owned(),
        ]
    };
    let a_args = args("coordinator-A");
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let b_args = args("coordinator-B");
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let (mut a, url_a) = spawn_coordinator(0, &db.url, &a_args, &dir.path().join("a.log"));
    let (_b, url_b) = spawn_coordinator(0, &db.url, &b_args, &dir.path().join("b.log"));
    let _probe_a = spawn_probe(
        &url_a,
        "eu",
        "probe-a",
        &[],
        &[],
        &dir.path().join("pa.log"),
    );
    wait_for_probes(&url_a, 1);
    let plan = dir.path().join("slow.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: slow\ntarget: {{base_url: \"{}\", timeout: 30s}}\nchecks:\n  - name: answers\n    http: {{method: POST, url: /api/agent/chat, json: {{message: Hi}}}}\npolicy: {{regions: [eu]}}\n",
            backend.url
        ),
    )
    .unwrap();
    let submitted = {
        let (plan, url_a) = (plan.clone(), url_a.clone());
        std::thread::spawn(move || {
            run_postflight(
                &["run", plan.to_str().unwrap(), "--coordinator", &url_a],
                &[],
            )
        })
    };
    backend.wait_for("the run's request to be in flight", |_, waiting| {
        waiting >= 1
    });
    a.kill();
    let dead = submitted.join().unwrap();
    assert_ne!(
        dead.code, 0,
        "the submitter loses its coordinator: {}",
        dead.stderr
    );
    // B's own probe of the region, for B to hand the adopted run to.
    let _probe_b = spawn_probe(
        &url_b,
        "eu",
        "probe-b",
        &[],
        &[],
        &dir.path().join("pb.log"),
    );
    wait_for_log(&dir.path().join("b.log"), "resuming run");
    let latest = || {
        run_postflight(&["runs", "--coordinator", &url_b, "-o", "json"], &[]).json()["runs"][0]
            .clone()
    };
    wait_until("the adopted run to end", Duration::from_secs(60), || {
        let status = latest()["status"].as_str().unwrap_or_default().to_owned();
        status != "running" && status != "pending"
    });
    let run_id = latest()["run_id"].as_str().unwrap().to_owned();
    let report = run_postflight(
        &["report", &run_id, "--coordinator", &url_b, "-o", "json"],
        &[],
    );
    assert_eq!(report.code, 0, "{}\n{}", report.stdout, report.stderr);
    let report = report.json();
    assert_eq!(report["status"], "PASS", "{report}");
    assert_eq!(report["requests"]["count"], 1, "{report}");
    let listed = run_postflight(&["runs", "--coordinator", &url_b, "-o", "json"], &[]).json();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "{listed}");
}

/// The owner stalls (SIGSTOP) past its lease in the middle of a run: the other coordinator
/// adopts the run and ends it with its own probe. When the owner wakes up (SIGCONT), its
/// lease renewal shows the run is no longer its own: it lets the run go and writes nothing,
/// so the run has exactly the adopter's report.
#[tokio::test]
async fn a_stalled_owner_lets_go_of_the_run_it_lost() {
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    backend.set(r#"{"delay_ms": 3000}"#);
    let key = dir.path().join("shared.key").display().to_string();
    let args = |name: &str| {
        [
            "--name".to_owned(),
            name.to_owned(),
            "--data-key-file".to_owned(),
            key.clone(),
            "--reassign-after".to_owned(),
            "1s".to_owned(),
            "--run-lease".to_owned(),
            "3s".to_owned(),
        ]
    };
    let a_args = args("coordinator-A");
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let b_args = args("coordinator-B");
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let a_log = dir.path().join("a.log");
    let b_log = dir.path().join("b.log");
    let (a, url_a) = spawn_coordinator(0, &db.url, &a_args, &a_log);
    let (_b, url_b) = spawn_coordinator(0, &db.url, &b_args, &b_log);
    let _probe_a = spawn_probe(
        &url_a,
        "eu",
        "probe-a",
        &[],
        &[],
        &dir.path().join("pa.log"),
    );
    let _probe_b = spawn_probe(
        &url_b,
        "eu",
        "probe-b",
        &[],
        &[],
        &dir.path().join("pb.log"),
    );
    wait_for_probes(&url_a, 1);
    wait_for_probes(&url_b, 1);
    let plan = dir.path().join("slow.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: slow\ntarget: {{base_url: \"{}\", timeout: 30s}}\nchecks:\n  - name: answers\n    http: {{method: POST, url: /api/agent/chat, json: {{message: Hi}}}}\npolicy: {{regions: [eu]}}\n",
            backend.url
        ),
    )
    .unwrap();
    let submitted = {
        let (plan, url_a) = (plan.clone(), url_a.clone());
        std::thread::spawn(move || {
            run_postflight(
                &["run", plan.to_str().unwrap(), "--coordinator", &url_a],
                &[],
            )
        })
    };
    backend.wait_for("the run's request to be in flight", |_, waiting| {
        waiting >= 1
    });
    let pid = a.child.id().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    wait_for_log(&b_log, "resuming run");
    let latest = || {
        run_postflight(&["runs", "--coordinator", &url_b, "-o", "json"], &[]).json()["runs"][0]
            .clone()
    };
    wait_until(
        "the adopted run to end on B",
        Duration::from_secs(60),
        || {
            let status = latest()["status"].as_str().unwrap_or_default().to_owned();
            status != "running" && status != "pending"
        },
    );
    let run_id = latest()["run_id"].as_str().unwrap().to_owned();
    let before = run_postflight(
        &["report", &run_id, "--coordinator", &url_b, "-o", "json"],
        &[],
    );
    assert_eq!(before.code, 0, "{}", before.stderr);
    signal("-CONT");
    // Whichever comes first after the wake-up: the lease renewal finds the run lost, or the
    // probe's late result ends it and the guarded write is refused.
    wait_until(
        "the stalled owner to give up the run",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&a_log).unwrap_or_default();
            log.contains("letting it go") || log.contains("its report is the adopter's")
        },
    );
    let _ = submitted.join().unwrap();
    let after = run_postflight(
        &["report", &run_id, "--coordinator", &url_b, "-o", "json"],
        &[],
    );
    assert_eq!(
        after.json()["finished_at"],
        before.json()["finished_at"],
        "the stalled owner wrote nothing over the adopter's report"
    );
    assert_eq!(after.json()["status"], "PASS");
}
