use std::collections::HashMap;
use std::time::Duration;

use postflight_plan::vars::Expander;
use postflight_plan::{CheckStatus, parse_plan};

use super::*;
use crate::storage::RunStatus;

fn plan(per_region: &str) -> Plan {
    let yaml = format!(
        "name: p\nchecks:\n  - name: a\n    http: {{url: http://h/}}\n  - name: b\n    http: {{url: http://h/b}}\npolicy: {{regions: [eu, us], probes_per_region: {per_region}}}\n"
    );
    let env: HashMap<String, String> = HashMap::new();
    parse_plan(&yaml, "p.yaml", Expander::plan(&env)).unwrap()
}

fn run(per_region: &str) -> ActiveRun {
    let plan = plan(per_region);
    let (events, _) = broadcast::channel(4);
    ActiveRun {
        record: RunRecord {
            run_id: "r".into(),
            plan_name: "p".into(),
            plan_sealed: vec![],
            origin: "p.yaml".into(),
            status: RunStatus::Running,
            dry_run: false,
            regions: vec!["eu".into(), "us".into()],
            timeout_ms: 1000,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            verdict: None,
            report_json: None,
            rollback_json: None,
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
        },
        secrets: Secrets::of_plan(&plan),
        results: vec![BTreeMap::new(); plan.checks.len()],
        plan: Arc::new(plan),
        plan_yaml: Arc::from(""),
        deadline_unix_ms: 1000,
        assignments: BTreeMap::new(),
        result_count: 0,
        events,
        history: vec![],
        done: None,
        timer: tokio_util::sync::CancellationToken::new(),
        wake: std::sync::Arc::new(tokio::sync::Notify::new()),
    }
}

/// No coordinator but this one.
static NO_REMOTE: std::sync::LazyLock<HashMap<String, RemoteProbe>> =
    std::sync::LazyLock::new(HashMap::new);

fn here(local: &HashMap<String, LiveProbe>) -> Reach<'_> {
    Reach {
        local,
        remote: &NO_REMOTE,
    }
}

fn remote(list: &[(&str, &str, &str)]) -> HashMap<String, RemoteProbe> {
    list.iter()
        .map(|(name, region, coordinator)| {
            (
                name.to_string(),
                RemoteProbe {
                    name: name.to_string(),
                    region: region.to_string(),
                    coordinator: coordinator.to_string(),
                },
            )
        })
        .collect()
}

fn probes(list: &[(&str, &str, bool)]) -> HashMap<String, LiveProbe> {
    list.iter()
        .map(|(name, region, connected)| {
            let (link, _rx) = ProbeLink::channel(1);
            (
                name.to_string(),
                LiveProbe {
                    region: region.to_string(),
                    labels: BTreeMap::new(),
                    version: "t".into(),
                    session: connected.then(|| Session { id: 1, link }),
                    last_seen_ms: 0,
                    authenticated: true,
                },
            )
        })
        .collect()
}

fn assign(run: &mut ActiveRun, id: &str, region: &str, probe: &str, status: AssignmentStatus) {
    run.assignments.insert(
        id.into(),
        LiveAssignment::new(AssignmentRecord {
            assignment_id: id.into(),
            run_id: "r".into(),
            region: region.into(),
            probe: probe.into(),
            status,
            expected_results: None,
            detail: None,
            created_ms: 0,
            relay: None,
        }),
    );
}

fn result(status: CheckStatus, message: &str) -> RegionResult {
    RegionResult {
        status,
        message: message.into(),
        duration: Duration::from_millis(5),
        requests: postflight_plan::report::RequestCount {
            count: 1,
            errors: 0,
            missing: 0,
        },
        latency: None,
        sketch: postflight_plan::sketch::LatencySketch::new(),
        latencies_ms: Vec::new(),
        answer_shape: None,
        tally: None,
    }
}

#[test]
fn one_probe_per_region_the_least_busy_then_by_name() {
    let r = run("1");
    let p = probes(&[
        ("eu-b", "eu", true),
        ("eu-a", "eu", true),
        ("us-a", "us", false),
        ("ap-a", "ap", true),
    ]);
    let busy = HashMap::from([("eu-a".to_string(), 2)]);
    assert_eq!(
        probes_to_assign(&r, here(&p), &busy),
        [("eu".to_string(), "eu-b".to_string())],
        "us-a is not connected"
    );
    assert_eq!(probes_to_assign(&r, here(&p), &HashMap::new())[0].1, "eu-a");
}

