//! End-to-end: the `postflight` binary runs plans with `--local` against the demo agent backend
//! (a separate real process) and real SQLite files; exit codes, JSON reports and tables are
//! checked as a pipeline would see them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use postflight_e2e::{
    DemoBackend, Finished, SEED_SCHEMA, TlsTestServer, closed_port, run_postflight, sqlite_file,
};
use serde_json::Value;

fn example(name: &str) -> String {
    postflight_e2e::repo_root()
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// The seed's plan (examples/agent-backend.yaml) against `agent_url` and `db_url`.
fn run_seed_plan(agent_url: &str, db_url: &str, output: &str) -> Finished {
    run_postflight(
        &[
            "run",
            &example("agent-backend.yaml"),
            "--local",
            "--output",
            output,
        ],
        &[("AGENT_URL", agent_url), ("DATABASE_URL", db_url)],
    )
}

async fn seed_db(dir: &Path, name: &str, extra_sql: &str) -> String {
    sqlite_file(dir, name, &format!("{SEED_SCHEMA}{extra_sql}")).await
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn write_plan(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test]
async fn healthy_service_passes_with_the_contract_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "ok.db", "").await;
    let backend = DemoBackend::spawn("healthy");
    let out = run_seed_plan(&backend.url, &db, "json");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["status"], "PASS");
    assert_eq!(r["summary"], "PASS");
    assert_eq!(r["plan"], "agent-backend-migration");
    assert_eq!(
        (
            r["passed"].as_u64(),
            r["failed"].as_u64(),
            r["warnings"].as_u64(),
            r["inconclusive"].as_u64()
        ),
        (Some(4), Some(0), Some(0), Some(0))
    );
    assert_eq!(r["regions"], serde_json::json!(["local"]));
    for key in ["run_id", "started_at", "finished_at"] {
        assert!(r[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    assert!(
        r["started_at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC"
    );
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "agent-responds",
            "tool-calling-works",
            "latency-within-bounds",
            "database-integrity"
        ],
        "plan order"
    );
    let latency = check(&r, "latency-within-bounds");
    assert_eq!(latency["severity"], "warning");
    assert_eq!(latency["latency_ms"]["count"], 5);
    for key in ["p50", "p95", "p99", "max"] {
        assert!(latency["latency_ms"][key].as_f64().is_some(), "{key}");
    }
    assert_eq!(latency["regions"]["local"]["status"], "pass");
    assert!(check(&r, "database-integrity")["latency_ms"].is_null());
    assert_eq!(
        r["requests"]["count"], 7,
        "2 http checks + 5 latency samples"
    );
    assert_eq!(r["requests"]["errors"], 0);
    assert_eq!(r["requests"]["error_rate"], 0.0);
    let rb = &r["rollback"];
    assert_eq!(rb["recommended"], false);
    assert_eq!(rb["triggered"], false);
    assert_eq!(rb["dry_run"], false);
    assert_eq!(rb["reasons"], serde_json::json!([]));
    assert_eq!(
        rb["action"],
        "kubectl rollout undo deployment/agent-backend -n default"
    );
    assert!(rb["outcome"].is_null() && rb["error"].is_null());
}

#[tokio::test]
async fn broken_tool_calls_fail_and_recommend_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "ok.db", "").await;
    let backend = DemoBackend::spawn("broken-tools");
    let out = run_seed_plan(&backend.url, &db, "json");
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["status"], "FAIL");
    assert_eq!(r["summary"], "FAIL — rollback recommended");
    assert_eq!(r["failed"], 1);
    let tools = check(&r, "tool-calling-works");
    assert_eq!(tools["status"], "fail");
    assert_eq!(
        tools["message"],
        "$.response does not contain \"INV-001\" (got: \"I could not find it\")"
    );
    assert_eq!(r["requests"]["errors"], 1);
    // The verdict recommends rollback; one failed request of seven is no evidence of a 10%
    // error rate, and the report says so.
    assert_eq!(
        r["rollback"]["reasons"],
        serde_json::json!(["verdict FAIL: tool-calling-works failed"])
    );
    assert_eq!(
        r["rollback"]["held_back"],
        serde_json::json!([
            "error rate in local: 1 of 7 failed (14.3%), but the 95% lower bound 2.6% is not above 10.0%"
        ])
    );
    assert_eq!(r["rollback"]["recommended"], true);
}

