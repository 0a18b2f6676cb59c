//! Baselines and comparisons, on samples made here (no I/O).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::outcome::Sample;
use crate::report::{RunResults, build_report};
use crate::rollback::RunEnd;
use crate::{Expander, parse_plan};

const PLAN: &str = "name: p\nchecks:\n  - name: fast\n    latency: {request: {url: \"http://x/\"}, samples: 60, pass_below: 5s}\n  - name: up\n    http: {url: \"http://x/up\"}\n";

fn plan(extra: &str) -> Plan {
    let env: HashMap<String, String> = HashMap::new();
    parse_plan(&format!("{PLAN}{extra}"), "p.yaml", Expander::plan(&env)).unwrap()
}

/// Latencies around `median` ms with a long right tail, from a fixed seed: what a service
/// answers, run after run.
fn latencies(seed: u64, n: usize, median: f64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            // Exponential tail over a floor: 80% of the median, plus noise.
            median * 0.8 + median * 0.3 * -(1.0 - u).ln()
        })
        .collect()
}

fn measured(latencies: Vec<f64>, errors: u64) -> Measured {
    let requests = latencies.len() as u64 + errors;
    Measured {
        latencies_ms: thin(latencies),
        requests,
        errors,
        answer_shape: None,
    }
}

fn measurements(fast: Measured) -> Measurements {
    BTreeMap::from([(
        "fast".to_owned(),
        BTreeMap::from([("local".to_owned(), fast)]),
    )])
}

fn baseline(fast: Measured) -> Baseline {
    Baseline {
        baseline_id: "b1".into(),
        plan: "p".into(),
        migration: Some("m-42".into()),
        created_at: "2026-12-01T10:00:00Z".into(),
        run_id: "run-0".into(),
        status: Overall::Pass,
        checks: measurements(fast),
    }
}

#[test]
fn a_service_40_percent_slower_is_worse_even_under_its_fixed_threshold() {
    let plan = plan("");
    let before = baseline(measured(latencies(1, 60, 100.0), 0));
    let now = measurements(measured(latencies(2, 60, 140.0), 0));
    let report = compare(&plan, &before, &now).unwrap();
    let c = &report.comparisons[0];
    assert_eq!((c.check.as_str(), c.region.as_str()), ("fast", "local"));
    assert_eq!(c.latency.decision, Decision::Worse, "{}", c.reason);
    assert_eq!(c.decision, Decision::Worse);
    assert!(c.latency.p_value.unwrap() < 0.0001, "{c:?}");
    assert!(c.latency.increase.unwrap() > 0.3);
    assert!(
        c.reason.contains("Mann-Whitney p < 0.0001: slower"),
        "{}",
        c.reason
    );
    assert!(c.reason.starts_with("p50 "), "{}", c.reason);
    // The fixed threshold (5 s) would not have caught it: the check passed, the comparison
    // fails it.
    let mut results = vec![
        BTreeMap::from([("local".to_owned(), region_result(CheckStatus::Pass))]),
        BTreeMap::new(),
    ];
    apply(&plan, &report, &mut results);
    let failed = &results[0]["local"];
    assert_eq!(failed.status, CheckStatus::Fail);
    assert!(
        failed
            .message
            .starts_with("p95 fine; worse than baseline b1: p50 "),
        "{}",
        failed.message
    );
}

#[test]
fn the_same_service_run_again_is_never_worse_in_20_trials() {
    let plan = plan("");
    for trial in 0..20 {
        let before = baseline(measured(latencies(100 + trial, 60, 100.0), 0));
        let now = measurements(measured(latencies(200 + trial, 60, 100.0), 1));
        let report = compare(&plan, &before, &now).unwrap();
        let c = &report.comparisons[0];
        assert_ne!(c.decision, Decision::Worse, "trial {trial}: {}", c.reason);
    }
}

#[test]
fn a_small_slowdown_is_within_the_allowed_increase_however_certain() {
    let plan = plan("baseline: {max_latency_increase: 20%}\n");
    let before = baseline(measured(latencies(1, 2000, 100.0), 0));
    let now = measurements(measured(latencies(1, 2000, 110.0), 0));
    let c = &compare(&plan, &before, &now).unwrap().comparisons[0];
    assert!(c.latency.p_value.unwrap() < 0.01);
    assert_eq!(c.latency.decision, Decision::Same, "{}", c.reason);
    assert!(c.reason.contains("within the allowed +20%"), "{}", c.reason);
}

