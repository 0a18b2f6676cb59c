//! Several coordinators on one PostgreSQL: each run has one owner holding a lease in the
//! database, and no other coordinator touches the run while the lease holds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use postflight_e2e::{
    DemoBackend, Finished, Proc, ScratchDb, grpcurl, run_postflight, spawn_coordinator,
    spawn_probe, wait_for_log, wait_until,
};

/// Two coordinators' shared set-up: one database, one data key, a backend whose answers take
/// `delay_ms`, so that a run is still in flight when a coordinator is killed or stopped.
struct Scene {
    db: ScratchDb,
    dir: tempfile::TempDir,
    backend: DemoBackend,
}

impl Scene {
    async fn new(delay_ms: u64) -> Self {
        let backend = DemoBackend::spawn("healthy");
        backend.set(&format!(r#"{{"delay_ms": {delay_ms}}}"#));
        Self {
            db: ScratchDb::create().await,
            dir: tempfile::tempdir().unwrap(),
            backend,
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A coordinator named `name` on the shared database, with `lease` as `--run-lease`
    /// (the default when `None`), logging to `log`.
    fn coordinator(&self, name: &str, lease: Option<&str>, log: &str) -> (Proc, String) {
        self.coordinator_with(name, lease, log, &[])
    }

    /// [`Scene::coordinator`] with more arguments.
    fn coordinator_with(
        &self,
        name: &str,
        lease: Option<&str>,
        log: &str,
        extra: &[&str],
    ) -> (Proc, String) {
        let key = self.log("shared.key").display().to_string();
        let mut args = vec![
            "--name",
            name,
            "--data-key-file",
            &key,
            "--reassign-after",
            "1s",
        ];
        if let Some(lease) = lease {
            args.extend(["--run-lease", lease]);
        }
        args.extend(extra);
        spawn_coordinator(0, &self.db.url, &args, &self.log(log))
    }

    /// A probe of region `eu` connected to `url`, waited for.
    fn probe(&self, url: &str, name: &str, log: &str) -> Proc {
        self.probe_in("eu", url, name, log)
    }

    /// A probe of `region` using the coordinators `urls` (comma-separated, the first
    /// preferred), waited for until the first lists it connected.
    fn probe_in(&self, region: &str, urls: &str, name: &str, log: &str) -> Proc {
        let probe = spawn_probe(urls, region, name, &[], &[], &self.log(log));
        let first = urls.split(',').next().unwrap();
        wait_until(
            &format!("probe {name} to connect"),
            Duration::from_secs(30),
            || connected(first).contains(&name.to_owned()),
        );
        probe
    }

    /// Writes the plan `name` against the scene's backend: its `target`, then `rest`.
    fn plan(&self, name: &str, rest: &str) -> PathBuf {
        let plan = self.log(&format!("{name}.yaml"));
        let target = format!(
            "name: {name}\ntarget: {{base_url: \"{}\", timeout: 30s}}\n",
            self.backend.url
        );
        std::fs::write(&plan, target + rest).unwrap();
        plan
    }

    /// Submits a plan of one slow check in `eu` to `url` from another thread; `extra` are
    /// more `postflight run` arguments.
    fn submit(&self, url: &str, extra: &[&str]) -> std::thread::JoinHandle<Finished> {
        let plan = self.plan(
            "slow",
            "checks:\n  - name: answers\n    http: {method: POST, url: /api/agent/chat, json: {message: Hi}}\npolicy: {regions: [eu]}\n",
        );
        let mut args: Vec<String> = ["run", plan.to_str().unwrap(), "--coordinator", url]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let submitted = std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_postflight(&args, &[])
        });
        self.backend
            .wait_for("the run's request to be in flight", |_, waiting| {
                waiting >= 1
            });
        submitted
    }
}

/// Waits until the newest run `url` lists has ended; its id.
fn newest_run_once_ended(url: &str, what: &str) -> String {
    let latest = || {
        run_postflight(&["runs", "--coordinator", url, "-o", "json"], &[]).json()["runs"][0].clone()
    };
    wait_until(what, Duration::from_secs(60), || {
        let status = latest()["status"].as_str().unwrap_or_default().to_owned();
        status != "running" && status != "pending"
    });
    latest()["run_id"].as_str().unwrap().to_owned()
}

/// Names of the probes `url` lists as connected (to it or to another coordinator).
fn connected(url: &str) -> Vec<String> {
    let out = run_postflight(&["probes", "--coordinator", url, "-o", "json"], &[]);
    if out.code != 0 {
        return Vec::new();
    }
    out.json()["probes"]
        .as_array()
        .map(|probes| {
            probes
                .iter()
                .filter(|p| p["connected"] == true)
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How many results the database holds for a run (`GetRun` of an ended run counts the
/// stored rows, so a result stored twice would show).
fn stored_results(run_id: &str, url: &str) -> u64 {
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        &format!(r#"{{"run_id": "{run_id}"}}"#),
        url.trim_start_matches("http://"),
        "postflight.v1.ValidationService/GetRun",
    ]);
    assert!(ok, "{out}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    run["results"].as_u64().unwrap_or(0)
}

fn report(run_id: &str, url: &str) -> Finished {
    run_postflight(&["report", run_id, "--coordinator", url, "-o", "json"], &[])
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A run submitted to coordinator A, whose one probe is busy with it, while coordinator B on
/// the same database is killed (-9) and started again: B leaves A's run alone (it neither
/// resumes it nor moves its assignment away from A's probe), and the run ends on A with one
/// report. Before run owners, B resumed every unfinished run of the database.
#[tokio::test]
async fn a_restarting_coordinator_adopts_none_of_a_live_ones_runs() {
    let scene = Scene::new(6000).await;
    let (_a, url_a) = scene.coordinator("coordinator-A", None, "a.log");
    let _probe = scene.probe(&url_a, "probe-a", "probe-a.log");
    let (mut b, _) = scene.coordinator("coordinator-B", None, "b.log");
    let submitted = scene.submit(&url_a, &["-o", "json"]);

    b.kill();
    let (_b2, _) = scene.coordinator("coordinator-B", None, "b2.log");
    wait_for_log(
        &scene.log("b2.log"),
        "run owned by a live coordinator: not adopting it",
    );

    let out = submitted.join().unwrap();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["status"], "PASS", "{report}");
    assert_eq!(
        report["requests"]["count"], 1,
        "one request, never repeated elsewhere"
    );
    let b2 = read(&scene.log("b2.log"));
    assert!(!b2.contains("resuming run"), "{b2}");
    assert!(!b2.contains("moving its assignment"), "{b2}");
    let a = read(&scene.log("a.log"));
    assert!(!a.contains("moving its assignment"), "{a}");
}

/// The owner of a run is killed (-9) mid-run; another coordinator on the database adopts the
/// run once the owner's lease expired, moves its assignment to a probe of the region
/// connected to it, and ends the run with one report: the request the dead coordinator's
/// probe was making is not counted, nothing is counted twice.
#[tokio::test]
async fn a_dead_coordinators_run_is_adopted_after_its_lease() {
    let scene = Scene::new(3000).await;
    let (mut a, url_a) = scene.coordinator("coordinator-A", Some("3s"), "a.log");
    let (_b, url_b) = scene.coordinator("coordinator-B", Some("3s"), "b.log");
    let _probe_a = scene.probe(&url_a, "probe-a", "pa.log");
    let submitted = scene.submit(&url_a, &[]);
    a.kill();
    let dead = submitted.join().unwrap();
    assert_ne!(
        dead.code, 0,
        "the submitter loses its coordinator: {}",
        dead.stderr
    );
    // B's own probe of the region, for B to hand the adopted run to.
    let _probe_b = scene.probe(&url_b, "probe-b", "pb.log");
    wait_for_log(&scene.log("b.log"), "resuming run");
    let run_id = newest_run_once_ended(&url_b, "the adopted run to end");
    let report = report(&run_id, &url_b);
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
    let scene = Scene::new(3000).await;
    let (a, url_a) = scene.coordinator("coordinator-A", Some("3s"), "a.log");
    let (_b, url_b) = scene.coordinator("coordinator-B", Some("3s"), "b.log");
    let _probe_a = scene.probe(&url_a, "probe-a", "pa.log");
    let _probe_b = scene.probe(&url_b, "probe-b", "pb.log");
    let submitted = scene.submit(&url_a, &[]);
    let pid = a.child.id().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    wait_for_log(&scene.log("b.log"), "resuming run");
    let run_id = newest_run_once_ended(&url_b, "the adopted run to end on B");
    let before = report(&run_id, &url_b);
    assert_eq!(before.code, 0, "{}", before.stderr);
    signal("-CONT");
    // Whichever comes first after the wake-up: the lease renewal finds the run lost, or the
    // probe's late result ends it and the guarded write is refused.
    wait_until(
        "the stalled owner to give up the run",
        Duration::from_secs(30),
        || {
            let log = read(&scene.log("a.log"));
            log.contains("letting it go") || log.contains("its report is the adopter's")
        },
    );
    let _ = submitted.join().unwrap();
    let after = report(&run_id, &url_b);
    assert_eq!(
        after.json()["finished_at"],
        before.json()["finished_at"],
        "the stalled owner wrote nothing over the adopter's report"
    );
    assert_eq!(after.json()["status"], "PASS");
}

/// Three coordinators on one PostgreSQL and six probes spread over them, two per region, so
/// that no coordinator has a probe of every region (A has none in `ap`). A run of every probe
/// submitted to A completes on A with every probe's results: four of its six assignments go
/// to probes connected to B and C, which relay them and store their results for A.
#[tokio::test]
async fn a_run_reaches_the_probes_of_other_coordinators() {
    let scene = Scene::new(0).await;
    let (_a, url_a) = scene.coordinator("coordinator-A", None, "a.log");
    let (_b, url_b) = scene.coordinator("coordinator-B", None, "b.log");
    let (_c, url_c) = scene.coordinator("coordinator-C", None, "c.log");
    let _probes = [
        scene.probe_in("eu", &url_a, "eu-1", "eu-1.log"),
        scene.probe_in("us", &url_a, "us-1", "us-1.log"),
        scene.probe_in("us", &url_b, "us-2", "us-2.log"),
        scene.probe_in("ap", &url_b, "ap-1", "ap-1.log"),
        scene.probe_in("ap", &url_c, "ap-2", "ap-2.log"),
        scene.probe_in("eu", &url_c, "eu-2", "eu-2.log"),
    ];
    wait_until(
        "coordinator A to see all six probes",
        Duration::from_secs(30),
        || connected(&url_a).len() == 6,
    );
    // Two checks in regions eu, us and ap, executed by every probe of each region.
    let plan = scene.plan(
        "every-probe",
        "checks:\n  - name: answers\n    http: {method: POST, url: /api/agent/chat, json: {message: Hi}}\n  - name: answers-again\n    http: {method: POST, url: /api/agent/chat, json: {message: Again}}\npolicy: {regions: [eu, us, ap], probes_per_region: all}\n",
    );
    let out = run_postflight(
        &[
            "run",
            plan.to_str().unwrap(),
            "--coordinator",
            &url_a,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["status"], "PASS", "{report}");
    for check in report["checks"].as_array().unwrap() {
        for region in ["eu", "us", "ap"] {
            let result = &check["regions"][region];
            assert_eq!(result["status"], "pass", "{region}: {report}");
            assert_eq!(
                result["latency_ms"]["count"], 2,
                "both probes of {region} answered {}: {report}",
                check["name"]
            );
        }
    }
    let (requests, _) = scene.backend.stats();
    assert_eq!(requests, 12, "two checks on each of six probes, each once");
    let run_id = report["run_id"].as_str().unwrap();
    assert_eq!(stored_results(run_id, &url_a), 12);
    let a = read(&scene.log("a.log"));
    assert_eq!(
        a.matches("relay=coordinator-").count(),
        4,
        "us-2, ap-1 (B), ap-2 and eu-2 (C) are reached through their coordinators:\n{a}"
    );
    for (log, relayed) in [("b.log", ["us-2", "ap-1"]), ("c.log", ["ap-2", "eu-2"])] {
        let text = read(&scene.log(log));
        for probe in relayed {
            assert!(
                text.lines().any(|line| line
                    .contains("relaying an assignment of another coordinator's run")
                    && line.contains(&format!("probe={probe} "))),
                "{log} relays {probe}'s assignment:\n{text}"
            );
        }
    }
}

/// The owner of a run is killed (-9) while each region's one probe is in the middle of its
/// checks. Every probe lists the three coordinators (its own first): the dead owner's probe
/// moves to the next one, which takes over relaying its assignment, and the probe replays
/// what was not acknowledged there. Once the owner's lease expired another coordinator adopts
/// the run, reads back what the relays stored, and ends it with one report. Counted: every
/// probe made each request once (nothing re-executed elsewhere), the database holds each
/// result once (a replay of what the dead owner stored is recognised), and the failing
/// run's rollback ran once, recorded once, by the adopter.
#[tokio::test]
async fn an_owners_death_loses_no_result_and_counts_none_twice() {
    let scene = Scene::new(2500).await;
    let marker = scene.log("rolled.txt");
    let allow = ["--allow-command-actions"];
    let (mut a, url_a) = scene.coordinator_with("coordinator-A", Some("3s"), "a.log", &allow);
    let (_b, url_b) = scene.coordinator_with("coordinator-B", Some("3s"), "b.log", &allow);
    let (_c, url_c) = scene.coordinator_with("coordinator-C", Some("3s"), "c.log", &allow);
    let _probes = [
        scene.probe_in(
            "eu",
            &format!("{url_a},{url_b},{url_c}"),
            "eu-1",
            "eu-1.log",
        ),
        scene.probe_in(
            "us",
            &format!("{url_b},{url_c},{url_a}"),
            "us-1",
            "us-1.log",
        ),
        scene.probe_in(
            "ap",
            &format!("{url_c},{url_a},{url_b}"),
            "ap-1",
            "ap-1.log",
        ),
    ];
    wait_until("A to see the three probes", Duration::from_secs(30), || {
        connected(&url_a).len() == 3
    });
    let plan = scene.plan(
        "failing",
        &format!(
            "checks:\n  - name: answers\n    http: {{method: POST, url: /api/agent/chat, json: {{message: Hi}}}}\n  - name: knows-the-invoice\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: Hello}}\n      expect: {{json: [{{path: $.response, contains: NEVER-SAID}}]}}\npolicy: {{regions: [eu, us, ap]}}\nrollback:\n  on_fail: true\n  action: {{command: [sh, -c, \"echo rolled >> {}\"]}}\n  cooldown: 1h\n",
            marker.display()
        ),
    );
    // Submitted without waiting for the report (A will not be there to send it).
    let request = serde_json::json!({
        "plan_yaml": std::fs::read_to_string(&plan).unwrap(),
        "origin": "failing.yaml",
    });
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        &request.to_string(),
        url_a.trim_start_matches("http://"),
        "postflight.v1.ValidationService/SubmitRun",
    ]);
    assert!(ok, "{out}");
    scene
        .backend
        .wait_for("every probe's first request in flight", |_, waiting| {
            waiting >= 3
        });
    a.kill();
    wait_for_log(
        &scene.log("b.log"),
        "a probe brought an assignment of another coordinator's run: relaying it",
    );
    let run_id = newest_run_once_ended(&url_b, "the run to end on its adopter");
    let report = report(&run_id, &url_c);
    assert_eq!(report.code, 1, "a FAIL report: {}", report.stderr);
    let report = report.json();
    assert_eq!(report["status"], "FAIL", "{report}");
    for check in report["checks"].as_array().unwrap() {
        for region in ["eu", "us", "ap"] {
            assert_eq!(
                check["regions"][region]["latency_ms"]["count"], 1,
                "{region} delivered {}: {report}",
                check["name"]
            );
        }
    }
    assert_eq!(report["requests"]["missing"], 0, "{report}");
    let (requests, _) = scene.backend.stats();
    assert_eq!(requests, 6, "each probe made each request once");
    assert_eq!(
        stored_results(&run_id, &url_b),
        6,
        "each result stored once"
    );
    assert_eq!(
        std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .lines()
            .count(),
        1,
        "one rollback"
    );
    let executor = report["rollback"]["executed_by"]
        .as_str()
        .unwrap_or_default();
    assert!(
        executor == "coordinator-B" || executor == "coordinator-C",
        "the adopter acted: {report}"
    );
    let logs: String = ["a.log", "b.log", "c.log"]
        .iter()
        .map(|log| read(&scene.log(log)))
        .collect();
    assert_eq!(logs.matches("executing rollback").count(), 1, "{logs}");
    assert_eq!(
        logs.matches("resuming run").count(),
        1,
        "adopted once: {logs}"
    );
}
