use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::rollback::ActionOutcome;
use crate::vars::Expander;
use crate::{CheckStatus, Sample, parse_plan};

fn plan(extra: &str) -> Plan {
    let yaml = format!(
        "name: p\ntarget: {{base_url: \"http://svc\", headers: {{Authorization: \"Bearer tok-SECRET-42\"}}}}\nchecks:\n  - name: a\n    http: {{url: /a}}\n  - name: b\n    severity: warning\n    latency: {{request: {{url: /b}}, pass_below: 1s}}\n  - name: db\n    database: {{url: \"postgres://app:hunter2pw@db/app\", tables: [t]}}\n{extra}"
    );
    let env: HashMap<String, String> = HashMap::new();
    parse_plan(&yaml, "p.yaml", Expander::plan(&env)).unwrap()
}

fn outcome(status: CheckStatus, message: &str, samples: &[(u64, bool)]) -> CheckOutcome {
    CheckOutcome {
        status,
        message: message.to_owned(),
        samples: samples
            .iter()
            .map(|&(ms, ok)| Sample {
                latency: Duration::from_millis(ms),
                ok,
            })
            .collect(),
        missing: 0,
        duration: Duration::from_millis(samples.iter().map(|s| s.0).sum()),
        answer_shape: None,
        tally: None,
    }
}

fn local(outcomes: Vec<Option<CheckOutcome>>) -> Vec<BTreeMap<String, RegionResult>> {
    outcomes
        .into_iter()
        .map(|o| {
            o.map(|o| ("local".to_owned(), RegionResult::from_outcome(&o)))
                .into_iter()
                .collect()
        })
        .collect()
}

fn build(plan: &Plan, regions: &[&str], outcomes: &[BTreeMap<String, RegionResult>]) -> Report {
    let regions: Vec<String> = regions.iter().map(|s| s.to_string()).collect();
    let env: HashMap<String, String> = HashMap::new();
    build_report(&RunResults {
        plan,
        run_id: "run-1",
        started_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        finished_at: UNIX_EPOCH + Duration::from_millis(1_800_000_002_500),
        required_regions: &regions,
        results: outcomes,
        unreported: &BTreeMap::new(),
        end: RunEnd::Completed,
        env: &env,
    })
}

#[test]
fn a_passing_local_run() {
    let p = plan("");
    let outcomes = local(vec![
        Some(outcome(CheckStatus::Pass, "ok", &[(10, true)])),
        Some(outcome(
            CheckStatus::Pass,
            "fast",
            &[(10, true), (20, true), (30, true), (40, true)],
        )),
        Some(outcome(CheckStatus::Pass, "1 table present", &[])),
    ]);
    let r = build(&p, &["local"], &outcomes);
    assert_eq!(r.status, Overall::Pass);
    assert_eq!(r.summary, "PASS");
    assert_eq!(
        (r.passed, r.failed, r.warnings, r.inconclusive),
        (3, 0, 0, 0)
    );
    assert_eq!(r.started_at, "2027-01-15T08:00:00.000Z");
    assert_eq!(r.finished_at, "2027-01-15T08:00:02.500Z");
    assert_eq!(r.regions, ["local"]);
    assert_eq!(r.requests.count, 5);
    assert_eq!(r.requests.error_rate, 0.0);
    let lat = r.checks[1].latency_ms.unwrap();
    assert_eq!(
        (lat.count, lat.p50, lat.p95, lat.max),
        (4, 20.0, 40.0, 40.0)
    );
    assert_eq!(r.checks[1].kind, "latency");
    assert!(r.checks[2].latency_ms.is_none());
    assert!(!r.rollback.recommended);
    assert_eq!(r.rollback.action, None);
}

#[test]
fn the_json_report_has_every_contract_field() {
    let p = plan("rollback: {action: {command: [./rollback.sh, p]}}\n");
    let outcomes = local(vec![
        Some(outcome(
            CheckStatus::Fail,
            "status 500, expected 2xx",
            &[(12, false)],
        )),
        None,
        Some(outcome(CheckStatus::Pass, "ok", &[])),
    ]);
    let json = serde_json::to_value(build(&p, &["local"], &outcomes)).unwrap();
    for key in [
        "run_id",
        "plan",
        "status",
        "summary",
        "passed",
        "failed",
        "warnings",
        "inconclusive",
        "started_at",
        "finished_at",
        "regions",
        "checks",
        "requests",
        "rollback",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    let check = &json["checks"][0];
    for key in [
        "name",
        "severity",
        "status",
        "message",
        "latency_ms",
        "regions",
    ] {
        assert!(check.get(key).is_some(), "missing checks[].{key}");
    }
    for key in ["count", "p50", "p95", "p99", "max"] {
        assert!(
            check["latency_ms"].get(key).is_some(),
            "missing latency_ms.{key}"
        );
    }
    assert_eq!(check["regions"]["local"]["status"], "fail");
    for key in ["count", "errors", "error_rate", "latency_ms"] {
        assert!(
            json["requests"].get(key).is_some(),
            "missing requests.{key}"
        );
    }
    for key in [
        "recommended",
        "triggered",
        "dry_run",
        "reasons",
        "action",
        "outcome",
        "error",
    ] {
        assert!(
            json["rollback"].get(key).is_some(),
            "missing rollback.{key}"
        );
    }
    assert_eq!(json["status"], "FAIL");
    assert_eq!(json["checks"][1]["status"], "inconclusive");
    assert_eq!(json["rollback"]["action"], "./rollback.sh p");
    // The report reads back into the same structure (the CLI and coordinator share it).
    let back: Report = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(back).unwrap(), json);
}