#[test]
fn too_few_samples_are_inconclusive_and_change_nothing() {
    let plan = plan("");
    let before = baseline(measured(latencies(1, 5, 100.0), 0));
    let now = measurements(measured(latencies(2, 60, 300.0), 0));
    let report = compare(&plan, &before, &now).unwrap();
    let c = &report.comparisons[0];
    assert_eq!(c.latency.decision, Decision::Inconclusive);
    assert_eq!(c.errors.decision, Decision::Inconclusive);
    assert_eq!(c.decision, Decision::Inconclusive);
    assert!(
        c.reason
            .contains("too few samples to tell (5 before, 60 now, 8 needed)"),
        "{}",
        c.reason
    );
    let mut results = vec![
        BTreeMap::from([("local".to_owned(), region_result(CheckStatus::Pass))]),
        BTreeMap::new(),
    ];
    apply(&plan, &report, &mut results);
    assert_eq!(results[0]["local"].status, CheckStatus::Pass);
}

#[test]
fn more_errors_than_before_is_worse() {
    let plan = plan("baseline: {max_error_rate_increase: 0.05, significance: 0.05}\n");
    let before = baseline(measured(latencies(1, 99, 100.0), 1));
    let now = measurements(measured(latencies(1, 85, 100.0), 15));
    let c = &compare(&plan, &before, &now).unwrap().comparisons[0];
    assert_eq!(c.errors.decision, Decision::Worse, "{}", c.reason);
    assert_eq!(c.latency.decision, Decision::Same, "{}", c.reason);
    assert_eq!(c.decision, Decision::Worse);
    assert!(
        c.reason
            .contains("errors 1/100 → 15/100 (+14.0 points), Fisher p = 0.0002: more errors"),
        "{}",
        c.reason
    );
}

#[test]
fn only_a_run_that_passed_becomes_a_baseline_of_its_own_plan() {
    let plan = plan("");
    let env: HashMap<String, String> = HashMap::new();
    let results = vec![
        BTreeMap::from([("local".to_owned(), region_result(CheckStatus::Pass))]),
        BTreeMap::from([("local".to_owned(), region_result(CheckStatus::Pass))]),
    ];
    let regions = vec!["local".to_owned()];
    let mut report = build_report(&RunResults {
        plan: &plan,
        run_id: "run-1",
        started_at: UNIX_EPOCH,
        finished_at: UNIX_EPOCH + Duration::from_secs(1),
        required_regions: &regions,
        results: &results,
        unreported: &BTreeMap::new(),
        end: RunEnd::Completed,
        env: &env,
    });
    let fast = measurements(measured(latencies(1, 10, 50.0), 0));
    let taken = Baseline::of_run("b9".into(), &report, None, fast.clone()).unwrap();
    assert_eq!(taken.run_id, "run-1");
    assert_eq!(taken.status, Overall::Pass);
    assert_eq!(
        Baseline::of_run(
            "b9".into(),
            &report,
            None,
            measurements(Measured::default())
        ),
        Err(BaselineRefused::NothingMeasured)
    );
    for status in [Overall::Fail, Overall::Inconclusive] {
        report.status = status;
        let refused = Baseline::of_run("b9".into(), &report, None, fast.clone()).unwrap_err();
        assert_eq!(refused, BaselineRefused::NotPassed(status));
    }
    let mut other = taken;
    other.plan = "q".into();
    assert_eq!(
        compare(&plan, &other, &fast).unwrap_err().to_string(),
        "baseline b9 is of plan q, not p"
    );
}

#[test]
fn measurements_keep_successful_latencies_bounded_and_sorted() {
    let samples: Vec<Sample> = (0..5000u64)
        .map(|i| Sample {
            latency: Duration::from_micros(5000 - i),
            ok: i % 10 != 0,
        })
        .collect();
    let outcome = CheckOutcome {
        status: CheckStatus::Pass,
        message: String::new(),
        samples,
        missing: 0,
        duration: Duration::from_secs(1),
        answer_shape: None,
        tally: None,
    };
    let m = Measured::of(&outcome);
    assert_eq!(m.requests, 5000);
    assert_eq!(m.errors, 500);
    assert_eq!(m.latencies_ms.len(), MAX_SAMPLES);
    assert!(m.latencies_ms.windows(2).all(|w| w[0] <= w[1]));
    // The extremes of the successful requests are kept.
    assert_eq!(m.latencies_ms[0], 0.001);
    assert_eq!(m.latencies_ms[MAX_SAMPLES - 1], 4.999);
}