#[tokio::test]
async fn empty_answers_fail_the_agent_check() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "ok.db", "").await;
    let backend = DemoBackend::spawn("empty");
    let out = run_seed_plan(&backend.url, &db, "json");
    assert_eq!(out.code, 1);
    let r = out.json();
    assert_eq!(
        check(&r, "agent-responds")["message"],
        "$.response has 0 characters, expected at least 11 (got: \"\")"
    );
    assert_eq!(check(&r, "tool-calling-works")["status"], "fail");
}

/// Slow answers under thresholds scaled down for a test: 400 ms lands between pass_below and
/// warn_below, 1200 ms beyond warn_below.
fn latency_plan(url: &str, severity: &str, max_warnings: u32) -> String {
    format!(
        "name: slow\ntarget: {{base_url: \"{url}\"}}\npolicy: {{max_warnings: {max_warnings}}}\nchecks:\n  - name: agent-responds\n    http: {{method: POST, url: /api/agent/chat, json: {{message: hi}}}}\n  - name: latency-within-bounds\n    severity: {severity}\n    latency:\n      request: {{method: POST, url: /api/agent/chat, json: {{message: Hi}}}}\n      samples: 3\n      concurrency: 3\n      pass_below: 200ms\n      warn_below: 1s\n"
    )
}

#[tokio::test]
async fn slow_answers_as_warning_and_as_critical() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    backend.set(r#"{"delay_ms": 400}"#);
    let run = |name: &str, yaml: &str| {
        let plan = write_plan(dir.path(), name, yaml);
        run_postflight(
            &["run", plan.to_str().unwrap(), "--local", "-o", "json"],
            &[],
        )
    };
    // One warning is within the default max_warnings of 2: PASS, with the check at warn.
    let out = run("w2.yaml", &latency_plan(&backend.url, "warning", 2));
    assert_eq!(out.code, 0, "{}", out.stdout);
    let r = out.json();
    assert_eq!(check(&r, "latency-within-bounds")["status"], "warn");
    assert_eq!(r["warnings"], 1);
    // With max_warnings 0 the same run is WARN, exit 3.
    let out = run("w0.yaml", &latency_plan(&backend.url, "warning", 0));
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert_eq!(out.json()["summary"], "WARN — manual review needed");
    // A critical latency check in the warn band is a warning, not a failure.
    let out = run("c0.yaml", &latency_plan(&backend.url, "critical", 0));
    assert_eq!(out.code, 3, "{}", out.stdout);
    // Beyond warn_below: a critical check fails (exit 1), a warning check only warns.
    backend.set(r#"{"delay_ms": 1200}"#);
    let out = run("c2.yaml", &latency_plan(&backend.url, "critical", 2));
    assert_eq!(out.code, 1, "{}", out.stdout);
    let r = out.json();
    assert_eq!(check(&r, "latency-within-bounds")["status"], "fail");
    assert!(
        check(&r, "latency-within-bounds")["message"]
            .as_str()
            .unwrap()
            .contains("is not below 1s (nor 200ms)")
    );
    let out = run("w2b.yaml", &latency_plan(&backend.url, "warning", 0));
    assert_eq!(
        out.code, 3,
        "a failing warning check never fails the run: {}",
        out.stdout
    );
    let r = out.json();
    assert_eq!(check(&r, "latency-within-bounds")["status"], "fail");
    assert_eq!(
        (r["failed"].as_u64(), r["warnings"].as_u64()),
        (Some(0), Some(1))
    );
}

#[tokio::test]
async fn a_missing_table_fails_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "migrated.db", "DROP TABLE tool_calls;").await;
    let backend = DemoBackend::spawn("healthy");
    let out = run_seed_plan(&backend.url, &db, "json");
    assert_eq!(out.code, 1);
    let r = out.json();
    assert_eq!(
        check(&r, "database-integrity")["message"],
        "missing 1 table: tool_calls"
    );
    assert_eq!(r["passed"], 3);
}

