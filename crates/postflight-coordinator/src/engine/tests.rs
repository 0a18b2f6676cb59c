//! The run lifecycle against a real SQLite store, with probe streams as channels.

use std::time::Duration;

use postflight_proto::v1;
use tokio::sync::mpsc;

use super::*;
use crate::storage::SqliteStore;
use postflight_plan::CheckStatus;

const PLAN: &str = "name: p\ntarget: {base_url: \"http://h\", headers: {Authorization: \"Bearer tok-SECRET-9\"}}\nchecks:\n  - name: a\n    http: {url: /a}\n  - name: b\n    http: {url: /b}\npolicy: {regions: [eu, us]}\n";

type Rx = mpsc::Receiver<link::Outgoing>;

/// An assignment as a probe received it.
#[derive(Debug, Clone)]
struct Assigned {
    assignment_id: String,
    run_id: String,
}

async fn coordinator(dir: &std::path::Path) -> Coordinator<SqliteStore> {
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("c.db").display()))
        .await
        .unwrap();
    let sealer = Sealer::load_or_create(&dir.join("c.key")).unwrap();
    let config = Config {
        reassign_after: Duration::from_millis(100),
        ..Config::default()
    };
    Coordinator::start(store, sealer, config).await.unwrap()
}

async fn connect(
    c: &Coordinator<SqliteStore>,
    name: &str,
    region: &str,
    active: &[&str],
) -> (u64, Rx) {
    let (tx, mut rx) = ProbeLink::channel(64);
    let hello = ProbeHello {
        name: name.into(),
        region: region.into(),
        active_assignments: active.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let session = c.probe_connected(&hello, true, tx).await.unwrap();
    match rx.recv().await {
        Some(Ok(ToProbe::Welcome { .. })) => {}
        other => panic!("expected a welcome, got {other:?}"),
    }
    (session, rx)
}

async fn assignment(rx: &mut Rx) -> Assigned {
    match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        Ok(Some(Ok(ToProbe::Assignment {
            assignment_id,
            run_id,
            ..
        }))) => Assigned {
            assignment_id,
            run_id,
        },
        other => panic!("expected an assignment, got {other:?}"),
    }
}

/// A probe's result as the gRPC service hands it to the engine.
fn result(
    a: &Assigned,
    id: &str,
    index: u32,
    status: v1::CheckStatus,
) -> postflight_plan::report::ProbeResult {
    postflight_proto::probe_result(v1::CheckResult {
        result_id: id.into(),
        run_id: a.run_id.clone(),
        assignment_id: a.assignment_id.clone(),
        check_index: index,
        check_name: "x".into(),
        status: status.into(),
        message: "server said tok-SECRET-9".into(),
        duration_ms: 3.0,
        requests: 1,
        request_errors: 0,
        ..Default::default()
    })
    .unwrap()
}

/// Waits until the run's owner has ended it (at most 5 s).
async fn ended(c: &Coordinator<SqliteStore>, run_id: &str) -> RunRecord {
    for _ in 0..500 {
        let (record, _) = c.get_run(run_id).await.unwrap();
        if !matches!(record.status, RunStatus::Pending | RunStatus::Running) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run_id} did not end");
}

fn finished(a: &Assigned, results: u32) -> AssignmentFinished {
    AssignmentFinished {
        assignment_id: a.assignment_id.clone(),
        run_id: a.run_id.clone(),
        results,
    }
}

