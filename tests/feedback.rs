//! Feedback about a migration, end to end: reported with the CLI, grpcurl and HTTP (operator
//! token required), listed per migration in the CLI, the report and the status page, and
//! acted on by `rollback.feedback_above` once, with the reason.

use std::path::Path;

use postflight_e2e::{
    DemoBackend, Finished, coordinator_with_one_probe, free_port, grpcurl, http_request,
    run_postflight,
};

const TOKEN: &str = "operator-secret-7";

fn cli(args: &[&str]) -> Finished {
    run_postflight(args, &[("POSTFLIGHT_TOKEN", TOKEN)])
}

fn plan(dir: &Path, url: &str, marker: &Path) -> String {
    let path = dir.join("plan.yaml");
    std::fs::write(
        &path,
        format!(
            "name: checkout\ntarget: {{base_url: \"{url}\"}}\nchecks:\n  - name: up\n    http: {{url: /health}}\nrollback:\n  feedback_above: 2\n  cooldown: 1h\n  action: {{command: [sh, -c, \"echo acted >> {}\"]}}\n",
            marker.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn feedback_is_reported_three_ways_listed_everywhere_and_acts_once() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let http_addr = format!("127.0.0.1:{}", free_port());
    let (_coordinator, url, _probe) = coordinator_with_one_probe(
        dir.path(),
        &[
            "--operator-token",
            TOKEN,
            "--allow-command-actions",
            "--http-listen",
            &http_addr,
        ],
        &["--token", TOKEN],
    );

    // 1. The CLI.
    let out = cli(&[
        "feedback",
        "m-42",
        "checkout times out since the migration",
        "--kind",
        "regression",
        "--source",
        "support",
        "--coordinator",
        &url,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("about migration m-42 recorded (regression)"),
        "{}",
        out.stdout
    );
    // 2. grpcurl, with the token.
    let (ok, text) = grpcurl(&[
        "-plaintext",
        "-H",
        &format!("authorization: Bearer {TOKEN}"),
        "-d",
        r#"{"migration": "m-42", "text": "invoices page blank", "kind": "regression"}"#,
        url.trim_start_matches("http://"),
        "postflight.v1.FeedbackService/SubmitFeedback",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("\"feedbackId\""), "{text}");
    let (ok, text) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"migration": "m-42", "text": "x"}"#,
        url.trim_start_matches("http://"),
        "postflight.v1.FeedbackService/SubmitFeedback",
    ]);
    assert!(!ok && text.contains("Unauthenticated"), "{text}");
    // 3. HTTP, with the token; without it, or with a bad field, refused.
    let body = r#"{"migration": "m-42", "text": "refunds fail", "kind": "regression", "source": "status-page"}"#;
    let (status, answer) = http_request(&http_addr, "POST", "/api/v1/feedback", Some(TOKEN), body);
    assert_eq!(status, 201, "{answer}");
    assert!(answer.contains("\"kind\":\"regression\""), "{answer}");
    let (status, _) = http_request(&http_addr, "POST", "/api/v1/feedback", None, body);
    assert_eq!(status, 401);
    let (status, answer) = http_request(
        &http_addr,
        "POST",
        "/api/v1/feedback",
        Some(TOKEN),
        r#"{"migration": "m-42", "text": "x", "kind": "angry"}"#,
    );
    assert_eq!(status, 400);
    assert!(
        answer.contains("kind: `angry` is not regression, bug or info"),
        "{answer}"
    );
    let (status, answer) =
        http_request(&http_addr, "POST", "/api/v1/feedback", Some(TOKEN), "{nope");
    assert_eq!(status, 400);
    assert!(answer.contains("not a feedback object"), "{answer}");
    let out = cli(&["feedback", "m-42", "  ", "--coordinator", &url]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("text: 1 to 4096 bytes of text"),
        "{}",
        out.stderr
    );

    // Listed per migration.
    let listed = cli(&[
        "feedback",
        "list",
        "m-42",
        "--coordinator",
        &url,
        "-o",
        "json",
    ])
    .json();
    assert_eq!(listed["feedback"].as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed["feedback"][0]["text"], "refunds fail");
    let none = cli(&["feedback", "list", "m-0", "--coordinator", &url]);
    assert_eq!(none.stdout.trim(), "no feedback yet");

    // A run of the migration: healthy, but three regressions are more than feedback_above 2.
    let marker = dir.path().join("acted");
    let plan = plan(dir.path(), &backend.url, &marker);
    let out = cli(&[
        "run",
        &plan,
        "--coordinator",
        &url,
        "--migration",
        "m-42",
        "-o",
        "json",
    ]);
    assert_eq!(
        out.code, 0,
        "the verdict stays PASS: {}\n{}",
        out.stdout, out.stderr
    );
    let report = out.json();
    assert_eq!(report["status"], "PASS");
    assert_eq!(report["feedback"].as_array().unwrap().len(), 3, "{report}");
    let reasons = report["rollback"]["reasons"].as_array().unwrap();
    assert!(
        reasons.iter().any(|r| r.as_str().unwrap().starts_with(
            "3 regression reports about migration m-42 in the last 5m (more than feedback_above 2)"
        )),
        "{report}"
    );
    assert_eq!(report["rollback"]["outcome"], "succeeded", "{report}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "acted\n");
    // Once: the next run is within the cooldown.
    let out = cli(&[
        "run",
        &plan,
        "--coordinator",
        &url,
        "--migration",
        "m-42",
        "-o",
        "json",
    ]);
    let report = out.json();
    assert_eq!(report["rollback"]["outcome"], "skipped", "{report}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "acted\n");
    // The table and the status page list it too.
    let table = cli(&["run", &plan, "--coordinator", &url, "--migration", "m-42"]);
    assert!(
        table
            .stdout
            .contains("feedback about migration m-42:\n  regression refunds fail (status-page)"),
        "{}",
        table.stdout
    );
    let (status, page) = http_request(&http_addr, "GET", "/", Some(TOKEN), "");
    assert_eq!(status, 200);
    assert!(
        page.contains("checkout times out since the migration"),
        "{page}"
    );
}

/// A monitor of a migration rolls back as soon as more regression reports than
/// `feedback_above` arrived, although every round passes (without the feedback it would end
/// after its 20 s phase with exit 0).
#[test]
fn regression_feedback_ends_a_monitor_with_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let backend = DemoBackend::spawn("healthy");
    let (_coordinator, url, _probe) = coordinator_with_one_probe(
        dir.path(),
        &["--operator-token", TOKEN, "--allow-command-actions"],
        &["--token", TOKEN],
    );
    let marker = dir.path().join("acted");
    let plan = dir.path().join("watched.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: watched\ntarget: {{base_url: \"{}\"}}\nchecks:\n  - name: up\n    http: {{url: /health}}\nmonitor:\n  phases: [{{every: 1s, for: 20s}}]\nrollback:\n  feedback_above: 1\n  action: {{command: [sh, -c, \"echo acted >> {}\"]}}\n",
            backend.url,
            marker.display()
        ),
    )
    .unwrap();
    let started = cli(&[
        "monitor",
        plan.to_str().unwrap(),
        "--coordinator",
        &url,
        "--migration",
        "m-77",
        "--detach",
        "-o",
        "json",
    ]);
    assert_eq!(started.code, 0, "{}\n{}", started.stdout, started.stderr);
    let monitor_id = started.json()["monitor_id"].as_str().unwrap().to_owned();
    for text in ["checkout fails", "refunds fail"] {
        let out = cli(&[
            "feedback",
            "m-77",
            text,
            "--kind",
            "regression",
            "--coordinator",
            &url,
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = cli(&["watch", &monitor_id, "--coordinator", &url]);
    assert_eq!(out.code, 1, "rolled back: {}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "2 regression reports about migration m-77 in the last 5m (more than feedback_above 1)"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "acted\n");
}
