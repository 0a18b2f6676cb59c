//! Comparing with before, end to end: `postflight baseline --local` against the real demo
//! backend (a real HTTP server), then `run --local --against` after the "migration".

use std::path::Path;

use postflight_e2e::{DemoBackend, Finished, run_postflight};
use serde_json::Value;

/// `postflight ARGS` with the CLI's state (ledger, baselines) in `state`.
fn cli(state: &Path, args: &[&str]) -> Finished {
    run_postflight(args, &[("POSTFLIGHT_STATE_DIR", state.to_str().unwrap())])
}

/// A plan with a latency check of 20 samples (fixed threshold 3 s, far above what the test
/// service takes) and an http check of one request.
fn plan(dir: &Path, url: &str) -> String {
    let path = dir.join("plan.yaml");
    std::fs::write(
        &path,
        format!(
            "name: checkout\ntarget: {{base_url: \"{url}\"}}\nchecks:\n  - name: chat-latency\n    latency:\n      request: {{method: POST, url: /api/agent/chat, json: {{message: Hi}}}}\n      samples: 20\n      pass_below: 3s\n  - name: answers\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: Hi}}\n      expect: {{status: 200}}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn comparison<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["baseline"]["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no comparison of {check}: {report}"))
}

#[test]
fn a_slower_service_fails_by_baseline_and_an_unchanged_one_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let backend = DemoBackend::spawn("healthy");
    backend.set(r#"{"delay_ms": 20}"#);
    let plan = plan(dir.path(), &backend.url);

    // Before the migration.
    let taken = cli(
        &state,
        &[
            "baseline",
            &plan,
            "--local",
            "--migration",
            "m-42",
            "-o",
            "json",
        ],
    );
    assert_eq!(taken.code, 0, "{}\n{}", taken.stdout, taken.stderr);
    let taken = taken.json();
    let id = taken["baseline"]["baseline_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(taken["baseline"]["migration"], "m-42");
    assert_eq!(
        taken["baseline"]["latencies"], 21,
        "20 samples and 1 http request"
    );
    let listed = cli(&state, &["baselines", "--local", "-o", "json"]).json();
    assert_eq!(listed["baselines"][0]["baseline_id"], id.as_str());
    assert_eq!(listed["baselines"][0]["plan"], "checkout");

    // The same service, again and again: no false alarm from noise.
    for trial in 0..20 {
        let out = cli(
            &state,
            &["run", &plan, "--local", "--against", "latest", "-o", "json"],
        );
        assert_eq!(out.code, 0, "trial {trial}: {}\n{}", out.stdout, out.stderr);
        let report = out.json();
        assert_eq!(report["status"], "PASS", "trial {trial}: {report}");
        assert_eq!(report["baseline"]["baseline_id"], id.as_str());
        let latency = comparison(&report, "chat-latency");
        assert_ne!(latency["decision"], "worse", "trial {trial}: {latency}");
        assert_eq!(latency["latency"]["test"], "mann-whitney-u");
        // One request per run: too few to compare, which changes nothing.
        let answers = comparison(&report, "answers");
        assert_eq!(answers["decision"], "inconclusive", "{answers}");
    }

    // After the migration: 40% slower, still far under the fixed 3 s threshold.
    backend.set(r#"{"delay_ms": 28}"#);
    let out = cli(
        &state,
        &["run", &plan, "--local", "--against", &id, "-o", "json"],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["status"], "FAIL");
    let latency = comparison(&report, "chat-latency");
    assert_eq!(latency["decision"], "worse", "{latency}");
    assert!(latency["latency"]["p_value"].as_f64().unwrap() < 0.01);
    assert!(latency["latency"]["increase"].as_f64().unwrap() > 0.2);
    let reason = latency["reason"].as_str().unwrap();
    assert!(
        reason.contains("Mann-Whitney p < 0.0001: slower"),
        "{reason}"
    );
    let check = &report["checks"][0];
    assert_eq!(check["status"], "fail");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("worse than baseline {id}")),
        "{message}"
    );
    assert!(
        check["latency_ms"]["p95"].as_f64().unwrap() < 3000.0,
        "the fixed threshold alone would have passed it"
    );
    // The table says the same in words.
    let table = cli(&state, &["run", &plan, "--local", "--against", &id]);
    assert_eq!(table.code, 1);
    assert!(
        table
            .stdout
            .contains(&format!("compared with baseline {id} (taken ")),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("  WORSE  chat-latency · local: p50 "),
        "{}",
        table.stdout
    );
}

#[test]
fn only_a_passing_run_becomes_a_baseline_and_bad_references_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let backend = DemoBackend::spawn("errors");
    let plan = plan(dir.path(), &backend.url);
    let out = cli(&state, &["baseline", &plan, "--local"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("error: not stored as a baseline: the run was FAIL; a baseline must be a run that passed (or only warned)"),
        "{}",
        out.stderr
    );
    let none = cli(&state, &["baselines", "--local"]);
    assert_eq!(none.code, 0);
    assert!(
        none.stdout.starts_with("no baselines yet"),
        "{}",
        none.stdout
    );

    let out = cli(&state, &["run", &plan, "--local", "--against", "latest"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("plan checkout has no baseline yet"),
        "{}",
        out.stderr
    );
    let out = cli(
        &state,
        &["run", &plan, "--local", "--against", "01234567-no-such"],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("no baseline 01234567-no-such (see `postflight baselines --local`)"),
        "{}",
        out.stderr
    );
}

/// The same on a coordinator with probes in two regions: the baseline is kept by the
/// coordinator (listed by the CLI and by grpcurl), and a run against it fails the one region
/// that became slower while the other stays the same.
#[test]
fn a_coordinator_keeps_baselines_and_compares_each_region() {
    use postflight_e2e::{grpcurl, spawn_coordinator, spawn_probe, wait_for_probes};

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let eu = DemoBackend::spawn("healthy");
    let us = DemoBackend::spawn("healthy");
    eu.set(r#"{"delay_ms": 20}"#);
    us.set(r#"{"delay_ms": 20}"#);
    let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let (_coordinator, url) = spawn_coordinator(0, &db, &[], &dir.path().join("coordinator.log"));
    let _probes: Vec<_> = [("eu", "eu-1", &eu.url), ("us", "us-1", &us.url)]
        .iter()
        .map(|(region, name, backend)| {
            spawn_probe(
                &url,
                region,
                name,
                &[("AGENT_URL", backend.as_str())],
                &[],
                &dir.path().join(format!("{name}.log")),
            )
        })
        .collect();
    wait_for_probes(&url, 2);
    let plan = dir.path().join("regional.yaml");
    std::fs::write(
        &plan,
        "name: regional\ntarget: {base_url: \"${probe:AGENT_URL}\"}\nchecks:\n  - name: chat-latency\n    latency:\n      request: {method: POST, url: /api/agent/chat, json: {message: Hi}}\n      samples: 20\n      pass_below: 3s\npolicy: {regions: [eu, us], quorum: any}\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();

    let taken = cli(
        &state,
        &[
            "baseline",
            plan,
            "--coordinator",
            &url,
            "--migration",
            "m-7",
            "-o",
            "json",
        ],
    );
    assert_eq!(taken.code, 0, "{}\n{}", taken.stdout, taken.stderr);
    let taken = taken.json();
    let id = taken["baseline"]["baseline_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(taken["baseline"]["migration"], "m-7");
    assert_eq!(taken["baseline"]["latencies"], 40, "20 per region");
    let listed = cli(&state, &["baselines", "--coordinator", &url, "-o", "json"]).json();
    assert_eq!(listed["baselines"][0]["baseline_id"], id.as_str());
    let (ok, text) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"plan": "regional"}"#,
        url.trim_start_matches("http://"),
        "postflight.v1.ValidationService/ListBaselines",
    ]);
    assert!(ok && text.contains(&id), "{text}");

    // Unchanged: the same in both regions.
    let out = cli(
        &state,
        &[
            "run",
            plan,
            "--coordinator",
            &url,
            "--against",
            "latest",
            "-o",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let comparisons = report["baseline"]["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 2, "{report}");
    assert!(
        comparisons.iter().all(|c| c["decision"] != "worse"),
        "{report}"
    );

    // One region 40% slower, far under the fixed threshold.
    us.set(r#"{"delay_ms": 28}"#);
    let out = cli(
        &state,
        &[
            "run",
            plan,
            "--coordinator",
            &url,
            "--against",
            &id,
            "-o",
            "json",
        ],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let region = |name: &str| {
        report["baseline"]["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["region"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(region("us")["decision"], "worse", "{report}");
    assert_ne!(region("eu")["decision"], "worse", "{report}");
    assert_eq!(report["checks"][0]["regions"]["us"]["status"], "fail");
    assert_eq!(report["checks"][0]["regions"]["eu"]["status"], "pass");

    // A baseline of another plan, or one that does not exist, is refused before anything runs.
    let out = cli(
        &state,
        &[
            "run",
            plan,
            "--coordinator",
            &url,
            "--against",
            "no-such-id",
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no baseline with id no-such-id"),
        "{}",
        out.stderr
    );
}

/// `answers: same_shape`: the status check still passes when tool calls vanish from the
/// agent's answers, but the answer lost the shape it had in the baseline, so the check fails.
#[test]
fn an_answer_that_lost_its_tool_calls_fails_with_same_shape() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let backend = DemoBackend::spawn("healthy");
    let plan = dir.path().join("shape.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: shape\ntarget: {{base_url: \"{}\"}}\nchecks:\n  - name: invoice-tool\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: \"Look up invoice INV-001\"}}\n      expect: {{status: 200}}\nbaseline: {{answers: same_shape}}\n",
            backend.url
        ),
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let taken = cli(&state, &["baseline", plan, "--local"]);
    assert_eq!(taken.code, 0, "{}\n{}", taken.stdout, taken.stderr);
    let same = cli(
        &state,
        &["run", plan, "--local", "--against", "latest", "-o", "json"],
    );
    assert_eq!(same.code, 0, "{}\n{}", same.stdout, same.stderr);
    let report = same.json();
    assert_eq!(
        comparison(&report, "invoice-tool")["answers"]["decision"],
        "same"
    );

    backend.set(r#"{"tools_broken": true}"#);
    let out = cli(
        &state,
        &["run", plan, "--local", "--against", "latest", "-o", "json"],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let c = comparison(&report, "invoice-tool");
    assert_eq!(c["decision"], "worse", "{c}");
    let changes: Vec<&str> = c["answers"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        changes.contains(&"$.tool_calls[].tool (string) is missing"),
        "{changes:?}"
    );
    let message = report["checks"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("status 200"), "{message}");
    assert!(message.contains("answer changed shape: "), "{message}");
}

/// `monitor --against`: every round is compared with the baseline, and rounds of a service
/// that became slower fail until the monitor's rollback fires, locally and on a coordinator.
#[test]
fn a_monitor_against_a_baseline_rolls_back_a_slower_service() {
    use postflight_e2e::coordinator_with_one_probe;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let backend = DemoBackend::spawn("healthy");
    backend.set(r#"{"delay_ms": 20}"#);
    let marker = dir.path().join("rolled-back");
    let plan = dir.path().join("watched.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: watched\ntarget: {{base_url: \"{}\"}}\nchecks:\n  - name: chat-latency\n    latency:\n      request: {{method: POST, url: /api/agent/chat, json: {{message: Hi}}}}\n      samples: 12\n      pass_below: 3s\nmonitor:\n  phases: [{{every: 1s, for: 20s}}]\nrollback:\n  failing_rounds: 2\n  cooldown: 1s\n  action: {{command: [sh, -c, \"echo rolled >> {}\"]}}\n",
            backend.url,
            marker.display()
        ),
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let taken = cli(&state, &["baseline", plan, "--local"]);
    assert_eq!(taken.code, 0, "{}\n{}", taken.stdout, taken.stderr);
    backend.set(r#"{"delay_ms": 28}"#);
    let out = cli(&state, &["monitor", plan, "--local", "--against", "latest"]);
    assert_eq!(
        out.code, 1,
        "a rollback ends it: {}\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "rolled\n");

    // The same on a coordinator: its own baseline, taken by its probe.
    backend.set(r#"{"delay_ms": 20}"#);
    let (_coordinator, url, _probe) =
        coordinator_with_one_probe(dir.path(), &["--allow-command-actions"], &[]);
    let taken = cli(&state, &["baseline", plan, "--coordinator", &url]);
    assert_eq!(taken.code, 0, "{}\n{}", taken.stdout, taken.stderr);
    backend.set(r#"{"delay_ms": 28}"#);
    std::fs::remove_file(&marker).unwrap();
    let out = cli(
        &state,
        &[
            "monitor",
            plan,
            "--coordinator",
            &url,
            "--against",
            "latest",
            "--migration",
            "m-5",
        ],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "rolled\n");
}
