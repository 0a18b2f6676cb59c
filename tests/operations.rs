//! Operating postflight: the coordinator's and probe's HTTP endpoints scraped by a real
//! Prometheus (Debian's package), the dashboard and alert rules checked against a real
//! `/metrics` output and `promtool`, and the status page rendered by a real headless Chromium
//! (Debian's `chromium`). `.ci/run` installs both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use postflight_e2e::{
    DemoBackend, Proc, free_port, run_postflight, spawn_coordinator, spawn_probe, wait_for_probes,
};

/// A GET over plain HTTP/1.0: status code and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

fn try_http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Some((code, body.to_owned()))
}

/// A coordinator with `--http-listen`, one probe with `--http-listen`, the demo backend, and
/// one finished run whose failure fired a rollback command: every metric family has samples.
struct Scene {
    dir: tempfile::TempDir,
    _backend: DemoBackend,
    _coordinator: Proc,
    _probe: Proc,
    http: String,
    probe_http: String,
    run_id: String,
}

impl Scene {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = DemoBackend::spawn("healthy");
        let http = format!("127.0.0.1:{}", free_port());
        let probe_http = format!("127.0.0.1:{}", free_port());
        let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
        let (coordinator, url) = spawn_coordinator(
            0,
            &db,
            &["--allow-command-actions", "--http-listen", &http],
            &dir.path().join("coordinator.log"),
        );
        let probe = spawn_probe(
            &url,
            "eu-west",
            "probe-eu-1",
            &[("AGENT_URL", backend.url.as_str())],
            &["--http-listen", &probe_http],
            &dir.path().join("probe.log"),
        );
        let connected = std::panic::catch_unwind(|| wait_for_probes(&url, 1));
        if connected.is_err() {
            panic!(
                "the probe did not connect; probe log:\n{}\ncoordinator log:\n{}",
                std::fs::read_to_string(dir.path().join("probe.log")).unwrap_or_default(),
                std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default()
            );
        }
        let out = run_plan(
            dir.path(),
            &url,
            "name: ops-e2e\ntarget: {base_url: \"${probe:AGENT_URL}\"}\nchecks:\n  - name: agent-responds\n    http: {method: POST, url: /api/agent/chat, json: {message: hi}}\n  - name: invoice-lookup\n    http:\n      method: POST\n      url: /api/agent/chat\n      json: {message: \"Look up invoice INV-001\"}\n      expect: {body_contains: NO-SUCH-TEXT}\npolicy: {regions: [eu-west]}\nrollback:\n  on_fail: true\n  action: {command: [\"true\"]}\n",
        );
        assert_eq!(out.code, 1, "the plan fails on purpose: {out:?}");
        let report = out.json();
        assert_eq!(report["rollback"]["outcome"], "succeeded", "{report}");
        let run_id = report["run_id"].as_str().unwrap().to_owned();
        Self {
            dir,
            _backend: backend,
            _coordinator: coordinator,
            _probe: probe,
            http,
            probe_http,
            run_id,
        }
    }
}

/// Writes `yaml` as a plan in `dir` and runs it on the coordinator at `url` (JSON report).
fn run_plan(dir: &Path, url: &str, yaml: &str) -> postflight_e2e::Finished {
    let plan = dir.join("plan.yaml");
    std::fs::write(&plan, yaml).unwrap();
    run_postflight(
        &[
            "run",
            plan.to_str().unwrap(),
            "--coordinator",
            url,
            "-o",
            "json",
        ],
        &[],
    )
}