#[tokio::test]
async fn a_run_goes_from_submission_to_a_stored_report_and_replays_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let (_, mut eu) = connect(&c, "eu-1", "eu", &[]).await;
    let record = c
        .submit(PLAN, "p.yaml", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Running, "eu has a probe");
    assert_eq!(record.regions, ["eu", "us"]);
    let stored = c.store().get_run(&record.run_id).await.unwrap().unwrap();
    assert!(
        !String::from_utf8_lossy(&stored.plan_sealed).contains("tok-SECRET-9"),
        "the plan is sealed at rest"
    );
    let a_eu = assignment(&mut eu).await;
    let (_, mut us) = connect(&c, "us-1", "us", &[]).await;
    let a_us = assignment(&mut us).await;

    let batch = [
        result(&a_eu, "r1", 0, v1::CheckStatus::Pass),
        result(&a_eu, "r2", 1, v1::CheckStatus::Fail),
    ];
    assert_eq!(
        c.ingest("eu-1", batch.to_vec()).await.unwrap(),
        ["r1", "r2"]
    );
    // The probe's stream breaks; it reconnects and replays what it had not seen
    // acknowledged.
    drop(eu);
    let (_, _eu_again) = connect(&c, "eu-1", "eu", &[&a_eu.assignment_id]).await;
    assert_eq!(
        c.ingest("eu-1", batch.to_vec()).await.unwrap(),
        ["r1", "r2"],
        "a replay is acknowledged"
    );
    assert_eq!(
        c.get_run(&record.run_id).await.unwrap().1,
        2,
        "and stored once"
    );
    // A chatty (or hostile) probe: more results for checks that have one.
    let surplus: Vec<_> = (0..500)
        .map(|i| result(&a_eu, &format!("extra-{i}"), i % 2, v1::CheckStatus::Pass))
        .collect();
    assert_eq!(
        c.ingest("eu-1", surplus).await.unwrap().len(),
        500,
        "surplus results are acknowledged (the probe must not resend them)"
    );
    assert_eq!(
        c.get_run(&record.run_id).await.unwrap().1,
        2,
        "but neither stored nor counted"
    );
    assert!(
        c.metrics()
            .encode()
            .contains("postflight_results_surplus_total 500"),
        "they are counted"
    );
    let stolen = c.ingest("us-1", batch.to_vec()).await.unwrap_err();
    assert!(
        stolen.to_string().contains("belongs to another probe"),
        "{stolen}"
    );

    c.assignment_finished("eu-1", &finished(&a_eu, 2))
        .await
        .unwrap();
    c.ingest("us-1", vec![result(&a_us, "r3", 0, v1::CheckStatus::Pass)])
        .await
        .unwrap();
    c.assignment_finished("us-1", &finished(&a_us, 2))
        .await
        .unwrap();
    assert!(
        matches!(
            c.report(&record.run_id).await,
            Err(CoordinatorError::FailedPrecondition(_))
        ),
        "us owes a result"
    );
    c.ingest("us-1", vec![result(&a_us, "r4", 1, v1::CheckStatus::Pass)])
        .await
        .unwrap();

    // The last result only signals; the run's owner task ends it.
    ended(&c, &record.run_id).await;
    let report = c.report(&record.run_id).await.unwrap();
    assert_eq!(
        report.status,
        postflight_plan::Overall::Pass,
        "b failed in 1 of 2 regions: warn"
    );
    assert_eq!(report.checks[1].status, CheckStatus::Warn);
    assert_eq!(report.regions, ["eu", "us"]);
    assert!(
        !serde_json::to_string(&report)
            .unwrap()
            .contains("tok-SECRET-9")
    );
    let (done, count) = c.get_run(&record.run_id).await.unwrap();
    assert_eq!((done.status, count), (RunStatus::Completed, 4));
    let batches = c.store().batches(&record.run_id).await.unwrap();
    assert_eq!(batches.iter().map(|b| b.results).sum::<i64>(), 4);
    assert!(
        batches
            .iter()
            .all(|b| !String::from_utf8_lossy(&b.data).contains("tok-SECRET-9")),
        "stored messages are masked"
    );
}

