//! Several coordinators on one PostgreSQL: each run has one owner holding a lease in the
//! database, and no other coordinator touches the run while the lease holds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use postflight_e2e::{
    DemoBackend, Finished, Proc, ScratchDb, run_postflight, spawn_coordinator, spawn_probe,
    wait_for_log, wait_for_probes, wait_until,
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
        spawn_coordinator(0, &self.db.url, &args, &self.log(log))
    }

    /// A probe of region `eu` connected to `url`, waited for.
    fn probe(&self, url: &str, name: &str, log: &str) -> Proc {
        let probe = spawn_probe(url, "eu", name, &[], &[], &self.log(log));
        wait_for_probes(url, 1);
        probe
    }

    /// Submits a plan of one slow check in `eu` to `url` from another thread; `extra` are
    /// more `postflight run` arguments.
    fn submit(&self, url: &str, extra: &[&str]) -> std::thread::JoinHandle<Finished> {
        let plan = self.log("slow.yaml");
        std::fs::write(
            &plan,
            format!(
                "name: slow\ntarget: {{base_url: \"{}\", timeout: 30s}}\nchecks:\n  - name: answers\n    http: {{method: POST, url: /api/agent/chat, json: {{message: Hi}}}}\npolicy: {{regions: [eu]}}\n",
                self.backend.url
            ),
        )
        .unwrap();
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
