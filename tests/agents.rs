//! Checks for agents, end to end: repeated checks of a nondeterministic service (`repeat`,
//! `pass_when`) are judged on their pass count (the coordinator accepts the repeated requests
//! as the check's own), tool calls are asserted on the calls themselves, multi-step flows log
//! in, chat, verify their row in the database and clean up, golden sets are replayed with
//! their pass rate, and network checks (`tcp`, `grpc_health`) run on a probe like any other.

use postflight_e2e::{DemoBackend, coordinator_with_one_probe, run_postflight};

#[test]
fn a_repeated_check_passes_by_majority_on_a_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let (_coordinator, url, _probe) = coordinator_with_one_probe(dir.path(), &[], &[]);
    let plan = |pass_when: &str| {
        let path = dir.path().join(format!("agent-{pass_when}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: agent\ntarget: {{base_url: \"{}\"}}\nchecks:\n  - name: answers\n    repeat: 3\n    pass_when: {pass_when}\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: Hi}}\n      expect: {{status: 200}}\n  - name: port\n    tcp: {{address: \"{}\"}}\n",
                backend.url,
                backend.url.trim_start_matches("http://")
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    // The next call fails, the two after it pass: one failure in three runs.
    backend.set(r#"{"fail_next": 1}"#);
    let out = run_postflight(
        &["run", &plan("all"), "--coordinator", &url, "-o", "json"],
        &[],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let message = report["checks"][0]["message"].as_str().unwrap();
    assert!(message.contains("passed 2 of 3 runs (pass^3)"), "{message}");
    assert_eq!(report["checks"][0]["requests"]["count"], 3);
    // The pass count, as numbers, for the check and for its region.
    let tally = serde_json::json!({"passed": 2, "total": 3});
    assert_eq!(report["checks"][0]["tally"], tally);
    let region = report["checks"][0]["regions"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(region["tally"], tally);
    assert!(
        report["checks"][1].get("tally").is_none(),
        "a check that neither repeats nor replays cases has no tally"
    );
    // A tcp check runs on the probe like any other.
    assert_eq!(report["checks"][1]["kind"], "tcp");
    assert_eq!(report["checks"][1]["status"], "pass", "{report}");
    backend.set(r#"{"fail_next": 1}"#);
    let out = run_postflight(
        &[
            "run",
            &plan("majority"),
            "--coordinator",
            &url,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let message = out.json()["checks"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("passed 2 of 3 runs (pass_when majority: 2 needed)"),
        "{message}"
    );
}

/// `expect.tools` against the demo agent backend (its answers carry OpenAI-style tool
/// calls): the invoice tool is called with the invoice's id while tools work; when they
/// break, the check fails and says which calls it saw.
#[test]
fn tool_calls_are_asserted_on_the_agents_answers() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let plan = dir.path().join("tools.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: tools\ntarget: {{base_url: \"{}\"}}\nchecks:\n  - name: invoice-tool\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: \"Look up invoice INV-001\"}}\n      expect:\n        tools: {{called: [lookup_invoice], args: {{lookup_invoice: {{id: INV-001}}}}, not_called: [\"delete_*\"], max_calls: 2}}\n",
            backend.url
        ),
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let out = run_postflight(&["run", plan, "--local", "-o", "json"], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    backend.set(r#"{"tools_broken": true}"#);
    let out = run_postflight(&["run", plan, "--local", "-o", "json"], &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let message = out.json()["checks"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        message,
        "no tool was called, expected lookup_invoice(id=INV-001)"
    );
}

/// The example plan of tool calls passes against the demo agent backend.
#[test]
fn the_tool_calls_example_passes_against_the_demo_backend() {
    let backend = DemoBackend::spawn("healthy");
    let example = postflight_e2e::repo_root().join("examples/agent-tool-calls.yaml");
    let out = run_postflight(
        &["run", example.to_str().unwrap(), "--local", "-o", "json"],
        &[("AGENT_URL", &backend.url)],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let message = out.json()["checks"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("passed 5 of 5 runs"), "{message}");
}

/// A `grpc_health` check against a real coordinator, which serves `grpc.health.v1`: the
/// server and its validation service are SERVING, a service it does not have is not.
#[test]
fn grpc_health_checks_ask_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, url, _probe) = coordinator_with_one_probe(dir.path(), &[], &[]);
    let address = url.trim_start_matches("http://");
    let plan = dir.path().join("grpc.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: grpc\nchecks:\n  - name: server\n    grpc_health: {{address: \"{address}\"}}\n  - name: validation\n    grpc_health: {{address: \"{address}\", service: postflight.v1.ValidationService}}\n  - name: missing\n    severity: warning\n    grpc_health: {{address: \"{address}\", service: billing.v1.Billing}}\n"
        ),
    )
    .unwrap();
    let checked = run_postflight(&["check", plan.to_str().unwrap()], &[]);
    assert!(
        checked
            .stdout
            .contains("is valid: 3 checks (3 grpc_health)"),
        "{}",
        checked.stdout
    );
    let out = run_postflight(
        &["run", plan.to_str().unwrap(), "--local", "-o", "json"],
        &[],
    );
    let report = out.json();
    assert_eq!(report["checks"][0]["status"], "pass", "{report}");
    assert_eq!(report["checks"][1]["status"], "pass", "{report}");
    assert_eq!(report["checks"][2]["status"], "fail", "{report}");
    assert!(
        report["checks"][2]["message"]
            .as_str()
            .unwrap()
            .ends_with("is unknown to its health service"),
        "{report}"
    );
    assert_eq!(
        report["warnings"], 1,
        "the failing check has warning severity"
    );
    assert_eq!(
        out.code, 0,
        "one warning is within the policy's max_warnings"
    );
    // The same plan on the coordinator's probe: the checks travel in the canonical plan.
    let remote = run_postflight(
        &[
            "run",
            plan.to_str().unwrap(),
            "--coordinator",
            &url,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(remote.code, 0, "{}\n{}", remote.stdout, remote.stderr);
    let report = remote.json();
    let statuses: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pass", "pass", "fail"]);
}

/// Sessions and messages the backend wrote, read straight from its SQLite file: what the
/// flow's own database step claims, confirmed from outside postflight.
fn messages_with_a_session(database: &std::path::Path) -> i64 {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM messages WHERE session_token IS NOT NULL').fetchone()[0])",
        ])
        .arg(database)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// `examples/agent-flow.yaml` on a coordinator's probe against the demo backend: log in,
/// capture the session, chat within it, verify in the database (the session as a bind
/// parameter) that the chat wrote its row, log out. When the chat step fails, the step
/// after it is skipped and the `always` clean-up still logs out; without `always` the
/// session would stay open. The session token never appears in a report.
#[test]
fn a_flow_logs_in_chats_verifies_its_row_and_cleans_up_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("agent.db");
    let backend = DemoBackend::spawn_with_database(&database);
    let (_coordinator, url, _probe) = coordinator_with_one_probe(dir.path(), &[], &[]);
    let example = postflight_e2e::repo_root().join("examples/agent-flow.yaml");
    let database_url = format!("sqlite:{}", database.display());
    let env = [
        ("AGENT_URL", backend.url.as_str()),
        ("DATABASE_URL", database_url.as_str()),
    ];
    let run = |plan: &std::path::Path| {
        let out = run_postflight(
            &[
                "run",
                plan.to_str().unwrap(),
                "--coordinator",
                &url,
                "-o",
                "json",
            ],
            &env,
        );
        assert!(
            !out.stdout.contains("sess-"),
            "a session token leaked: {}",
            out.stdout
        );
        out
    };

    let out = run(&example);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let check = &report["checks"][0];
    assert_eq!(check["kind"], "steps");
    let message = check["message"].as_str().unwrap();
    assert!(message.starts_with("4 steps passed: login "), "{message}");
    assert!(
        message.contains(
            "message-stored (`SELECT count(*) FROM messages WHERE session_token = $1 AND id = $2` = 1 (= 1))"
        ),
        "{message}"
    );
    assert_eq!(check["requests"]["count"], 3, "one request per http step");
    assert_eq!(messages_with_a_session(&database), 1);
    assert_eq!(backend.open_sessions(), 0, "logged out");

    backend.set(r#"{"tools_broken": true}"#);
    let out = run(&example);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let message = out.json()["checks"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("step `chat` failed: "), "{message}");
    assert!(
        message.ends_with("; skipped: message-stored; clean-up `logout` ran"),
        "{message}"
    );
    assert_eq!(backend.open_sessions(), 0, "the clean-up step logged out");

    let without_cleanup = dir.path().join("no-cleanup.yaml");
    let text = std::fs::read_to_string(&example).unwrap();
    assert!(text.contains("always: true"));
    std::fs::write(
        &without_cleanup,
        text.replace("always: true", "always: false"),
    )
    .unwrap();
    let out = run(&without_cleanup);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let message = out.json()["checks"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.ends_with("; skipped: message-stored, logout"),
        "{message}"
    );
    assert_eq!(
        backend.open_sessions(),
        1,
        "without `always` the session stays open"
    );
}

/// `examples/agent-golden-set.yaml` on a coordinator's probe: the JSONL next to the plan is
/// read by the CLI and travels inline; each case goes through the request template; the pass
/// rate and the first failing cases are in the region's message, and a regression that
/// breaks most cases fails the check while one that breaks none passes it.
#[test]
fn a_golden_set_is_replayed_on_a_probe_with_its_pass_rate() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let (_coordinator, url, _probe) = coordinator_with_one_probe(dir.path(), &[], &[]);
    let example = postflight_e2e::repo_root().join("examples/agent-golden-set.yaml");
    let run = || {
        run_postflight(
            &[
                "run",
                example.to_str().unwrap(),
                "--coordinator",
                &url,
                "-o",
                "json",
            ],
            &[("AGENT_URL", backend.url.as_str())],
        )
    };
    let out = run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let check = &out.json()["checks"][0];
    assert_eq!(check["requests"]["count"], 5, "one request per case");
    let region = check["regions"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(
        region["message"],
        "5 of 5 cases passed (100%, at least 80% needed)"
    );
    assert_eq!(
        region["tally"],
        serde_json::json!({"passed": 5, "total": 5})
    );

    backend.set(r#"{"tools_broken": true}"#);
    let out = run();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let message = out.json()["checks"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("1 of 5 cases passed (20%, at least 80% needed); failing: paid-invoice: $.response does not contain \"120.00\" (got: \"I could not find it\"); no tool was called, expected lookup_invoice(id=INV-001); open-invoice: "),
        "{message}"
    );
    assert!(message.ends_with("; and 1 more"), "{message}");
    assert_eq!(
        out.json()["checks"][0]["tally"],
        serde_json::json!({"passed": 1, "total": 5})
    );
}

/// `grpc_health` over TLS against a coordinator serving TLS with an openssl-made certificate:
/// trusted through the plan's `ca`, refused (and said so) without it.
#[test]
fn grpc_health_checks_speak_tls_with_a_private_ca() {
    use postflight_e2e::{CertUse, TestPki, spawn_coordinator};
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("grpc-health");
    let server = pki.issue("coordinator", CertUse::Server, 2);
    let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let (_coordinator, url) = spawn_coordinator(
        0,
        &db,
        &[
            "--tls-cert",
            server.cert.to_str().unwrap(),
            "--tls-key",
            server.key.to_str().unwrap(),
        ],
        &dir.path().join("coordinator.log"),
    );
    let port = url.rsplit(':').next().unwrap();
    let plan = dir.path().join("grpc-tls.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: grpc-tls\nchecks:\n  - name: trusted\n    grpc_health: {{address: \"localhost:{port}\", tls: true, ca: \"{}\"}}\n  - name: untrusted\n    grpc_health: {{address: \"localhost:{port}\", tls: true}}\n",
            pki.ca.display()
        ),
    )
    .unwrap();
    let out = run_postflight(
        &["run", plan.to_str().unwrap(), "--local", "-o", "json"],
        &[],
    );
    let report = out.json();
    assert_eq!(report["checks"][0]["status"], "pass", "{report}");
    assert_eq!(report["checks"][1]["status"], "fail", "{report}");
    let refused = report["checks"][1]["message"].as_str().unwrap();
    assert!(
        refused.contains("is not signed by a trusted authority"),
        "{refused}"
    );
}