fn region_result(status: CheckStatus) -> RegionResult {
    RegionResult {
        status,
        message: "p95 fine".into(),
        duration: Duration::from_millis(10),
        requests: crate::report::RequestCount::default(),
        latency: None,
        sketch: crate::sketch::LatencySketch::new(),
        latencies_ms: Vec::new(),
        answer_shape: None,
        tally: None,
    }
}

#[test]
fn with_same_shape_an_answer_that_lost_a_field_is_worse() {
    let plan = plan("baseline: {answers: same_shape}\n");
    let shaped = |doc: serde_json::Value| Measured {
        answer_shape: Some(shape_of(&doc)),
        ..measured(latencies(1, 1, 50.0), 0)
    };
    let before = Baseline {
        checks: BTreeMap::from([(
            "up".to_owned(),
            BTreeMap::from([(
                "local".to_owned(),
                shaped(serde_json::json!({"invoice": {"id": "INV-001", "total": 120}})),
            )]),
        )]),
        ..baseline(measured(Vec::new(), 0))
    };
    let now = |doc: serde_json::Value| {
        BTreeMap::from([(
            "up".to_owned(),
            BTreeMap::from([("local".to_owned(), shaped(doc))]),
        )])
    };
    let changed = compare(
        &plan,
        &before,
        &now(serde_json::json!({"invoice": {"id": "INV-001", "total": "120"}})),
    )
    .unwrap();
    let c = &changed.comparisons[0];
    assert_eq!(c.decision, Decision::Worse, "{}", c.reason);
    assert!(
        c.reason
            .ends_with("answer changed shape: $.invoice.total was number, now string"),
        "{}",
        c.reason
    );
    let same = compare(
        &plan,
        &before,
        &now(serde_json::json!({"invoice": {"id": "INV-002", "total": 99, "currency": "EUR"}})),
    )
    .unwrap();
    assert_eq!(same.comparisons[0].decision, Decision::Same);
    // Without `answers: same_shape`, shapes are not compared.
    let off = compare(
        &super::tests::plan(""),
        &before,
        &now(serde_json::json!({"other": true})),
    )
    .unwrap();
    assert_eq!(off.comparisons[0].answers, None);
    assert_ne!(off.comparisons[0].decision, Decision::Worse);
}

/// One region that got slower than its baseline fails the check there only: under a majority
/// quorum the verdict warns and nothing is rolled back (one sick region, or one lying probe,
/// never rolls back alone).
#[test]
fn one_slower_region_never_rolls_back_alone() {
    let plan =
        plan("policy: {regions: [eu, us, ap], quorum: majority}\nrollback: {on_fail: true}\n");
    let region = |r: &str| (r.to_owned(), measured(latencies(7, 60, 100.0), 0));
    let baseline = Baseline {
        checks: BTreeMap::from([(
            "fast".to_owned(),
            BTreeMap::from([region("eu"), region("us"), region("ap")]),
        )]),
        ..baseline(measured(Vec::new(), 0))
    };
    let now: Measurements = BTreeMap::from([(
        "fast".to_owned(),
        BTreeMap::from([
            ("eu".to_owned(), measured(latencies(8, 60, 200.0), 0)),
            ("us".to_owned(), measured(latencies(9, 60, 100.0), 0)),
            ("ap".to_owned(), measured(latencies(10, 60, 100.0), 0)),
        ]),
    )]);
    let compared = compare(&plan, &baseline, &now).unwrap();
    let worse: Vec<&str> = compared
        .comparisons
        .iter()
        .filter(|c| c.decision == Decision::Worse)
        .map(|c| c.region.as_str())
        .collect();
    assert_eq!(worse, ["eu"]);
    let regions = vec!["eu".to_owned(), "us".to_owned(), "ap".to_owned()];
    let mut results = vec![
        regions
            .iter()
            .map(|r| (r.clone(), region_result(CheckStatus::Pass)))
            .collect::<BTreeMap<_, _>>(),
        regions
            .iter()
            .map(|r| (r.clone(), region_result(CheckStatus::Pass)))
            .collect(),
    ];
    apply(&plan, &compared, &mut results);
    let env: HashMap<String, String> = HashMap::new();
    let report = build_report(&RunResults {
        plan: &plan,
        run_id: "run-2",
        started_at: UNIX_EPOCH,
        finished_at: UNIX_EPOCH + Duration::from_secs(1),
        required_regions: &regions,
        results: &results,
        unreported: &BTreeMap::new(),
        end: RunEnd::Completed,
        env: &env,
    });
    assert_ne!(report.status, Overall::Fail, "{report:?}");
    assert!(!report.rollback.recommended, "{:?}", report.rollback);
}