#[test]
fn secrets_never_reach_the_report() {
    let p = plan("");
    let outcomes = local(vec![
        Some(outcome(
            CheckStatus::Fail,
            "server echoed Bearer tok-SECRET-42",
            &[(1, false)],
        )),
        Some(outcome(CheckStatus::Pass, "ok", &[(1, true)])),
        Some(outcome(
            CheckStatus::Fail,
            "cannot connect to postgres://app:hunter2pw@db/app: password hunter2pw rejected",
            &[],
        )),
    ]);
    let text = serde_json::to_string(&build(&p, &["local"], &outcomes)).unwrap();
    assert!(!text.contains("tok-SECRET-42"), "{text}");
    assert!(!text.contains("hunter2pw"), "{text}");
    assert!(text.contains("postgres://app:****@db/app"), "{text}");
}

#[test]
fn error_rate_trigger_fires_above_the_threshold_only() {
    // confidence 0: the raw ratio, the seed article's literal rule.
    let p = plan("rollback: {on_fail: false, error_rate_above: 0.25, confidence: 0}\n");
    let run = |failed: usize| {
        let mut samples: Vec<(u64, bool)> = vec![(5, true); 4 - failed];
        samples.extend(vec![(5, false); failed]);
        let outcomes = local(vec![
            Some(outcome(CheckStatus::Pass, "ok", &[])),
            Some(outcome(CheckStatus::Pass, "ok", &samples)),
            Some(outcome(CheckStatus::Pass, "ok", &[])),
        ]);
        build(&p, &["local"], &outcomes).rollback
    };
    assert!(!run(1).recommended, "25% is not above 25%");
    let fired = run(2);
    assert!(fired.recommended);
    assert_eq!(
        fired.reasons,
        ["request error rate 50.0% is above 25.0% (2 of 4 requests failed; b 2/4; regions: local)"]
    );
}

#[test]
fn the_error_rate_trigger_needs_evidence_by_default() {
    let p = plan("rollback: {on_fail: false, error_rate_above: 0.25}\n");
    let run = |failed: usize, total: usize| {
        let mut samples: Vec<(u64, bool)> = vec![(5, true); total - failed];
        samples.extend(vec![(5, false); failed]);
        let outcomes = local(vec![
            Some(outcome(CheckStatus::Pass, "ok", &[])),
            Some(outcome(CheckStatus::Pass, "ok", &samples)),
            Some(outcome(CheckStatus::Pass, "ok", &[])),
        ]);
        build(&p, &["local"], &outcomes).rollback
    };
    let weak = run(2, 4);
    assert!(
        !weak.recommended,
        "2 of 4 is weak evidence of more than 25%"
    );
    assert_eq!(
        weak.held_back,
        [
            "error rate in local: 2 of 4 failed (50.0%), but the 95% lower bound 15.0% is not above 25.0%"
        ]
    );
    let strong = run(20, 20);
    assert_eq!(
        strong.reasons,
        [
            "request error rate 100.0% is above 25.0% (20 of 20 requests failed, 95% lower bound 83.9%; b 20/20; regions: local)"
        ]
    );
    assert!(strong.held_back.is_empty());
}

#[test]
fn missing_requests_are_counted_apart_and_never_as_failures() {
    let p = plan("rollback: {on_fail: false, error_rate_above: 0.1, confidence: 0}\n");
    let mut cut = outcome(CheckStatus::Pass, "ok", &[(5, true), (6, true)]);
    cut.missing = 3;
    let outcomes = local(vec![
        Some(outcome(CheckStatus::Pass, "ok", &[(5, true)])),
        Some(cut),
        Some(outcome(CheckStatus::Pass, "ok", &[])),
    ]);
    let r = build(&p, &["local"], &outcomes);
    assert_eq!(
        (r.requests.count, r.requests.errors, r.requests.missing),
        (3, 0, 3)
    );
    assert_eq!(r.checks[1].requests.missing, 3);
    assert!(!r.rollback.recommended);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["requests"]["missing"], 3);
}