#[test]
fn a_region_with_a_live_assignment_gets_no_other_and_rejecters_are_skipped() {
    let mut r = run("1");
    let p = probes(&[
        ("eu-a", "eu", true),
        ("eu-b", "eu", true),
        ("us-a", "us", true),
    ]);
    assign(&mut r, "1", "eu", "eu-a", AssignmentStatus::Active);
    assign(&mut r, "2", "us", "us-a", AssignmentStatus::Rejected);
    assert!(probes_to_assign(&r, here(&p), &HashMap::new()).is_empty());
    r.assignments.get_mut("1").unwrap().record.status = AssignmentStatus::Abandoned;
    assert_eq!(
        probes_to_assign(&r, here(&p), &HashMap::new()),
        [("eu".to_string(), "eu-a".to_string())]
    );
}

#[test]
fn all_probes_of_a_region_with_probes_per_region_all() {
    let mut r = run("all");
    let p = probes(&[
        ("eu-a", "eu", true),
        ("eu-b", "eu", true),
        ("us-a", "us", true),
    ]);
    assign(&mut r, "1", "eu", "eu-a", AssignmentStatus::Active);
    let picks = probes_to_assign(&r, here(&p), &HashMap::new());
    assert_eq!(
        picks,
        [
            ("eu".to_string(), "eu-b".to_string()),
            ("us".to_string(), "us-a".to_string())
        ]
    );
}

#[test]
fn a_region_without_a_probe_here_goes_to_a_probe_of_another_coordinator() {
    let r = run("1");
    let local = probes(&[("eu-a", "eu", true), ("us-gone", "us", false)]);
    let elsewhere = remote(&[
        ("us-b", "us", "coordinator b"),
        ("eu-z", "eu", "coordinator c"),
    ]);
    let reach = Reach {
        local: &local,
        remote: &elsewhere,
    };
    // eu-z is less busy than eu-a, but eu-a is connected here: no relay needed.
    let busy = HashMap::from([("eu-a".to_string(), 5)]);
    assert_eq!(
        probes_to_assign(&r, reach, &busy),
        [
            ("eu".to_string(), "eu-a".to_string()),
            ("us".to_string(), "us-b".to_string())
        ]
    );
    assert_eq!(reach.relay_of("us-b"), Some("coordinator b"));
    assert_eq!(reach.relay_of("eu-a"), None);
    assert!(!reach.reachable("us-gone"));
    // A probe connected here and listed elsewhere (it just moved) is served here, once.
    let moved = remote(&[("eu-a", "eu", "coordinator c")]);
    let reach = Reach {
        local: &local,
        remote: &moved,
    };
    assert_eq!(reach.relay_of("eu-a"), None);
    assert_eq!(reach.in_region("eu").count(), 1);
}

#[test]
fn a_rejected_region_is_not_settled_while_another_coordinator_has_a_probe_for_it() {
    let mut r = run("1");
    assign(&mut r, "2", "us", "us-a", AssignmentStatus::Finished);
    r.assignments.get_mut("2").unwrap().record.expected_results = Some(0);
    assign(&mut r, "1", "eu", "eu-a", AssignmentStatus::Rejected);
    let local = probes(&[("us-a", "us", true), ("eu-a", "eu", true)]);
    let elsewhere = remote(&[("eu-b", "eu", "coordinator b")]);
    let reach = Reach {
        local: &local,
        remote: &elsewhere,
    };
    assert!(!is_complete(&r, reach), "eu-b may still serve eu");
    assert!(is_complete(&r, here(&local)));
}

