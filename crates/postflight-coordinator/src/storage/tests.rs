//! One storage suite, run against a real SQLite file and a real PostgreSQL database.

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
    }
}

fn result(id: &str, run_id: &str, check: i64) -> ResultRecord {
    ResultRecord {
        result_id: id.into(),
        run_id: run_id.into(),
        assignment_id: "a1".into(),
        region: "eu".into(),
        probe: "probe-eu-1".into(),
        check_index: check,
        status: "pass".into(),
        message: "ok".into(),
        duration_ms: 12.5,
        requests: 3,
        request_errors: 1,
        latency_json: Some("{\"count\":3}".into()),
        sketch: vec![9, 8, 7],
        received_ms: 1_000 + check,
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
    assert_eq!(store.list_probes().await.unwrap(), vec![probe]);

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
    };
    store.insert_assignment(&a).await.unwrap();
    a.status = AssignmentStatus::Finished;
    a.expected_results = Some(4);
    store.update_assignment(&a).await.unwrap();
    assert_eq!(store.assignments("r2").await.unwrap(), vec![a]);

    // Results: stored once whatever the replays, in arrival order.
    let first = store
        .insert_results(&[result("x1", "r2", 0), result("x2", "r2", 1)])
        .await
        .unwrap();
    assert_eq!(first, [true, true]);
    let replay = store
        .insert_results(&[
            result("x2", "r2", 1),
            result("x3", "r2", 2),
            result("x1", "r2", 0),
        ])
        .await
        .unwrap();
    assert_eq!(replay, [false, true, false]);
    let stored = store.results("r2").await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0], result("x1", "r2", 0));
    assert_eq!(
        stored
            .iter()
            .map(|r| r.result_id.as_str())
            .collect::<Vec<_>>(),
        ["x1", "x2", "x3"]
    );
    assert!(store.results("r1").await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_store_passes_the_suite_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("postflight.db").display());
    suite(SqliteStore::open(&url).await.unwrap()).await;
    // Reopening migrates nothing twice and finds the data.
    let again = SqliteStore::open(&url).await.unwrap();
    assert_eq!(again.list_runs(10, None).await.unwrap().len(), 3);
    assert!(dir.path().join("postflight.db-wal").exists(), "WAL mode");
}

#[tokio::test]
async fn postgres_store_passes_the_suite_and_survives_reopening() {
    let db = ScratchDb::create().await;
    suite(PostgresStore::open(&db.url).await.unwrap()).await;
    let again = PostgresStore::open(&db.url).await.unwrap();
    assert_eq!(again.list_runs(10, None).await.unwrap().len(), 3);
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