#[test]
fn a_run_cut_off_by_its_deadline_does_not_act_on_its_verdict() {
    let p = plan("rollback: {action: {command: [./rollback.sh]}}\n");
    let outcomes = local(vec![
        Some(outcome(CheckStatus::Fail, "down", &[(1, false)])),
        None,
        Some(outcome(CheckStatus::Pass, "ok", &[])),
    ]);
    let regions = ["local".to_owned()];
    let env: HashMap<String, String> = HashMap::new();
    let report = |end: RunEnd, plan: &Plan| {
        build_report(&RunResults {
            plan,
            run_id: "r",
            started_at: UNIX_EPOCH,
            finished_at: UNIX_EPOCH,
            required_regions: &regions,
            results: &outcomes,
            unreported: &BTreeMap::new(),
            end,
            env: &env,
        })
        .rollback
    };
    let cut = report(RunEnd::TimedOut, &p);
    assert!(cut.recommended, "the verdict is FAIL");
    assert_eq!(cut.outcome, Some(ActionOutcome::Skipped));
    assert_eq!(
        cut.detail.as_deref(),
        Some(
            "not executed: the run timed out before every region reported, and missing data never acts (rollback.on_inconclusive: false)"
        )
    );
    assert!(report(RunEnd::Cancelled, &p).outcome.is_some());
    assert!(report(RunEnd::Completed, &p).awaits_action());
    let opted_in = plan("rollback: {on_inconclusive: true, action: {command: [./rollback.sh]}}\n");
    assert!(report(RunEnd::TimedOut, &opted_in).awaits_action());
}

#[test]
fn p99_trigger_fires_above_the_threshold_only() {
    let p = plan("rollback: {p99_latency_above: 2s}\n");
    let run = |slowest: u64| {
        let outcomes = local(vec![
            Some(outcome(CheckStatus::Pass, "ok", &[(slowest, true)])),
            Some(outcome(CheckStatus::Pass, "ok", &[(5, true)])),
            Some(outcome(CheckStatus::Pass, "ok", &[])),
        ]);
        build(&p, &["local"], &outcomes).rollback
    };
    assert!(!run(2000).recommended, "2 s is not above 2 s");
    let fired = run(2300);
    assert_eq!(
        fired.reasons,
        ["request p99 2.30 s is above 2s (over 2 requests, regions: local)"]
    );
}

#[test]
fn fail_recommends_rollback_unless_on_fail_is_off() {
    let outcomes = local(vec![
        Some(outcome(CheckStatus::Fail, "down", &[(1, false)])),
        Some(outcome(CheckStatus::Pass, "ok", &[(1, true); 20])),
        Some(outcome(CheckStatus::Pass, "ok", &[])),
    ]);
    let without_section = build(&plan(""), &["local"], &outcomes);
    assert_eq!(without_section.rollback.reasons, ["verdict FAIL: a failed"]);
    let off = build(
        &plan("rollback: {on_fail: false, error_rate_above: 0.5}\n"),
        &["local"],
        &outcomes,
    );
    assert_eq!(off.status, Overall::Fail);
    assert!(!off.rollback.recommended);
    let dry = build(
        &plan("rollback: {dry_run: true, action: {kubectl: {deployment: web}}}\n"),
        &["local"],
        &outcomes,
    );
    assert!(dry.rollback.dry_run);
    assert!(
        dry.rollback
            .action
            .unwrap()
            .starts_with("kubectl rollout undo deployment/web -n ")
    );
}

#[test]
fn several_regions_merge_under_the_quorum() {
    let p = plan("policy: {regions: [eu, us, ap], quorum: majority}\n");
    let mk = |entries: &[(&str, CheckStatus)]| -> BTreeMap<String, RegionResult> {
        entries
            .iter()
            .map(|(r, s)| {
                let o = outcome(
                    *s,
                    &format!("{r} says {s}"),
                    &[(10, *s == CheckStatus::Pass)],
                );
                (r.to_string(), RegionResult::from_outcome(&o))
            })
            .collect()
    };
    use CheckStatus::*;
    let outcomes = vec![
        mk(&[("eu", Fail), ("us", Fail), ("ap", Pass)]),
        mk(&[("eu", Pass), ("us", Pass), ("ap", Pass)]),
        mk(&[("eu", Pass), ("us", Pass)]),
    ];
    let r = build(&p, &["eu", "us", "ap"], &outcomes);
    assert_eq!(r.regions, ["ap", "eu", "us"]);
    assert_eq!(r.checks[0].status, Fail);
    assert_eq!(
        r.checks[0].message,
        "failed in 2 of 3 regions (eu, us): eu says fail"
    );
    assert_eq!(r.checks[2].status, Inconclusive);
    assert_eq!(r.checks[0].regions.len(), 3);
    assert_eq!(
        r.rollback.reasons[0],
        "verdict FAIL: a failed in 2 of 3 regions"
    );
    assert_eq!(r.requests.count, 8);
}
