//! End-to-end: hostile input against the real coordinator. A hand-written probe
//! (`postflight_e2e::fake_probe`, a real gRPC client over loopback) sends every field of its
//! messages out of range; junk written straight into the database stands for what an earlier
//! version stored. Nothing may panic, the coordinator must start again on what it stored, the
//! run must end, and bogus data must never trigger an action.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use postflight_e2e::fake_probe::{FakeProbe, hello, operator, submit};
use postflight_e2e::{Proc, free_port, spawn_coordinator};
use postflight_plan::sketch::LatencySketch;
use postflight_proto::v1::probe_message::Kind;
use postflight_proto::v1::{self, CheckResult, LatencySummary, ResultBatch};
use prost::Message;
use tonic::Code;

fn plan(marker: &Path) -> String {
    format!(
        "name: hostile\nchecks:\n  - name: answers\n    http: {{url: \"http://127.0.0.1:9/\"}}\n\
         policy: {{regions: [eu]}}\nrollback:\n  on_fail: true\n  action: {{command: [touch, \"{}\"]}}\n",
        marker.display()
    )
}

/// A result a well-behaved probe could send: one failed request.
fn honest(run: &v1::Assignment, id: &str) -> CheckResult {
    CheckResult {
        result_id: id.to_owned(),
        run_id: run.run_id.clone(),
        assignment_id: run.assignment_id.clone(),
        check_index: 0,
        check_name: "answers".to_owned(),
        status: v1::CheckStatus::Fail.into(),
        message: "connection refused".to_owned(),
        duration_ms: 3.0,
        requests: 1,
        request_errors: 1,
        latency_ms: Some(LatencySummary {
            count: 1,
            p50: 2.0,
            p95: 2.0,
            p99: 2.0,
            max: 2.0,
        }),
        latency_sketch: {
            let mut s = LatencySketch::new();
            s.add(2.0);
            s.to_bytes()
        },
        finished_at_unix_ms: 1,
        requests_missing: 0,
        latencies_ms: Vec::new(),
        answer_shape: Default::default(),
        tally_passed: 0,
        tally_total: 0,
    }
}

/// Every way a result can lie, with the field the refusal must name. Each one says FAIL: if
/// any were taken, the plan's `on_fail` would roll back.
fn forgeries(run: &v1::Assignment) -> Vec<(CheckResult, &'static str)> {
    let base = honest(run, "forged");
    let with = |f: &dyn Fn(&mut CheckResult)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let summary = |f: &dyn Fn(&mut LatencySummary)| {
        with(&|r: &mut CheckResult| f(r.latency_ms.as_mut().unwrap()))
    };
    let min_above_max = {
        let mut bytes = base.latency_sketch.clone();
        let at = bytes.iter().position(|b| *b == 0x88).unwrap() + 1;
        bytes[at..at + 8].copy_from_slice(&500.0f64.to_le_bytes());
        bytes
    };
    let mut random = Vec::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..64 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        random.push(state as u8);
    }
    vec![
        (with(&|r| r.duration_ms = 1e23), "duration_ms"),
        (with(&|r| r.duration_ms = f64::INFINITY), "duration_ms"),
        (with(&|r| r.duration_ms = f64::NAN), "duration_ms"),
        (with(&|r| r.duration_ms = -1.0), "duration_ms"),
        (with(&|r| r.duration_ms = 1e300), "duration_ms"),
        (summary(&|l| l.p99 = f64::INFINITY), "latency_ms.p99"),
        (summary(&|l| l.p50 = f64::NAN), "latency_ms.p50"),
        (summary(&|l| l.max = 1e300), "latency_ms.max"),
        (summary(&|l| l.p95 = -1.0), "latency_ms.p95"),
        (summary(&|l| l.count = u64::MAX), "latency_ms.count"),
        (with(&|r| r.requests = u64::MAX), "requests"),
        (with(&|r| r.requests_missing = u64::MAX), "requests"),
        (with(&|r| r.request_errors = 7), "request_errors"),
        // Latencies of successful requests, when the only request failed.
        (with(&|r| r.latencies_ms = vec![5.0; 3]), "latencies_ms"),
        (
            with(&|r| {
                r.request_errors = 0;
                r.latencies_ms = vec![f64::NAN];
            }),
            "latencies_ms",
        ),
        (with(&|r| r.latencies_ms = vec![1.0; 2001]), "latencies_ms"),
        (
            with(&|r| {
                r.answer_shape = (0..300)
                    .map(|i| (format!("$.k{i}"), "number".into()))
                    .collect()
            }),
            "answer_shape",
        ),
        (
            with(&|r| r.answer_shape = [("$".into(), "banana".into())].into()),
            "answer_shape",
        ),
        (
            with(&|r| {
                r.tally_passed = 5;
                r.tally_total = 3;
            }),
            "tally_passed",
        ),
        (
            with(&|r| {
                r.tally_passed = 1;
                r.tally_total = 1000;
            }),
            "tally_total",
        ),
        (
            with(&|r| r.latency_sketch = min_above_max.clone()),
            "latency_sketch",
        ),
        (
            with(&|r| r.latency_sketch = random.clone()),
            "latency_sketch",
        ),
        (with(&|r| r.message = "x".repeat(1 << 20)), "message"),
        (with(&|r| r.check_name = "x".repeat(1 << 20)), "check_name"),
        (with(&|r| r.result_id = "x".repeat(1 << 20)), "result_id"),
        (with(&|r| r.result_id = String::new()), "result_id"),
        (with(&|r| r.check_index = u32::MAX), "check_index"),
        (with(&|r| r.status = 42), "status"),
    ]
}