#[test]
fn completion_needs_every_result_of_every_region() {
    let mut r = run("1");
    let p = probes(&[("eu-a", "eu", true), ("us-a", "us", true)]);
    assign(&mut r, "1", "eu", "eu-a", AssignmentStatus::Active);
    assign(&mut r, "2", "us", "us-a", AssignmentStatus::Active);
    assert!(!is_complete(&r, here(&p)));
    for id in ["1", "2"] {
        let a = r.assignments.get_mut(id).unwrap();
        a.record.status = AssignmentStatus::Finished;
        a.record.expected_results = Some(2);
        a.received = 1;
    }
    assert!(
        !is_complete(&r, here(&p)),
        "finished, but one result is still on its way"
    );
    r.assignments.values_mut().for_each(|a| a.received = 2);
    assert!(is_complete(&r, here(&p)));
}

#[test]
fn a_region_with_no_probe_waits_but_one_that_only_refuses_is_settled() {
    let mut r = run("1");
    assign(&mut r, "2", "us", "us-a", AssignmentStatus::Finished);
    r.assignments.get_mut("2").unwrap().record.expected_results = Some(0);
    assert!(
        !is_complete(&r, here(&probes(&[("us-a", "us", true)]))),
        "no eu probe yet"
    );
    assign(&mut r, "1", "eu", "eu-a", AssignmentStatus::Rejected);
    assert!(is_complete(
        &r,
        here(&probes(&[("us-a", "us", true), ("eu-a", "eu", true)]))
    ));
    assert!(
        !is_complete(
            &r,
            here(&probes(&[
                ("us-a", "us", true),
                ("eu-a", "eu", true),
                ("eu-b", "eu", true)
            ]))
        ),
        "eu-b may still serve eu"
    );
}

#[test]
fn reports_use_live_assignments_first() {
    let mut r = run("1");
    assign(&mut r, "old", "eu", "eu-a", AssignmentStatus::Abandoned);
    assign(&mut r, "new", "eu", "eu-b", AssignmentStatus::Finished);
    r.results[0].insert(
        "eu".into(),
        vec![
            ("old".into(), result(CheckStatus::Fail, "old")),
            ("new".into(), result(CheckStatus::Pass, "new")),
        ],
    );
    r.results[1].insert(
        "eu".into(),
        vec![("old".into(), result(CheckStatus::Warn, "only old"))],
    );
    let merged = take_region_results(&mut r);
    assert_eq!(merged[0]["eu"].message, "new");
    assert_eq!(
        merged[1]["eu"].message, "only old",
        "better an abandoned result than none"
    );
}

#[test]
fn all_mode_combines_every_probe_of_a_region() {
    let mut r = run("all");
    assign(&mut r, "1", "eu", "eu-a", AssignmentStatus::Finished);
    assign(&mut r, "2", "eu", "eu-b", AssignmentStatus::Finished);
    r.results[0].insert(
        "eu".into(),
        vec![
            ("1".into(), result(CheckStatus::Pass, "a ok")),
            ("2".into(), result(CheckStatus::Fail, "b down")),
        ],
    );
    let merged = take_region_results(&mut r);
    assert_eq!(merged[0]["eu"].status, CheckStatus::Fail);
    assert_eq!(merged[0]["eu"].message, "b down");
    assert_eq!(merged[0]["eu"].requests.count, 2);
}

#[test]
fn one_result_per_check_is_stored_replays_and_surplus_are_not() {
    let mut a = LiveAssignment::new(AssignmentRecord {
        assignment_id: "a".into(),
        run_id: "r".into(),
        region: "eu".into(),
        probe: "p".into(),
        status: AssignmentStatus::Active,
        expected_results: None,
        detail: None,
        created_ms: 0,
        relay: None,
    });
    assert_eq!(a.arrive(0, 1), Arrival::New);
    assert_eq!(
        a.arrive(2, 2),
        Arrival::New,
        "checks may arrive out of order"
    );
    assert_eq!(
        a.arrive(0, 1),
        Arrival::Replay,
        "a replay after a reconnect"
    );
    assert_eq!(
        a.arrive(0, 9),
        Arrival::Surplus,
        "a second result for check 0"
    );
    assert_eq!(a.arrive(1, 3), Arrival::New);
    a.forget(1);
    assert_eq!(a.arrive(1, 3), Arrival::New, "not stored, so taken again");
    a.forget(7);
    assert_eq!(a.stored, [Some(1), Some(3), Some(2)]);
}