/// Sample names (`name` in `name{labels} value`) of an exposition text.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Every `postflight_…` identifier in a file.
fn metric_names_used(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("postflight_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !tail[..end].ends_with('_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn deploy(path: &str) -> PathBuf {
    postflight_e2e::repo_root().join("deploy").join(path)
}

/// The metrics the Grafana dashboard and the alert rules query all exist in the real
/// `/metrics` of a coordinator and a probe, and the rules pass `promtool check rules`.
#[test]
fn the_dashboard_and_alerts_use_only_metrics_that_exist() {
    let scene = Scene::start();
    let (code, coordinator) = http_get(&scene.http, "/metrics");
    assert_eq!(code, 200);
    let (code, probe) = http_get(&scene.probe_http, "/metrics");
    assert_eq!(code, 200);
    let exported: BTreeSet<String> = sample_names(&coordinator)
        .into_iter()
        .chain(sample_names(&probe))
        .collect();
    for expected in [
        "postflight_probes_connected",
        "postflight_check_results_total",
        "postflight_rollback_actions_total",
        "postflight_grpc_request_duration_seconds_bucket",
        "postflight_probe_connected",
    ] {
        assert!(
            exported.contains(expected),
            "{expected} missing from:\n{coordinator}\n{probe}"
        );
    }
    assert!(
        coordinator.contains(
            "postflight_check_results_total{check=\"invoice-lookup\",region=\"eu-west\",status=\"fail\"} 1"
        ),
        "{coordinator}"
    );
    assert!(
        coordinator.contains("postflight_rollback_actions_total{outcome=\"succeeded\"} 1"),
        "{coordinator}"
    );
    assert!(coordinator.contains("postflight_probes_connected{region=\"eu-west\"} 1"));
    for file in ["grafana/postflight.json", "prometheus/alerts.yaml"] {
        let used = metric_names_used(&deploy(file));
        assert!(used.len() >= 5, "{file} uses {used:?}");
        let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics that do not exist: {unknown:?}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/postflight.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 8);
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yaml"))
        .output()
        .expect("promtool comes with Debian's prometheus package (.ci/run installs it)");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    assert_eq!(http_get(&scene.http, "/healthz").0, 200);
    assert_eq!(
        http_get(&scene.http, "/readyz"),
        (200, "ready\n".to_owned())
    );
    assert_eq!(http_get(&scene.probe_http, "/healthz").0, 200);
}

/// A real Prometheus scrapes the coordinator and the probe; its query API then returns
/// postflight series with the values the run produced.
#[test]
fn a_real_prometheus_scrapes_coordinator_and_probe() {
    let scene = Scene::start();
    let web = format!("127.0.0.1:{}", free_port());
    let config = scene.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: postflight-coordinator\n    static_configs: [{{targets: ['{}']}}]\n  - job_name: postflight-probe\n    static_configs: [{{targets: ['{}']}}]\n",
            scene.http, scene.probe_http
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scene.dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(scene.dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus comes from Debian's package (.ci/run installs it)");
    let _prometheus = Proc::from_child(prometheus, "prometheus");
    let query = |q: &str| -> Option<serde_json::Value> {
        let (code, body) = try_http_get(&web, &format!("/api/v1/query?query={q}"))?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?.first()?.clone();
        Some(result)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ingested, probe_up) = loop {
        if let (Some(a), Some(b)) = (
            query("postflight_results_ingested_total"),
            query("postflight_probe_connected"),
        ) {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned postflight series; its log: {}",
            std::fs::read_to_string(scene.dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(ingested["metric"]["job"], "postflight-coordinator");
    assert_eq!(
        ingested["value"][1], "2",
        "two check results were stored: {ingested}"
    );
    assert_eq!(probe_up["metric"]["job"], "postflight-probe");
    assert_eq!(probe_up["value"][1], "1");
}

/// The status page, rendered by a real headless Chromium: probes with their regions, the run
/// with its verdict, the rollback audit, and the run's per-region table with latency figures.
/// Screenshots land in `target/test-artifacts/`.
#[test]
fn the_status_page_renders_in_headless_chromium() {
    let scene = Scene::start();
    let artifacts = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| postflight_e2e::repo_root().join("target"), PathBuf::from)
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let chromium = |args: &[&str], url: &str| {
        let profile = scene.dir.path().join("chromium-profile");
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url)
            .output()
            .expect("chromium comes from Debian's package (.ci/run installs it)");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let overview_url = format!("http://{}/", scene.http);
    let dom = chromium(&["--dump-dom"], &overview_url);
    assert!(
        dom.contains("probe-eu-1") && dom.contains("eu-west"),
        "{dom}"
    );
    assert!(dom.contains("1 of 1 probes connected"), "{dom}");
    assert!(dom.contains(&scene.run_id), "{dom}");
    assert!(dom.contains("<td class=\"FAIL\">FAIL</td>"), "{dom}");
    assert!(
        dom.contains("invoice-lookup failed"),
        "the rollback audit shows the reason: {dom}"
    );
    let run_url = format!("http://{}/runs/{}", scene.http, scene.run_id);
    let run_dom = chromium(&["--dump-dom"], &run_url);
    assert!(run_dom.contains("Checks by region"), "{run_dom}");
    assert!(
        run_dom.contains("agent-responds") && run_dom.contains("p95"),
        "{run_dom}"
    );
    for (name, url) in [
        ("status-page.png", &overview_url),
        ("status-page-run.png", &run_url),
    ] {
        let shot = artifacts.join(name);
        let _ = std::fs::remove_file(&shot);
        chromium(&[&format!("--screenshot={}", shot.display())], url);
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}: {} bytes",
            png.len()
        );
    }
    let (code, missing) = http_get(&scene.http, "/runs/no-such-run");
    assert_eq!(code, 404, "{missing}");
}

/// With `--log-format json`, coordinator and probe write one JSON object per line with the
/// run id as a field, so one run can be followed across both (`jq 'select(.run_id == …)'`).
#[test]
fn json_logs_follow_a_run_across_coordinator_and_probe() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let coordinator_log = dir.path().join("coordinator.log");
    let probe_log = dir.path().join("probe.log");
    let (_coordinator, url) = spawn_coordinator(
        0,
        &db,
        &["--allow-command-actions", "--log-format", "json"],
        &coordinator_log,
    );
    let _probe = spawn_probe(
        &url,
        "us-east",
        "json-probe",
        &[("AGENT_URL", backend.url.as_str())],
        &["--log-format", "json"],
        &probe_log,
    );
    wait_for_probes(&url, 1);
    let out = run_plan(
        dir.path(),
        &url,
        "name: json-logs\ntarget: {base_url: \"${probe:AGENT_URL}\"}\nchecks:\n  - name: agent-responds\n    http: {method: POST, url: /api/agent/chat, json: {message: hi}}\npolicy: {regions: [us-east]}\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let run_id = out.json()["run_id"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let lines_about_the_run = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .filter(|v| v["run_id"] == run_id.as_str())
            .collect()
    };
    let coordinator = lines_about_the_run(&coordinator_log);
    let probe = lines_about_the_run(&probe_log);
    assert!(
        coordinator.iter().any(|l| l["message"] == "run submitted"),
        "{coordinator:?}"
    );
    assert!(
        coordinator
            .iter()
            .any(|l| l["message"] == "assigned" && l["probe"] == "json-probe"),
        "{coordinator:?}"
    );
    assert!(
        probe
            .iter()
            .any(|l| l["message"] == "executing" && l["probe"] == "json-probe"),
        "{probe:?}"
    );
    assert!(
        probe.iter().any(|l| l["message"] == "assignment done"),
        "{probe:?}"
    );
    assert!(
        probe
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
}

/// With an operator token, the status page and run pages need it (a browser's login prompt:
/// any user name, the token as password; scripts: Bearer); `/metrics`, `/healthz` and
/// `/readyz` stay open for Prometheus and load balancers.
#[test]
fn the_status_page_needs_the_operator_token_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("postflight.db").display());
    let http = format!("127.0.0.1:{}", free_port());
    let (_coordinator, _url) = spawn_coordinator(
        0,
        &db,
        &["--http-listen", &http, "--operator-token", "op-token-123"],
        &dir.path().join("coordinator.log"),
    );
    let get = |path: &str, auth: Option<&str>| -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(&http).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {http}\r\n{auth}\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let code = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, answer)
    };
    for _ in 0..100 {
        if try_http_get(&http, "/healthz").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for path in ["/", "/runs/some-run"] {
        let (code, answer) = get(path, None);
        assert_eq!(code, 401, "{path}: {answer}");
        assert!(
            answer.contains("WWW-Authenticate: Basic realm=\"postflight\"")
                || answer
                    .to_ascii_lowercase()
                    .contains("www-authenticate: basic realm=\"postflight\""),
            "{answer}"
        );
        assert_eq!(get(path, Some("Bearer wrong")).0, 401, "{path}");
    }
    assert_eq!(get("/", Some("Bearer op-token-123")).0, 200);
    // Basic, user "me", password the token.
    assert_eq!(get("/", Some("Basic bWU6b3AtdG9rZW4tMTIz")).0, 200);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(path, None).0, 200, "{path}");
    }
}
