//! One storage suite, run against a real SQLite file and a real PostgreSQL database.

use std::collections::BTreeMap;

use postflight_plan::rollback::ActionOutcome;

use super::*;
use postflight_e2e::ScratchDb;

fn run(id: &str, created: i64, plan: &str, status: RunStatus) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        plan_name: plan.into(),
        plan_sealed: vec![1, 2, 3, 0, 255],
        origin: "plan.yaml".into(),
        status,
        dry_run: true,
        regions: vec!["eu".into(), "us".into()],
        timeout_ms: 300_000,
        created_ms: created,
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
    }
}

fn batch(run_id: &str, results: i64, data: &[u8]) -> BatchRecord {
    BatchRecord {
        run_id: run_id.into(),
        assignment_id: "a1".into(),
        region: "eu".into(),
        probe: "probe-eu-1".into(),
        received_ms: 1_000,
        results,
        data: data.to_vec(),
        seq: 0,
    }
}

async fn suite<S: Store>(store: S) {
    // Probes: insert, update, list.
    let mut probe = ProbeRecord {
        name: "probe-eu-1".into(),
        region: "eu".into(),
        labels: BTreeMap::from([("zone".into(), "eu-west-1a".into())]),
        version: "0.1.0".into(),
        last_seen_ms: 10,
    };
    store.upsert_probe(&probe).await.unwrap();
    probe.last_seen_ms = 20;
    probe.region = "eu-west".into();
    store.upsert_probe(&probe).await.unwrap();
    assert_eq!(
        store.list_probes("", 10).await.unwrap(),
        vec![probe.clone()]
    );
    // Pages by name; forgetting by age, then beyond a count (least recently seen first).
    for (name, seen) in [("a", 5), ("b", 30), ("c", 40), ("d", 50)] {
        store
            .upsert_probe(&ProbeRecord {
                name: name.into(),
                last_seen_ms: seen,
                ..probe.clone()
            })
            .await
            .unwrap();
    }
    let names = |page: Vec<ProbeRecord>| page.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(store.list_probes("", 2).await.unwrap()), ["a", "b"]);
    assert_eq!(names(store.list_probes("b", 2).await.unwrap()), ["c", "d"]);
    assert_eq!(
        names(store.list_probes("d", 2).await.unwrap()),
        ["probe-eu-1"]
    );
    assert_eq!(store.forget_probes(10, 100).await.unwrap(), 1, "a is old");
    assert_eq!(
        store.forget_probes(10, 2).await.unwrap(),
        2,
        "b and probe-eu-1 are the oldest"
    );
    assert_eq!(names(store.list_probes("", 10).await.unwrap()), ["c", "d"]);
    store.forget_probes(0, 0).await.unwrap();
    assert!(store.list_probes("", 10).await.unwrap().is_empty());
    store.upsert_probe(&probe).await.unwrap();

    // Runs: insert, get, list (newest first, by plan), update, unfinished.
    store
        .insert_run(&run("r1", 100, "a", RunStatus::Running))
        .await
        .unwrap();
    store
        .insert_run(&run("r2", 200, "b", RunStatus::Pending))
        .await
        .unwrap();
    store
        .insert_run(&run("r3", 300, "a", RunStatus::Completed))
        .await
        .unwrap();
    let got = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(got, run("r1", 100, "a", RunStatus::Running));
    assert!(store.get_run("nope").await.unwrap().is_none());
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_runs(10, None).await.unwrap()),
        ["r3", "r2", "r1"]
    );
    assert_eq!(ids(store.list_runs(1, None).await.unwrap()), ["r3"]);
    assert_eq!(
        ids(store.list_runs(10, Some("a")).await.unwrap()),
        ["r3", "r1"]
    );
    assert_eq!(ids(store.unfinished_runs().await.unwrap()), ["r1", "r2"]);
    let mut done = got.clone();
    done.status = RunStatus::Completed;
    done.started_ms = Some(110);
    done.finished_ms = Some(150);
    done.verdict = Some("FAIL".into());
    done.report_json = Some("{\"status\":\"FAIL\"}".into());
    done.rollback_json = Some("{}".into());
    store.update_run(&done).await.unwrap();
    assert_eq!(store.get_run("r1").await.unwrap().unwrap(), done);
    assert_eq!(ids(store.unfinished_runs().await.unwrap()), ["r2"]);

    // Owners and leases, on the database's clock: a live owner's run cannot be claimed; an
    // expired lease can (a negative lease is expired at once); a coordinator that lost its
    // run writes nothing; only unfinished runs are claimed.
    let mut owned = run("r4", 400, "a", RunStatus::Running);
    owned.owner = Some("A".into());
    owned.lease_until_ms = Some(i64::MAX / 2);
    store.insert_run(&owned).await.unwrap();
    assert!(!store.claim_run("r4", "B", 60_000).await.unwrap());
    assert!(store.claim_run("r4", "A", 60_000).await.unwrap());
    assert_eq!(store.renew_run_leases("A", 60_000).await.unwrap(), ["r4"]);
    let lease = store
        .get_run("r4")
        .await
        .unwrap()
        .unwrap()
        .lease_until_ms
        .unwrap();
    let now = postflight_ops::host::now_ms();
    assert!(
        (now + 50_000..now + 70_000).contains(&lease),
        "the lease runs from the database's now: {lease} vs {now}"
    );
    assert!(!store.claim_run("r4", "B", 60_000).await.unwrap());
    assert_eq!(store.renew_run_leases("A", -1).await.unwrap(), ["r4"]);
    assert!(store.claim_run("r4", "B", 60_000).await.unwrap(), "expired");
    let mut stale = owned.clone();
    stale.status = RunStatus::Completed;
    stale.verdict = Some("PASS".into());
    assert!(
        !store.update_run(&stale).await.unwrap(),
        "A lost the run: its write is refused"
    );
    let mut adopter = stale.clone();
    adopter.owner = Some("B".into());
    adopter.verdict = Some("FAIL".into());
    assert!(store.update_run(&adopter).await.unwrap());
    let stored = store.get_run("r4").await.unwrap().unwrap();
    assert_eq!(stored.verdict.as_deref(), Some("FAIL"));
    assert_eq!(stored.owner.as_deref(), Some("B"));
    assert!(
        !store.claim_run("r4", "C", 60_000).await.unwrap(),
        "finished"
    );
    assert!(
        store
            .renew_run_leases("B", 60_000)
            .await
            .unwrap()
            .is_empty(),
        "finished"
    );
    assert!(
        store.claim_run("r2", "C", 60_000).await.unwrap(),
        "no owner yet"
    );
    // A released lease lets anyone adopt the run at once.
    assert!(!store.claim_run("r2", "D", 60_000).await.unwrap());
    store.release_run("r2", "C").await.unwrap();
    assert_eq!(store.adoptable().await.unwrap().runs, ["r2"]);
    assert!(store.claim_run("r2", "D", 60_000).await.unwrap());
    assert!(
        store.adoptable().await.unwrap().runs.is_empty(),
        "held by D"
    );

    // Assignments.
    let mut a = AssignmentRecord {
        assignment_id: "a1".into(),
        run_id: "r2".into(),
        region: "eu".into(),
        probe: "probe-eu-1".into(),
        status: AssignmentStatus::Active,
        expected_results: None,
        detail: None,
        created_ms: 5,
        relay: None,
    };
    store.insert_assignment(&a).await.unwrap();
    a.status = AssignmentStatus::Finished;
    a.expected_results = Some(4);
    store.update_assignment(&a).await.unwrap();
    assert_eq!(store.assignments("r2").await.unwrap(), vec![a.clone()]);

    // Result batches, in arrival order, counted.
    store
        .insert_batches(&[batch("r2", 64, &[1, 2, 3]), batch("r2", 2, &[0, 255])])
        .await
        .unwrap();
    store.insert_batches(&[batch("r2", 1, &[7])]).await.unwrap();
    let stored = store.batches("r2").await.unwrap();
    assert!(
        stored[0].seq > 0 && stored.windows(2).all(|w| w[0].seq < w[1].seq),
        "positions follow arrival: {stored:?}"
    );
    let unnumbered: Vec<BatchRecord> = stored
        .iter()
        .map(|b| BatchRecord {
            seq: 0,
            ..b.clone()
        })
        .collect();
    assert_eq!(
        unnumbered,
        vec![
            batch("r2", 64, &[1, 2, 3]),
            batch("r2", 2, &[0, 255]),
            batch("r2", 1, &[7])
        ]
    );
    assert_eq!(
        store
            .batches_after("r2", "a1", stored[0].seq)
            .await
            .unwrap(),
        stored[1..].to_vec(),
        "an owner reads what was stored after the last batch it read"
    );
    assert!(
        store
            .batches_after("r2", "other", 0)
            .await
            .unwrap()
            .is_empty()
    );

    // Relays: a coordinator announces itself and the probes connected to it; others see
    // those probes while its lease holds, and it relays the assignments given to them.
    store.announce_coordinator("B", 60_000).await.unwrap();
    store.announce_coordinator("B", 60_000).await.unwrap();
    store.probe_arrived(&probe, "B").await.unwrap();
    let seen_from_a = store.remote_probes("A").await.unwrap();
    assert_eq!(
        seen_from_a,
        vec![RemoteProbe {
            name: "probe-eu-1".into(),
            region: "eu-west".into(),
            coordinator: "B".into()
        }]
    );
    assert!(
        store.remote_probes("B").await.unwrap().is_empty(),
        "its own probes are not remote"
    );
    // A guarded disconnect does not undo another coordinator's newer connection.
    store
        .connect_probe("probe-eu-1", None, Some("C"))
        .await
        .unwrap();
    assert_eq!(store.remote_probes("A").await.unwrap().len(), 1);
    let mut relayed = AssignmentRecord {
        assignment_id: "a-relayed".into(),
        status: AssignmentStatus::Active,
        expected_results: None,
        relay: Some("B".into()),
        ..a.clone()
    };
    store.insert_assignment(&relayed).await.unwrap();
    assert_eq!(store.relayed_by("B").await.unwrap(), vec![relayed.clone()]);
    assert!(store.relayed_by("A").await.unwrap().is_empty());
    // The probe moves to C: C takes the relay, only of its own active assignment.
    assert_eq!(
        store
            .take_relay("a-relayed", "someone-else", Some("C"))
            .await
            .unwrap(),
        None
    );
    let taken = store
        .take_relay("a-relayed", "probe-eu-1", Some("C"))
        .await
        .unwrap();
    relayed.relay = Some("C".into());
    assert_eq!(taken.as_ref(), Some(&relayed));
    assert!(store.relayed_by("B").await.unwrap().is_empty());
    // The relay settles it once; the owner's word (abandoned) wins over a late relay.
    relayed.status = AssignmentStatus::Finished;
    relayed.expected_results = Some(3);
    assert!(store.settle_relayed(&relayed).await.unwrap());
    assert!(!store.settle_relayed(&relayed).await.unwrap());
    assert_eq!(
        store.relayed_by("C").await.unwrap(),
        vec![relayed.clone()],
        "a finished assignment stays relayed while its run runs"
    );
    assert_eq!(
        store
            .take_relay("a-relayed", "probe-eu-1", Some("B"))
            .await
            .unwrap(),
        None,
        "only an active assignment moves"
    );
    // A round's assignments at once, in one transaction.
    let round: Vec<AssignmentRecord> = (0..700)
        .map(|i| AssignmentRecord {
            assignment_id: format!("a-round-{i:04}"),
            run_id: "r1".into(),
            probe: format!("p-{i}"),
            created_ms: 6,
            ..a.clone()
        })
        .collect();
    store.insert_assignments(&round).await.unwrap();
    store.insert_assignments(&[]).await.unwrap();
    assert_eq!(
        store.assignments("r1").await.unwrap(),
        round,
        "more rows than one insert statement holds"
    );
    // A probe connected to C with an active assignment relayed by B (it moved): C finds it.
    let mut stray = AssignmentRecord {
        assignment_id: "a-stray".into(),
        status: AssignmentStatus::Active,
        expected_results: None,
        detail: None,
        relay: Some("B".into()),
        ..a.clone()
    };
    store.insert_assignment(&stray).await.unwrap();
    store
        .connect_probe("probe-eu-1", Some("C"), None)
        .await
        .unwrap();
    assert_eq!(store.strays_for("C").await.unwrap(), vec![stray.clone()]);
    assert!(store.strays_for("B").await.unwrap().is_empty());
    stray.relay = Some("C".into());
    assert_eq!(
        store
            .take_relay("a-stray", "probe-eu-1", Some("C"))
            .await
            .unwrap(),
        Some(stray.clone())
    );
    assert!(store.strays_for("C").await.unwrap().is_empty());
    // A coordinator that stops takes its probes' connections with it.
    store.withdraw_coordinator("B").await.unwrap();
    assert!(store.remote_probes("A").await.unwrap().is_empty());
    store.announce_coordinator("B", 60_000).await.unwrap();
    assert!(
        store.remote_probes("A").await.unwrap().is_empty(),
        "back, but its probes must connect again"
    );
    store
        .connect_probe("probe-eu-1", Some("B"), None)
        .await
        .unwrap();
    store.announce_coordinator("B", -1).await.unwrap();
    assert!(
        store.remote_probes("A").await.unwrap().is_empty(),
        "an expired lease hides a coordinator's probes"
    );
    assert_eq!(store.count_results("r2").await.unwrap(), 67);
    assert_eq!(store.count_results("r1").await.unwrap(), 0);
    assert!(store.batches("r1").await.unwrap().is_empty());
    let many: Vec<BatchRecord> = (0..600).map(|i| batch("r3", 1, &[i as u8])).collect();
    store.insert_batches(&many).await.unwrap();
    assert_eq!(
        store.count_results("r3").await.unwrap(),
        600,
        "more rows than one insert statement holds"
    );

    // Rollback claims: once per subject, never within the plan's cooldown.
    let claim = |subject: &str, plan: &str, at: i64| RollbackClaim {
        subject: subject.into(),
        plan_name: plan.into(),
        run_id: "r2".into(),
        executed_by: "coordinator A".into(),
        claimed_ms: at,
        action_kind: "command".into(),
    };
    assert_eq!(
        store
            .claim_rollback(&claim("run:r2", "a", 10_000), 5_000)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store
            .claim_rollback(&claim("run:r2", "a", 10_001), 5_000)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyClaimed {
            by: "coordinator A".into(),
            at_ms: 10_000
        }
    );
    assert_eq!(
        store
            .claim_rollback(&claim("run:r9", "a", 14_000), 5_000)
            .await
            .unwrap(),
        ClaimOutcome::CoolingDown {
            by: "coordinator A".into(),
            at_ms: 10_000,
            run_id: "r2".into()
        }
    );
    assert_eq!(
        store
            .claim_rollback(&claim("run:r9", "b", 14_000), 5_000)
            .await
            .unwrap(),
        ClaimOutcome::Claimed,
        "another plan"
    );
    assert_eq!(
        store
            .claim_rollback(&claim("run:r10", "a", 15_001), 5_000)
            .await
            .unwrap(),
        ClaimOutcome::Claimed,
        "cooldown over"
    );
    // Claimed and not finished: pending, for whoever took them (a restart finds them).
    let subjects = |claims: Vec<RollbackClaim>| -> Vec<String> {
        claims.into_iter().map(|c| c.subject).collect()
    };
    let pending = store.pending_rollbacks("coordinator A", 0).await.unwrap();
    assert_eq!(pending[0], claim("run:r2", "a", 10_000));
    assert_eq!(subjects(pending), ["run:r2", "run:r9", "run:r10"]);
    let others = store.pending_rollbacks("coordinator B", 0).await.unwrap();
    assert!(others.is_empty());
    let stale = store
        .pending_rollbacks("coordinator B", 14_500)
        .await
        .unwrap();
    assert_eq!(
        subjects(stale),
        ["run:r2", "run:r9"],
        "anyone's, older than 14.5 s"
    );
    store
        .finish_rollback("run:r2", ActionOutcome::Succeeded, None)
        .await
        .unwrap();
    store
        .finish_rollback("run:r9", ActionOutcome::Interrupted, Some("stopped"))
        .await
        .unwrap();
    let pending = store.pending_rollbacks("coordinator A", 0).await.unwrap();
    assert_eq!(subjects(pending), ["run:r10"]);
    // A claim whose action never started is withdrawn; a finished one stays.
    store.release_rollback("run:r10").await.unwrap();
    store.release_rollback("run:r2").await.unwrap();
    assert!(
        store
            .pending_rollbacks("coordinator A", 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_rollback(&claim("run:r10", "b", 900_000), 5_000)
            .await
            .unwrap(),
        ClaimOutcome::Claimed,
        "released: it may be claimed again"
    );
    assert!(matches!(
        store
            .claim_rollback(&claim("run:r2", "c", 900_000), 5_000)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyClaimed { .. }
    ));

    // Monitors and their rounds.
    let mut monitor = MonitorRecord {
        monitor_id: "m1".into(),
        plan_name: "a".into(),
        plan_sealed: vec![4, 5],
        origin: "p.yaml".into(),
        status: MonitorStatus::Running,
        dry_run: false,
        regions: vec!["eu".into()],
        started_ms: 100,
        ends_ms: 900,
        ended_ms: None,
        rounds: 0,
        rollback_json: None,
        detail: None,
        against: None,
        migration: None,
        owner: None,
        lease_until_ms: None,
    };
    store.insert_monitor(&monitor).await.unwrap();
    assert_eq!(
        store.running_monitors().await.unwrap(),
        vec![monitor.clone()]
    );
    // Monitor owners: the first claim of an unowned monitor holds until its lease expires.
    assert!(store.claim_monitor("m1", "A", 60_000).await.unwrap());
    assert!(!store.claim_monitor("m1", "B", 60_000).await.unwrap());
    assert!(store.adoptable().await.unwrap().monitors.is_empty());
    assert_eq!(store.renew_monitor_leases("A", -1).await.unwrap(), ["m1"]);
    assert_eq!(store.adoptable().await.unwrap().monitors, ["m1"]);
    assert!(
        store.claim_monitor("m1", "B", 60_000).await.unwrap(),
        "expired"
    );
    let running = store.running_monitors().await.unwrap();
    assert_eq!(running[0].owner.as_deref(), Some("B"));
    monitor.owner = running[0].owner.clone();
    monitor.lease_until_ms = running[0].lease_until_ms;
    assert_eq!(running, vec![monitor.clone()]);
    let round = |n: i64, at: i64| RoundRecord {
        monitor_id: "m1".into(),
        round: n,
        run_id: format!("run-{n}"),
        at_ms: at,
        verdict: "PASS".into(),
        per_check_json: "[]".into(),
        sketch: vec![1],
        regions_json: Some(format!("{{\"eu\": {n}}}")),
        counted: n % 2 == 0,
    };
    store.insert_round(&round(1, 200)).await.unwrap();
    store.insert_round(&round(2, 300)).await.unwrap();
    store.insert_round(&round(2, 301)).await.unwrap();
    assert_eq!(
        store.rounds_since("m1", 250).await.unwrap(),
        vec![round(2, 300)],
        "a round is stored once"
    );
    store.insert_round(&round(3, 400)).await.unwrap();
    let last = store.last_rounds("m1", 2).await.unwrap();
    assert_eq!(last, vec![round(3, 400), round(2, 300)], "newest first");
    assert!((last[1].counted, last[0].counted) == (true, false));
    monitor.status = MonitorStatus::RolledBack;
    monitor.rounds = 2;
    monitor.ended_ms = Some(310);
    monitor.detail = Some("rollback".into());
    store.update_monitor(&monitor).await.unwrap();
    assert_eq!(store.get_monitor("m1").await.unwrap().unwrap(), monitor);
    assert!(store.running_monitors().await.unwrap().is_empty());
    assert_eq!(store.list_monitors(10).await.unwrap().len(), 1);

    // Baselines: newest first, per plan, and the runs that asked for them.
    let baseline = |id: &str, plan: &str, at: i64| BaselineRecord {
        baseline_id: id.into(),
        plan_name: plan.into(),
        migration: Some("m-1".into()),
        created_ms: at,
        run_id: format!("run-{id}"),
        status: "PASS".into(),
        checks: 2,
        latencies: 40,
        data: "{}".into(),
    };
    for (id, plan, at) in [("b1", "a", 10), ("b2", "b", 20), ("b3", "a", 30)] {
        store
            .insert_baseline(&baseline(id, plan, at))
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_baseline("b2").await.unwrap(),
        Some(baseline("b2", "b", 20))
    );
    assert_eq!(store.get_baseline("zz").await.unwrap(), None);
    let of_a: Vec<String> = store
        .list_baselines(Some("a"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.baseline_id)
        .collect();
    assert_eq!(of_a, ["b3", "b1"]);
    assert_eq!(store.list_baselines(None, 2).await.unwrap().len(), 2);
    let mut asked = run("rb", 50, "a", RunStatus::Running);
    asked.migration = Some("m-1".into());
    asked.against = Some("b1".into());
    asked.take_baseline = true;
    store.insert_run(&asked).await.unwrap();
    asked.status = RunStatus::Completed;
    asked.baseline_id = Some("b4".into());
    asked.baseline_refused = Some("no".into());
    store.update_run(&asked).await.unwrap();
    assert_eq!(store.get_run("rb").await.unwrap(), Some(asked.clone()));
    assert_eq!(
        store.migration_runs("a", "m-1").await.unwrap(),
        vec![asked],
        "the stage gate reads a plan's runs of one migration"
    );
    assert!(store.migration_runs("a", "m-2").await.unwrap().is_empty());

    // Feedback: per migration, newest first, counted by kind and time.
    let feedback = |id: &str, migration: &str, kind: &str, at: i64| FeedbackRecord {
        feedback_id: id.into(),
        migration: migration.into(),
        kind: kind.into(),
        text: format!("text {id}"),
        source: String::new(),
        created_ms: at,
    };
    for (id, migration, kind, at) in [
        ("f1", "m-1", "regression", 100),
        ("f2", "m-1", "info", 200),
        ("f3", "m-1", "regression", 300),
        ("f4", "m-2", "regression", 400),
    ] {
        store
            .insert_feedback(&feedback(id, migration, kind, at))
            .await
            .unwrap();
    }
    let of_m1: Vec<String> = store
        .list_feedback(Some("m-1"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.feedback_id)
        .collect();
    assert_eq!(of_m1, ["f3", "f2", "f1"]);
    assert_eq!(store.list_feedback(None, 2).await.unwrap().len(), 2);
    assert_eq!(
        store.count_feedback("m-1", "regression", 0).await.unwrap(),
        2
    );
    assert_eq!(
        store
            .count_feedback("m-1", "regression", 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.count_feedback("m-1", "bug", 0).await.unwrap(), 0);
}

/// Coordinators sharing one database race for the same rollback: exactly one wins.
async fn concurrent_claims<S: Store + Clone>(stores: Vec<S>) {
    let mut tasks = Vec::new();
    for (i, store) in stores.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let claim = RollbackClaim {
                subject: "monitor:m7".into(),
                plan_name: "race".into(),
                run_id: format!("round-of-{i}"),
                executed_by: format!("coordinator {i}"),
                claimed_ms: 1_000 + i as i64,
                action_kind: "kubectl".into(),
            };
            store.claim_rollback(&claim, 600_000).await.unwrap()
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        if task.await.unwrap() == ClaimOutcome::Claimed {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 1, "exactly one coordinator executes the rollback");
}

#[tokio::test]
async fn sqlite_store_passes_the_suite_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("postflight.db").display());
    suite(SqliteStore::open(&url).await.unwrap()).await;
    // Reopening migrates nothing twice and finds the data.
    let again = SqliteStore::open(&url).await.unwrap();
    assert_eq!(again.list_runs(10, None).await.unwrap().len(), 5);
    assert!(dir.path().join("postflight.db-wal").exists(), "WAL mode");
}

#[tokio::test]
async fn postgres_store_passes_the_suite_and_survives_reopening() {
    let db = ScratchDb::create().await;
    suite(PostgresStore::open(&db.url).await.unwrap()).await;
    let again = PostgresStore::open(&db.url).await.unwrap();
    assert_eq!(again.list_runs(10, None).await.unwrap().len(), 5);
}

#[tokio::test]
async fn concurrent_claims_on_postgres_from_separate_pools_yield_one_winner() {
    let db = ScratchDb::create().await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(PostgresStore::open(&db.url).await.unwrap());
    }
    concurrent_claims(stores).await;
}