#[tokio::test]
async fn a_restarted_coordinator_resumes_its_runs_and_keeps_the_probes_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let (run_id, a_eu) = {
        let c = coordinator(dir.path()).await;
        let (_, mut eu) = connect(&c, "eu-1", "eu", &[]).await;
        let record = c
            .submit(PLAN, "p.yaml", RunOptions::default())
            .await
            .unwrap();
        let a = assignment(&mut eu).await;
        c.ingest("eu-1", vec![result(&a, "r1", 0, v1::CheckStatus::Pass)])
            .await
            .unwrap();
        (record.run_id, a)
    };
    // A new process over the same database.
    let c = coordinator(dir.path()).await;
    let (record, count) = c.get_run(&run_id).await.unwrap();
    assert_eq!(
        (record.status, count),
        (RunStatus::Running, 1),
        "resumed with its stored result"
    );
    let (_, mut eu) = connect(&c, "eu-1", "eu", &[&a_eu.assignment_id]).await;
    c.ingest(
        "eu-1",
        vec![
            result(&a_eu, "r1", 0, v1::CheckStatus::Pass),
            result(&a_eu, "r2", 1, v1::CheckStatus::Pass),
        ],
    )
    .await
    .unwrap();
    c.assignment_finished("eu-1", &finished(&a_eu, 2))
        .await
        .unwrap();
    assert_eq!(
        c.get_run(&run_id).await.unwrap().1,
        2,
        "the replayed r1 is not counted twice"
    );
    // The probe kept its assignment: it is not sent a new one.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), eu.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_unknown_or_leftover_variable_and_no_region_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let err = c
        .submit(
            "name: p\nchecks:\n  - name: a\n    http: {url: \"${HOST}/x\"}\n",
            "p.yaml",
            RunOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("plan_yaml: invalid plan:\np.yaml:4:18: variable HOST is not set"),
        "{err}"
    );
    let err = c
        .submit(
            "name: p\nchecks:\n  - name: a\n    http: {url: http://h/}\n",
            "p.yaml",
            RunOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordinatorError::FailedPrecondition(_)),
        "{err}"
    );
    let options = RunOptions {
        regions: vec!["bad region".into()],
        ..Default::default()
    };
    let err = c.submit(PLAN, "p.yaml", options).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "options.regions[0]: `bad region` is not a region name"
    );
    assert!(matches!(
        c.get_run("nope").await,
        Err(CoordinatorError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_cancelled_run_ends_with_a_report_and_its_probes_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let (_, mut eu) = connect(&c, "eu-1", "eu", &[]).await;
    let record = c
        .submit(PLAN, "p.yaml", RunOptions::default())
        .await
        .unwrap();
    let a = assignment(&mut eu).await;
    c.ingest("eu-1", vec![result(&a, "r1", 0, v1::CheckStatus::Pass)])
        .await
        .unwrap();
    let cancelled = c.cancel(&record.run_id, "").await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    match tokio::time::timeout(Duration::from_secs(2), eu.recv()).await {
        Ok(Some(Ok(ToProbe::Cancel {
            assignment_id,
            reason,
        }))) => {
            assert_eq!(assignment_id, a.assignment_id);
            assert_eq!(reason, "cancelled by an operator");
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    let report = c.report(&record.run_id).await.unwrap();
    assert_eq!(
        report.status,
        postflight_plan::Overall::Inconclusive,
        "us never reported"
    );
    assert_eq!(
        report.checks[0].regions["eu"].status,
        CheckStatus::Pass,
        "what arrived is kept"
    );
    let again = c.cancel(&record.run_id, "").await.unwrap_err();
    assert!(
        matches!(again, CoordinatorError::FailedPrecondition(_)),
        "{again}"
    );
}

#[tokio::test]
async fn the_probes_gauge_keeps_a_silent_region_at_zero_and_counts_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let (eu_session, _eu) = connect(&c, "eu-1", "eu", &[]).await;
    let (_, us) = connect(&c, "us-1", "us", &[]).await;
    c.probe_disconnected("eu-1", eu_session).await;
    drop(us);
    let (_, _us_again) = connect(&c, "us-1", "us", &[]).await;
    c.refresh_gauges();
    let text = c.metrics().encode();
    assert!(
        text.contains("postflight_probes_connected{region=\"eu\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("postflight_probes_connected{region=\"us\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("postflight_probe_connections_total{region=\"us\"} 2"),
        "{text}"
    );
    assert!(text.contains("postflight_runs_active 0"), "{text}");
}

#[tokio::test]
async fn probes_are_listed_a_page_at_a_time_and_old_ones_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = coordinator(dir.path()).await;
        let mut streams = Vec::new();
        for name in ["p-a", "p-b", "p-c"] {
            streams.push(connect(&c, name, "eu", &[]).await);
        }
        let (first, next) = c.list_probes("", 2).await.unwrap();
        let names: Vec<_> = first.iter().map(|(p, up)| (p.name.as_str(), *up)).collect();
        assert_eq!(names, [("p-a", true), ("p-b", true)]);
        assert_eq!(next.as_deref(), Some("p-b"));
        let (last, next) = c.list_probes("p-b", 2).await.unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(next, None, "nothing follows the last page");
        // p-c went away long ago; p-a and p-b stay connected. The connected ones are recorded
        // as seen now, so a coordinator started next (which forgets probes not seen for an
        // hour) keeps them.
        let (session, _) = streams.pop().unwrap();
        c.probe_disconnected("p-c", session).await;
        c.store()
            .upsert_probe(&ProbeRecord {
                name: "p-c".into(),
                region: "eu".into(),
                labels: BTreeMap::new(),
                version: String::new(),
                last_seen_ms: now_ms() - 2 * 3_600_000,
            })
            .await
            .unwrap();
        c.forget_old_probes().await;
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        let sealer = Sealer::load_or_create(&dir.path().join("c.key")).unwrap();
        let config = Config {
            forget_probes_after: Duration::from_secs(3600),
            ..Config::default()
        };
        let restarted = Coordinator::start(store, sealer, config).await.unwrap();
        let (kept, _) = restarted.list_probes("", 10).await.unwrap();
        let names: Vec<_> = kept.iter().map(|(p, _)| p.name.as_str()).collect();
        assert_eq!(names, ["p-a", "p-b"], "p-c was last seen too long ago");
    }
}

/// What a restart finds of rollback claims left without outcome, each as a crash leaves it:
/// an action that was running (its report says `pending`) is recorded interrupted, in the
/// ledger and the report, and not run again; a claim whose decision was never stored (its run
/// still running) never started and is withdrawn; an outcome stored in the report but not in
/// the ledger is copied over.
#[tokio::test]
async fn a_restart_settles_the_claims_left_without_outcome() {
    use postflight_plan::rollback::{ActionOutcome, RollbackReport};
    use postflight_rollback::{ClaimOutcome, RollbackClaim};
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let identity = c.config().identity.clone();
    let store = c.store().clone();
    let run = |id: &str, status: RunStatus, outcome: Option<ActionOutcome>| {
        let rollback = RollbackReport {
            recommended: true,
            triggered: true,
            reasons: vec!["verdict FAIL: a failed".into()],
            outcome,
            ..RollbackReport::default()
        };
        RunRecord {
            run_id: id.into(),
            plan_name: "p".into(),
            plan_sealed: c.inner.sealer.seal(PLAN.as_bytes()),
            origin: "p.yaml".into(),
            status,
            dry_run: false,
            regions: vec!["eu".into(), "us".into()],
            timeout_ms: 3_600_000,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            verdict: Some("FAIL".into()),
            report_json: None,
            rollback_json: outcome.map(|_| serde_json::to_string(&rollback).unwrap()),
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
    };
    let cases = [
        ("acting", RunStatus::Completed, Some(ActionOutcome::Pending)),
        ("never-started", RunStatus::Running, None),
        (
            "unrecorded",
            RunStatus::Completed,
            Some(ActionOutcome::Succeeded),
        ),
    ];
    for (id, status, outcome) in cases {
        store.insert_run(&run(id, status, outcome)).await.unwrap();
        let claim = RollbackClaim {
            subject: format!("run:{id}"),
            plan_name: format!("plan-{id}"),
            run_id: id.into(),
            executed_by: identity.clone(),
            claimed_ms: now_ms(),
            action_kind: "kubectl".into(),
        };
        assert_eq!(
            store.claim_rollback(&claim, 0).await.unwrap(),
            ClaimOutcome::Claimed
        );
    }
    drop(c);
    let again = coordinator(dir.path()).await;
    let store = again.store();
    assert!(
        store
            .pending_rollbacks(&identity, 0)
            .await
            .unwrap()
            .is_empty(),
        "every claim is settled"
    );
    let acting = store.get_run("acting").await.unwrap().unwrap();
    let rollback: RollbackReport =
        serde_json::from_str(acting.rollback_json.as_deref().unwrap()).unwrap();
    assert_eq!(rollback.outcome, Some(ActionOutcome::Interrupted));
    assert!(
        rollback
            .error
            .as_deref()
            .unwrap()
            .contains("its outcome is unknown and it is not run again"),
        "{rollback:?}"
    );
    // The withdrawn claim can be taken again when the resumed run decides; the others not.
    let retake = |id: &str| RollbackClaim {
        subject: format!("run:{id}"),
        plan_name: format!("other-{id}"),
        run_id: id.into(),
        executed_by: identity.clone(),
        claimed_ms: now_ms(),
        action_kind: "kubectl".into(),
    };
    assert_eq!(
        store
            .claim_rollback(&retake("never-started"), 0)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    for id in ["acting", "unrecorded"] {
        assert!(matches!(
            store.claim_rollback(&retake(id), 0).await.unwrap(),
            ClaimOutcome::AlreadyClaimed { .. }
        ));
    }
    let unrecorded = store.get_run("unrecorded").await.unwrap().unwrap();
    let rollback: RollbackReport =
        serde_json::from_str(unrecorded.rollback_json.as_deref().unwrap()).unwrap();
    assert_eq!(
        rollback.outcome,
        Some(ActionOutcome::Succeeded),
        "left as it was"
    );
}

/// Two live streams under one name would take each other's assignments: the second is
/// refused while the first is open, and let in once it is gone.
#[tokio::test]
async fn a_second_live_session_for_a_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let (_, first) = connect(&c, "eu-1", "eu", &[]).await;
    let hello = ProbeHello {
        name: "eu-1".into(),
        region: "us".into(),
        ..Default::default()
    };
    let (tx, _rx) = ProbeLink::channel(4);
    let err = c.probe_connected(&hello, true, tx).await.unwrap_err();
    assert!(
        matches!(&err, CoordinatorError::AlreadyExists(m) if m.starts_with("probe eu-1 is already connected")),
        "{err}"
    );
    assert_eq!(
        c.state().probes["eu-1"].region,
        "eu",
        "the first keeps its region"
    );
    drop(first);
    let _ = connect(&c, "eu-1", "eu", &[]).await;
}
