use std::collections::BTreeMap;

use super::*;
use crate::storage::RunStatus;

fn probe(name: &str, region: &str) -> ProbeRecord {
    ProbeRecord {
        name: name.to_owned(),
        region: region.to_owned(),
        labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        version: "0.1.0".to_owned(),
        last_seen_ms: 1_000,
    }
}

fn record(id: &str, verdict: Option<&str>, rollback: Option<&str>) -> RunRecord {
    RunRecord {
        run_id: id.to_owned(),
        plan_name: "agent-<backend>".to_owned(),
        plan_sealed: Vec::new(),
        origin: String::new(),
        status: RunStatus::Completed,
        dry_run: false,
        regions: vec!["us-east".to_owned(), "eu-west".to_owned()],
        timeout_ms: 60_000,
        created_ms: 0,
        started_ms: Some(0),
        finished_ms: Some(10),
        verdict: verdict.map(str::to_owned),
        report_json: None,
        rollback_json: rollback.map(str::to_owned),
        monitor_id: None,
        migration: None,
        against: None,
        take_baseline: false,
        baseline_id: None,
        baseline_refused: None,
        stage: None,
        forced: None,
        owner: None,
        lease_until_ms: None,
    }
}

#[test]
fn escapes_everything_from_outside() {
    assert_eq!(
        escape("<script>alert('x')</script> & \""),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;"
    );
    let html = overview(
        &[(probe("<b>p</b>", "us-east"), true)],
        false,
        &[],
        &[],
        5_000,
    );
    assert!(html.contains("&lt;b&gt;p&lt;/b&gt;"));
    assert!(!html.contains("<b>p</b>"));
}

#[test]
fn overview_lists_probes_runs_and_the_rollback_audit() {
    let rollback = r#"{"recommended":true,"triggered":true,"dry_run":false,"reasons":["verdict FAIL: tool-calling-works failed in 2 of 3 regions"],"action":"kubectl rollout undo deployment/agent-backend -n default","outcome":"succeeded","error":null,"executed_by":"coordinator c1"}"#;
    let html = overview(
        &[
            (probe("probe-1", "us-east"), true),
            (probe("probe-2", "eu-west"), false),
        ],
        true,
        &[
            (record("run-a", Some("FAIL"), Some(rollback)), 0),
            (record("run-b", Some("PASS"), None), 0),
        ],
        &[crate::storage::FeedbackRecord {
            feedback_id: "f1".into(),
            migration: "m-<42>".into(),
            kind: "regression".into(),
            text: "checkout <script>slow</script>".into(),
            source: "support".into(),
            created_ms: 60_000,
        }],
        61_000,
    );
    assert!(
        html.contains("<td class=\"\">checkout &lt;script&gt;slow&lt;/script&gt;</td>"),
        "feedback is shown as text: {html}"
    );
    assert!(html.contains("m-&lt;42&gt;"), "{html}");
    assert!(html.contains("1 of the first 2 probes connected"), "{html}");
    assert!(html.contains("<code>postflight probes</code> lists them all"));
    assert!(html.contains("<td class=\"yes\">yes</td>"));
    assert!(html.contains("1 min ago"));
    assert!(html.contains("href=\"/runs/run-a\""));
    assert!(html.contains("agent-&lt;backend&gt;"));
    assert!(html.contains("<td class=\"FAIL\">FAIL</td>"));
    assert!(html.contains("tool-calling-works failed in 2 of 3 regions"));
    assert!(html.contains("coordinator c1"));
    assert!(html.contains("http-equiv=\"refresh\""));
    assert!(!html.contains("<script"), "no JavaScript");
}

#[test]
fn an_empty_coordinator_says_what_to_do() {
    let html = overview(&[], false, &[], &[], 0);
    assert!(html.contains("No probe has connected yet."));
    assert!(html.contains("postflight run PLAN --coordinator URL"));
    assert!(html.contains("No rollback was recommended"));
}

#[test]
fn a_run_without_report_says_it_is_still_going() {
    let html = run(&record("run-c", None, None), None);
    assert!(html.contains("has not ended yet"));
}