#[tokio::test]
async fn a_service_that_is_down_fails_every_http_check() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "ok.db", "").await;
    let url = format!("http://127.0.0.1:{}", closed_port());
    let out = run_seed_plan(&url, &db, "json");
    assert_eq!(out.code, 1);
    let r = out.json();
    let message = check(&r, "agent-responds")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        message,
        format!("POST {url}/api/agent/chat failed: could not connect: connection refused")
    );
    assert!(
        check(&r, "latency-within-bounds")["message"]
            .as_str()
            .unwrap()
            .starts_with("5 of 5 requests failed")
    );
    assert_eq!(r["requests"]["error_rate"], 1.0);
    assert_eq!(check(&r, "database-integrity")["status"], "pass");
}

#[tokio::test]
async fn the_table_is_readable_and_uncoloured_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "ok.db", "").await;
    let backend = DemoBackend::spawn("broken-tools");
    let out = run_seed_plan(&backend.url, &db, "table");
    assert_eq!(out.code, 1);
    assert!(!out.stdout.contains('\x1b'), "no colour codes in a pipe");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("plan agent-backend-migration · run "),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].split_whitespace().collect::<Vec<_>>()
            == ["STATUS", "CHECK", "SEVERITY", "LATENCY", "DETAILS"],
        "{}",
        out.stdout
    );
    let tool_line = lines
        .iter()
        .find(|l| l.contains("tool-calling-works"))
        .unwrap();
    assert!(tool_line.trim_start().starts_with("FAIL"), "{tool_line}");
    assert!(
        tool_line
            .contains("$.response does not contain \"INV-001\" (got: \"I could not find it\")"),
        "{tool_line}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("requests 7 · failed 1 (14.3%) · p50 ")),
        "{}",
        out.stdout
    );
    assert_eq!(lines.last().unwrap(), &"FAIL — rollback recommended");
    assert!(
        lines.iter().all(|l| l.len() == l.trim_end().len()),
        "no trailing blanks"
    );
}

#[tokio::test]
async fn an_overall_timeout_leaves_checks_inconclusive() {
    let dir = tempfile::tempdir().unwrap();
    let db = seed_db(dir.path(), "ok.db", "").await;
    let backend = DemoBackend::spawn("healthy");
    backend.set(r#"{"delay_ms": 3000}"#);
    let out = run_postflight(
        &[
            "run",
            &example("agent-backend.yaml"),
            "--local",
            "-o",
            "json",
            "--timeout",
            "1s",
        ],
        &[("AGENT_URL", &backend.url), ("DATABASE_URL", &db)],
    );
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["summary"], "INCONCLUSIVE — not enough data");
    assert_eq!(check(&r, "agent-responds")["status"], "inconclusive");
    assert_eq!(
        check(&r, "agent-responds")["message"],
        "no result from local (the run ended before it reported)"
    );
    assert_eq!(
        check(&r, "database-integrity")["status"],
        "pass",
        "fast checks still report"
    );
    assert_eq!(r["inconclusive"], 3);
}