#[tokio::test]
async fn concurrent_claims_on_sqlite_yield_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("race.db").display());
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(SqliteStore::open(&url).await.unwrap());
    }
    concurrent_claims(stores).await;
}

#[tokio::test]
async fn any_store_picks_the_engine_by_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("x.db").display());
    assert!(matches!(
        AnyStore::open(&url).await.unwrap(),
        AnyStore::Sqlite(_)
    ));
    let err = AnyStore::open("mysql://u:secret@h/db").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported database url `mysql://u:****@h/db`: use sqlite://FILE or postgres://…"
    );
}

/// A database that an earlier postflight migrated by hand (versions in `schema_migrations`),
/// as it would be found on upgrade: the migrator adopts it without running the old versions
/// again, applies the new ones, and the per-result table of version 1 keeps its rows.
async fn adopts_a_hand_migrated_database<DB>(
    url: &str,
    files: &[(i64, &str, &str)],
    open: impl AsyncFn(&str) -> StoreResult<()>,
) where
    DB: sqlx::Database,
    for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB> + for<'q> sqlx::Encode<'q, DB>,
    usize: sqlx::ColumnIndex<<DB as sqlx::Database>::Row>,
{
    use sqlx::Connection;
    let mut conn = <DB as sqlx::Database>::Connection::connect(url)
        .await
        .unwrap();
    for (_, _, sql) in &files[..2] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL);\
         INSERT INTO schema_migrations VALUES (1, 0), (2, 0);\
         INSERT INTO results (result_id, run_id, assignment_id, region, probe, check_index, status, message, \
         duration_ms, requests, request_errors, latency, sketch, received_ms) \
         VALUES ('r1', 'run', 'a', 'eu', 'p', 0, 'pass', 'ok', 1.5, 1, 0, NULL, '', 0);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    open(url).await.unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM results_v1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 1, "version 1's results survive the upgrade");
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(recorded, files.len() as i64);
    // And a second start changes nothing.
    open(url).await.unwrap();
}

#[tokio::test]
async fn sqlite_adopts_a_hand_migrated_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    adopts_a_hand_migrated_database::<sqlx::Sqlite>(&url, super::migrations::SQLITE, async |url| {
        SqliteStore::open(url).await.map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn postgres_adopts_a_hand_migrated_database() {
    let db = ScratchDb::create().await;
    adopts_a_hand_migrated_database::<sqlx::Postgres>(
        &db.url,
        super::migrations::POSTGRES,
        async |url| PostgresStore::open(url).await.map(|_| ()),
    )
    .await;
}