async fn report(url: &str, run_id: &str) -> Option<v1::Report> {
    let mut client = operator(url).await;
    client
        .get_report(v1::GetReportRequest {
            run_id: run_id.to_owned(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn wait_for_report(url: &str, run_id: &str) -> v1::Report {
    for _ in 0..300 {
        if let Some(report) = report(url, run_id).await {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("run {run_id} never ended");
}

/// Rows as an earlier coordinator, without today's checks, would have stored them.
async fn store_junk(db: &Path, run: &v1::Assignment, junk: Vec<CheckResult>) {
    use sqlx::Connection;
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let count = junk.len() as i64;
    let data = ResultBatch { results: junk }.encode_to_vec();
    sqlx::query(
        "INSERT INTO result_batches (run_id, assignment_id, region, probe, received_ms, results, data) \
         VALUES (?, ?, 'eu', 'eu-1', 0, ?, ?)",
    )
    .bind(&run.run_id)
    .bind(&run.assignment_id)
    .bind(count)
    .bind(data)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_results_are_refused_and_stored_junk_never_stops_a_restart_or_acts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("postflight.db");
    let database = format!("sqlite://{}", db.display());
    let marker = dir.path().join("rolled-back");
    let log = dir.path().join("coordinator.log");
    let port = free_port();
    let extra = ["--reassign-after", "1s", "--allow-command-actions"];
    let (mut coordinator, url) = spawn_coordinator(port, &database, &extra, &log);

    // Hellos out of range are refused before anything is registered.
    let long = "p".repeat(1 << 20);
    let many_labels = v1::Hello {
        labels: (0..100)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect(),
        ..hello("eu-9", "eu")
    };
    let many_assignments = v1::Hello {
        active_assignments: vec!["a".to_owned(); 20_000],
        ..hello("eu-9", "eu")
    };
    for (bad, field) in [
        (hello(&long, "eu"), "hello.name"),
        (hello("eu-9", "e u"), "hello.region"),
        (hello("eu-9", ""), "hello.region"),
        (many_labels, "hello.labels"),
        (many_assignments, "hello.active_assignments"),
    ] {
        let status = FakeProbe::connect(&url, bad, None).await.err().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }

    // Probe lists come a page at a time; a page or token out of range is refused.
    let mut ops = operator(&url).await;
    for (request, field) in [
        (
            v1::ListProbesRequest {
                limit: 5_000,
                ..Default::default()
            },
            "limit",
        ),
        (
            v1::ListProbesRequest {
                page_token: long.clone(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let status = ops.list_probes(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }

    let mut probe = FakeProbe::connect(&url, hello("eu-1", "eu"), None)
        .await
        .unwrap();
    let run = submit(&url, &plan(&marker), 20_000).await.unwrap();
    let assignment = probe.assignment(Duration::from_secs(10)).await;
    assert_eq!(assignment.run_id, run.run_id);

    // Every forgery is refused with its field named; the stream ends, the probe reconnects
    // still holding its assignment, and the coordinator stays up.
    let reconnect = v1::Hello {
        active_assignments: vec![assignment.assignment_id.clone()],
        ..hello("eu-1", "eu")
    };
    for (forged, field) in forgeries(&assignment) {
        let status = probe
            .refused(Kind::Results(ResultBatch {
                results: vec![forged],
            }))
            .await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let expected = format!("results[0].{field}");
        assert!(
            status.message().starts_with(&expected),
            "{expected}: {}",
            status.message()
        );
        assert!(coordinator.is_running());
        probe = FakeProbe::connect(&url, reconnect.clone(), None)
            .await
            .unwrap();
    }
    // Oversized assignment messages too.
    let status = probe
        .refused(Kind::Rejected(v1::AssignmentRejected {
            assignment_id: assignment.assignment_id.clone(),
            run_id: run.run_id.clone(),
            reason: "r".repeat(1 << 20),
        }))
        .await;
    assert!(
        status.message().starts_with("rejected.reason"),
        "{status:?}"
    );
    drop(probe);

    // The coordinator dies; junk that today's checks refuse is in its database, as an
    // earlier version could have stored it. It starts again, and the run ends without acting.
    coordinator.kill();
    // (A check name is the wire's alone: storage keeps names in the plan and ignores one in
    // a row, so a forged name is no junk there.)
    let junk: Vec<CheckResult> = forgeries(&assignment)
        .into_iter()
        .filter(|(_, field)| *field != "check_name")
        .enumerate()
        .map(|(i, (mut r, _))| {
            if !r.result_id.is_empty() && r.result_id.len() < 100 {
                r.result_id = format!("junk-{i}");
            }
            r
        })
        .collect();
    store_junk(&db, &assignment, junk).await;
    let (mut coordinator, url) = spawn_coordinator(port, &database, &extra, &log);
    let report = wait_for_report(&url, &run.run_id).await;
    assert!(coordinator.is_running());
    assert_eq!(report.status, "INCONCLUSIVE", "{report:?}");
    let rollback = report.rollback.unwrap_or_default();
    assert!(
        !rollback.triggered && !marker.exists(),
        "bogus data acted: {rollback:?}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("unusable result"), "{logged}");
    assert!(!logged.contains("panicked"), "{logged}");

    // And once more on the same database, after the run ended.
    coordinator.kill();
    let (mut again, url) = spawn_coordinator(port, &database, &extra, &log);
    assert_eq!(
        report_status(&url, &run.run_id).await.as_deref(),
        Some("INCONCLUSIVE")
    );
    assert!(again.is_running());
}

async fn report_status(url: &str, run_id: &str) -> Option<String> {
    report(url, run_id).await.map(|r| r.status)
}

/// Plans that overflowed stacks, exploded aliases or filled memory, sent to a coordinator
/// with a real probe connected, and given to the CLI: each gets a clear error naming the
/// limit, and afterwards every process is up and a normal plan still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plans_get_a_clear_error_and_every_process_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let log = dir.path().join("coordinator.log");
    let (mut coordinator, url) = spawn_coordinator(0, &database, &[], &log);
    let backend = postflight_e2e::DemoBackend::spawn("healthy");
    let mut probe = postflight_e2e::spawn_probe(
        &url,
        "eu",
        "probe-eu",
        &[("AGENT_URL", &backend.url)],
        &[],
        &dir.path().join("probe.log"),
    );
    postflight_e2e::wait_for_probes(&url, 1);

    let nested = |scope: &str| {
        let mut text = String::from("http://x");
        for _ in 0..30_000 {
            text = format!("${{{scope}U:-{text}}}");
        }
        format!("name: p\nchecks:\n  - name: c\n    http: {{url: \"{text}\"}}\n")
    };
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let bomb = format!(
        "name: p\nchecks:\n  - name: c\n    http:\n      url: http://x\n      json:\n        {}\n",
        bomb.trim_end().replace('\n', "\n        ")
    );
    let deep = format!(
        "name: p\nchecks: {}{}\n",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let large = format!("name: p\n#{}\nchecks: []\n", "x".repeat(5 << 20));
    let mut many = String::from("name: p\nchecks:\n");
    for i in 0..100_000 {
        many.push_str(&format!("- {{name: c{i}, http: {{url: \"http://x\"}}}}\n"));
    }
    let command = "name: p\nchecks:\n  - name: c\n    http: {url: \"http://x\"}\nrollback:\n  on_fail: true\n  action: {command: [touch, /tmp/x]}\n".to_owned();
    let cases = [
        (
            "plain nesting",
            nested(""),
            "4:18: variable defaults are nested more than 8 deep",
        ),
        (
            "probe nesting",
            nested("probe:"),
            "4:18: variable defaults are nested more than 8 deep",
        ),
        ("alias bomb", bomb, "YAML"),
        ("deep nesting", deep, "nests more than 32 levels deep"),
        ("5 MiB", large, "a plan may be at most 4194304 bytes"),
        ("100,000 checks", many, "YAML values"),
        (
            "command action",
            command,
            "rollback.action.command: this coordinator does not run `command` actions",
        ),
    ];
    for (what, yaml, expected) in &cases {
        let status = submit(&url, yaml, 0).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().starts_with("plan_yaml: ") && status.message().contains(expected),
            "{what}: {}",
            &status.message()[..status.message().len().min(500)]
        );
        assert!(coordinator.is_running() && probe.is_running(), "{what}");
    }
    // Beyond the message limit (16 MiB), through the real grpcurl.
    let huge = serde_json::json!({"plan_yaml": "x".repeat(17 << 20)}).to_string();
    let mut grpcurl = std::process::Command::new("grpcurl")
        .args([
            "-plaintext",
            "-d",
            "@",
            url.trim_start_matches("http://"),
            "postflight.v1.ValidationService/SubmitRun",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let _ = grpcurl.stdin.take().unwrap().write_all(huge.as_bytes());
    }
    let out = grpcurl.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("OutOfRange") && said.contains("the limit is: 16777216 bytes"),
        "{said}"
    );
    assert!(coordinator.is_running() && probe.is_running());

    // The CLI: `check` and `run --local` refuse the same plans with file:line:column.
    for (what, yaml, expected) in &cases[..2] {
        let path = dir.path().join("hostile.yaml");
        std::fs::write(&path, yaml).unwrap();
        for args in [&["check"][..], &["run", "--local"][..]] {
            let mut all = args.to_vec();
            all.push(path.to_str().unwrap());
            let out = postflight_e2e::run_postflight(&all, &[]);
            assert_eq!(out.code, 2, "{what} {args:?}: {}", out.stderr);
            let (position, message) = expected.split_at(6);
            let at = format!("{}:{position}error: {message}", path.display());
            assert!(out.stderr.contains(&at), "{what} {args:?}: {}", out.stderr);
            assert!(
                out.stderr.len() < 2_000,
                "{what} {args:?}: a short error, not the plan: {} bytes, ends {:?}",
                out.stderr.len(),
                &out.stderr[out.stderr.len().saturating_sub(300)..]
            );
        }
    }
    let path = dir.path().join("huge.yaml");
    std::fs::write(&path, "#".repeat(17 << 20)).unwrap();
    let out = postflight_e2e::run_postflight(&["check", path.to_str().unwrap()], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("is larger than 4194304 bytes"),
        "{}",
        out.stderr
    );

    // Everyone is still up and a normal plan runs end to end.
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "name: good\ntarget: {base_url: \"${probe:AGENT_URL}\"}\nchecks:\n  - name: answers\n    http: {method: POST, url: /api/agent/chat, json: {message: hi}}\npolicy: {regions: [eu]}\n",
    )
    .unwrap();
    let out = postflight_e2e::run_plan_on(&good, &url, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(coordinator.is_running() && probe.is_running());
}

/// Beyond loopback without credentials the coordinator does not start, and says what to do.
#[test]
fn an_unauthenticated_coordinator_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let start = |extra: &[&str]| {
        std::process::Command::new(postflight_e2e::bin("postflight-coordinator"))
            .args(["--database", &database])
            .args(extra)
            .env_remove("POSTFLIGHT_PROBE_TOKEN")
            .env_remove("POSTFLIGHT_OPERATOR_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = start(&["--listen", "0.0.0.0:0"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(
            "refusing to listen on 0.0.0.0:0 without authenticating probes and operators"
        ) && said.contains("--insecure"),
        "{said}"
    );
    let out = start(&["--listen", "0.0.0.0:0", "--probe-token", "p"])
        .wait_with_output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("without authenticating operators"));
    let out = start(&["--listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0"])
        .wait_with_output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("status page on 0.0.0.0:0"));
    // With credentials, or --insecure, it starts.
    for extra in [
        &[
            "--listen",
            "0.0.0.0:0",
            "--probe-token",
            "p",
            "--operator-token",
            "o",
        ][..],
        &["--listen", "0.0.0.0:0", "--insecure"][..],
    ] {
        let child = start(extra);
        let mut proc = Proc::from_child(child, "coordinator");
        std::thread::sleep(Duration::from_millis(500));
        assert!(proc.is_running(), "{extra:?}");
    }
}

/// A probe that stops reading its stream (it answers HTTP/2 pings, so the connection looks
/// alive) once stalled `SubmitRun`, other probes' hellos and the end of runs. Now its queue
/// fills, it is cut off, and everyone else goes on: every `SubmitRun` returns, and another
/// probe's runs flow from assignment to report throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_stops_reading_is_cut_off_without_stalling_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let log = dir.path().join("coordinator.log");
    let (mut coordinator, url) = spawn_coordinator(0, &database, &[], &log);
    let slow = FakeProbe::connect(&url, hello("slow-1", "slow"), None)
        .await
        .unwrap();
    let _still_open = slow.stop_reading();
    let mut client = operator(&url).await;
    // Assignments carry the plan: 2 MiB each fill the slow probe's queue within a few dozen.
    let heavy = format!(
        "name: heavy\n#{}\nchecks:\n  - name: answers\n    http: {{url: \"http://127.0.0.1:9/\"}}\npolicy: {{regions: [slow]}}\n",
        "x".repeat(2 << 20)
    );
    let light = "name: light\nchecks:\n  - name: answers\n    http: {url: \"http://127.0.0.1:9/\"}\npolicy: {regions: [fast]}\n";
    // Every SubmitRun must return: a stalled one fails the test.
    let submit_promptly = |yaml: &str| {
        let (url, yaml) = (url.clone(), yaml.to_owned());
        async move {
            tokio::time::timeout(Duration::from_secs(30), submit(&url, &yaml, 120_000))
                .await
                .expect("SubmitRun stalled")
                .unwrap()
        }
    };
    let mut fast = FakeProbe::connect(&url, hello("fast-1", "fast"), None)
        .await
        .unwrap();
    let mut cut_at = None;
    for i in 0..100 {
        submit_promptly(&heavy).await;
        if i % 8 == 0 {
            // Another probe's run: assigned, answered, reported.
            let run = submit_promptly(light).await;
            let assignment = fast.assignment(Duration::from_secs(20)).await;
            assert_eq!(assignment.run_id, run.run_id);
            assert!(
                fast.send(Kind::Results(ResultBatch {
                    results: vec![honest(&assignment, &format!("fast-{i}"))],
                }))
                .await
            );
            assert!(
                fast.send(Kind::Finished(v1::AssignmentFinished {
                    assignment_id: assignment.assignment_id.clone(),
                    run_id: run.run_id.clone(),
                    results: 1,
                }))
                .await
            );
            let report = wait_for_report(&url, &run.run_id).await;
            assert_eq!(report.status, "FAIL");
        }
        if std::fs::read_to_string(&log)
            .unwrap()
            .contains("probe stopped reading its stream: disconnected")
        {
            cut_at = Some(i);
            break;
        }
    }
    let cut_at = cut_at.expect("the silent probe was never cut off");
    assert!(cut_at > 3, "cut off after {cut_at} runs: too eager");
    // After the cut, the rest goes on as before.
    let run = submit_promptly(light).await;
    let assignment = fast.assignment(Duration::from_secs(20)).await;
    assert_eq!(assignment.run_id, run.run_id);
    assert!(coordinator.is_running());
    let probes = client
        .list_probes(v1::ListProbesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let slow = probes.probes.iter().find(|p| p.name == "slow-1").unwrap();
    assert!(!slow.connected, "{slow:?}");
}