#[test]
fn broken_plans_exit_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "syntax.yaml",
            "name: p\nchecks:\n  - name: a\n   http: {url: http://h/}\n",
            ":4:4: error: while parsing a block collection",
        ),
        (
            "unknown.yaml",
            "name: p\nchecks:\n  - name: a\n    htp: {url: http://h/}\n",
            ":4:5: error: unknown field `htp`",
        ),
        (
            "type.yaml",
            "name: p\nchecks:\n  - name: a\n    latency: {request: {url: http://h/}, samples: lots}\n",
            ":4:51: error: expected a whole number (0 or more), got `lots`",
        ),
        (
            "dup.yaml",
            "name: p\nchecks:\n  - name: a\n    http: {url: http://h/}\n  - name: a\n    http: {url: http://h/}\n",
            ":5:11: error: duplicate check name `a`",
        ),
        (
            "path.yaml",
            "name: p\nchecks:\n  - name: a\n    http: {url: http://h/, expect: {json: [{path: \"$$.x\"}]}}\n",
            ":4:53: error: invalid JSONPath `$$.x`",
        ),
        (
            "regex.yaml",
            "name: p\nchecks:\n  - name: a\n    http: {url: http://h/, expect: {body_regex: \"[a-\"}}\n",
            ":4:49: error: invalid regular expression `[a-`",
        ),
        (
            "var.yaml",
            "name: p\nchecks:\n  - name: a\n    http: {url: \"${POSTFLIGHT_TEST_UNSET_VAR}/x\"}\n",
            ":4:18: error: variable POSTFLIGHT_TEST_UNSET_VAR is not set",
        ),
    ];
    for (file, yaml, expected) in cases {
        let path = write_plan(dir.path(), file, yaml);
        for command in ["run", "check"] {
            let mut args = vec![command, path.to_str().unwrap()];
            if command == "run" {
                args.push("--local");
            }
            let out = run_postflight(&args, &[]);
            assert_eq!(out.code, 2, "{command} {file}: {}", out.stderr);
            let first = out.stderr.lines().next().unwrap_or_default();
            assert!(
                first.starts_with(path.to_str().unwrap()),
                "{command} {file}: {first}"
            );
            assert!(first.contains(expected), "{command} {file}: {first}");
            assert!(out.stdout.is_empty(), "{command} {file}: nothing on stdout");
        }
    }
    let out = run_postflight(&["run", "/nonexistent/plan.yaml", "--local"], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("error: cannot read plan /nonexistent/plan.yaml: No such file"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_accepts_the_examples() {
    let mut names: Vec<String> = std::fs::read_dir(postflight_e2e::repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in names.iter().map(String::as_str) {
        let out = run_postflight(
            &["check", &example(name)],
            &[
                ("DATABASE_URL", "postgres://app@db/app"),
                ("API_URL", "https://api.example.com"),
                ("API_TOKEN", "t"),
                ("ROLLBACK_HMAC_SECRET", "s"),
            ],
        );
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        assert!(out.stdout.contains("is valid"), "{name}: {}", out.stdout);
    }
}

#[test]
fn usage_errors_exit_2_and_an_unreachable_coordinator_exits_5() {
    let out = run_postflight(&["run"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("Usage"), "{}", out.stderr);
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["run", "PLAN", "--coordinator", &url],
        vec!["probes", "--coordinator", &url],
        vec!["runs", "--coordinator", &url],
        vec!["report", "some-run", "--coordinator", &url],
    ] {
        let plan = example("agent-backend.yaml");
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "PLAN" { plan.as_str() } else { a })
            .collect();
        let out = run_postflight(&args, &[("DATABASE_URL", "postgres://app@db/app")]);
        assert_eq!(out.code, 5, "{args:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim(),
            format!("error: cannot reach the coordinator at {url}: connection refused"),
            "{args:?}"
        );
    }
    // $POSTFLIGHT_COORDINATOR is the default coordinator.
    let out = run_postflight(&["probes"], &[("POSTFLIGHT_COORDINATOR", &url)]);
    assert_eq!(out.code, 5);
    assert!(out.stderr.contains(&url), "{}", out.stderr);
}

#[test]
fn the_demo_shows_both_verdicts_and_exits_0() {
    // Run from an empty folder: the demo keeps everything (databases, data key, ledger) in a
    // temporary folder of its own and leaves nothing behind.
    let cwd = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let output = postflight_e2e::postflight()
        .arg("demo")
        .current_dir(cwd.path())
        .env("POSTFLIGHT_STATE_DIR", state.path())
        .output()
        .unwrap();
    let out = Finished {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let left: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
    assert!(out.stdout.contains("1. Before the migration"));
    assert!(out.stdout.contains("\nPASS\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("FAIL — rollback recommended"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("missing 1 index: messages_conversation_id_idx")
    );
    // The baseline taken before the migration catches the region that only got slower.
    assert!(
        out.stdout.contains("compared with baseline "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  WORSE  latency-within-bounds · us-east: p50 "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("The baseline caught what the fixed 250 ms threshold let through"),
        "{}",
        out.stdout
    );
    // Support's feedback about the migration is in the report of the run after it.
    assert!(
        out.stdout.contains(
            "feedback about migration demo-migration:\n  regression invoice look-ups answer"
        ),
        "{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("WARN postflight"),
        "log lines do not interrupt the demo's story: {}",
        out.stderr
    );
    let out = run_postflight(&["demo", "--output", "json"], &[]);
    assert_eq!(out.code, 0);
    let both = out.json();
    assert_eq!(both["before"]["status"], "PASS");
    assert_eq!(both["after"]["status"], "FAIL");
    assert_eq!(both["after"]["rollback"]["dry_run"], true);
    assert_eq!(
        both["after"]["baseline"]["baseline_id"], both["baseline_id"],
        "the run after the migration is compared with the baseline taken before"
    );
}

/// Runs `postflight run PLAN --local -o json` off the async runtime, so that servers of the same
/// test keep answering while it runs.
async fn run_local(plan: PathBuf, env: Vec<(String, String)>) -> Finished {
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_postflight(
            &["run", plan.to_str().unwrap(), "--local", "-o", "json"],
            &env,
        )
    })
    .await
    .unwrap()
}

/// With a private CA trusted through `SSL_CERT_FILE` (as on a host that trusts a company CA),
/// `http` and `latency` checks over https pass against a real TLS server; without it they fail
/// (see `an_untrusted_certificate_fails_…` in postflight-checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_checks_pass_when_the_private_ca_is_trusted() {
    let server = TlsTestServer::start(
        axum::Router::new().route("/health", axum::routing::get(|| async { "healthy" })),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "tls.yaml",
        &format!(
            "name: tls\ntarget: {{base_url: \"{}\"}}\nchecks:\n  - name: up\n    http:\n      url: /health\n      expect: {{body_contains: healthy}}\n  - name: fast\n    latency:\n      request: {{url: /health}}\n      samples: 5\n      pass_below: 5s\n",
            server.url("")
        ),
    );
    let ca = server.ca_file.display().to_string();
    let out = run_local(plan, vec![("SSL_CERT_FILE".into(), ca)]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(check(&r, "up")["status"], "pass");
    assert_eq!(check(&r, "fast")["status"], "pass");
}

/// With `HTTP_PROXY` set, checks go through the proxy as curl's would: the plan's host does not
/// even resolve, so only the proxy (a real HTTP server answering absolute-form requests) can
/// have answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_go_through_the_configured_proxy() {
    async fn proxy(uri: axum::http::Uri) -> (axum::http::StatusCode, String) {
        if uri.host() == Some("service.invalid") {
            (axum::http::StatusCode::OK, format!("proxied {uri}"))
        } else {
            (
                axum::http::StatusCode::BAD_REQUEST,
                format!("not a proxy request: {uri}"),
            )
        }
    }
    let proxy = postflight_e2e::TestServer::start(axum::Router::new().fallback(proxy)).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "proxy.yaml",
        "name: proxy\ntarget: {base_url: \"http://service.invalid\"}\nchecks:\n  - name: up\n    http:\n      url: /health\n      expect: {body_contains: proxied http://service.invalid/health}\n  - name: fast\n    latency:\n      request: {url: /health}\n      samples: 3\n      pass_below: 5s\n",
    );
    let env = vec![
        ("HTTP_PROXY".into(), proxy.url("")),
        ("NO_PROXY".into(), String::new()),
        ("no_proxy".into(), String::new()),
    ];
    let out = run_local(plan.clone(), env).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(check(&r, "up")["status"], "pass");
    assert_eq!(check(&r, "fast")["status"], "pass");
    // Without the proxy the host does not resolve, and the checks say so.
    let no_proxy = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];
    let out = run_local(plan, no_proxy.map(|k| (k.to_owned(), String::new())).into()).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let message = check(&out.json(), "up")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("could not resolve the host"), "{message}");
}

/// `demo --serve-target` says where the backend and its database are, in a form the README's
/// example plan runs with as it is.
#[test]
fn the_served_demo_backend_runs_the_example_plan() {
    use std::io::BufRead;
    let port = postflight_e2e::free_port().to_string();
    let mut serve = postflight_e2e::postflight()
        .args(["demo", "--serve-target", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = serve.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut exports = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(vars) = line.trim().strip_prefix("export ") {
            exports = Some(vars.to_owned());
            break;
        }
    }
    // Keep reading what else it says, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    let exports = exports.expect("an export line");
    let env: Vec<(&str, &str)> = exports
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert!(env.iter().any(|(k, _)| *k == "DATABASE_URL"), "{exports}");
    let out = run_postflight(&["run", &example("agent-backend.yaml"), "--local"], &env);
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("database-integrity"), "{}", out.stdout);
}
