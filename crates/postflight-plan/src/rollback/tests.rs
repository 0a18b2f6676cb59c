use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::report::RequestCount;
use crate::sketch::LatencySketch;
use crate::{Expander, parse_plan};

const REGIONS: [&str; 3] = ["ap-south", "eu-west", "us-east"];

fn plan(policy: &str, rollback: &str) -> Plan {
    let env: HashMap<String, String> = HashMap::new();
    parse_plan(
        &format!(
            "name: p\nchecks:\n  - name: api\n    latency: {{request: {{url: http://h/}}, samples: 7, pass_below: 1s}}\npolicy: {policy}\nrollback: {rollback}\n"
        ),
        "p.yaml",
        Expander::plan(&env),
    )
    .unwrap()
}

fn region(count: u64, errors: u64, latency_ms: f64) -> RegionFigures {
    let mut sketch = LatencySketch::new();
    for _ in 0..count {
        sketch.add(latency_ms);
    }
    RegionFigures {
        requests: RequestCount {
            count,
            errors,
            missing: 0,
        },
        sketch,
    }
}

fn figures(per_region: &[(&str, u64, u64, f64)]) -> BTreeMap<String, RegionFigures> {
    per_region
        .iter()
        .map(|(name, count, errors, ms)| ((*name).to_owned(), region(*count, *errors, *ms)))
        .collect()
}

fn evaluate_on(
    plan: &Plan,
    overall: Overall,
    regions: &BTreeMap<String, RegionFigures>,
) -> Evaluation {
    let required: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
    let mut per_check = RequestCount::default();
    for f in regions.values() {
        per_check.add(f.requests);
    }
    evaluate(
        plan,
        &Evidence {
            overall,
            checks: &[],
            required: &required,
            regions,
            per_check: &[("api".to_owned(), per_check)],
            window: None,
        },
    )
}

/// The first situation of the issue: one region's probe cannot reach the service; every
/// request it makes fails, the other regions are clean. 7 of 21 requests (33%) failed over
/// all regions, far above 10% — and still no rollback under `quorum: majority`.
#[test]
fn one_sick_region_never_rolls_back_alone_under_a_majority_quorum() {
    let p = plan("{quorum: majority}", "{error_rate_above: 0.10}");
    let regions = figures(&[
        ("ap-south", 7, 7, 1.0),
        ("eu-west", 7, 0, 20.0),
        ("us-east", 7, 0, 20.0),
    ]);
    let e = evaluate_on(&p, Overall::Pass, &regions);
    assert!(e.reasons.is_empty(), "{:?}", e.reasons);
    assert_eq!(
        e.held_back,
        [
            "error rate: ap-south alone exceeds 10.0%: 1 of 3 regions, the quorum needs 2 (ap-south 7 of 7 failed (95% lower bound 64.6%))"
        ]
    );
}

#[test]
fn two_sick_regions_of_three_roll_back_and_the_reason_names_them() {
    let p = plan("{quorum: majority}", "{error_rate_above: 0.10}");
    let regions = figures(&[
        ("ap-south", 7, 7, 1.0),
        ("eu-west", 7, 6, 1.0),
        ("us-east", 7, 0, 20.0),
    ]);
    let e = evaluate_on(&p, Overall::Pass, &regions);
    assert_eq!(
        e.reasons,
        [
            "request error rate above 10.0% in 2 of 3 regions (the quorum needs 2): ap-south 7 of 7 failed (95% lower bound 64.6%), eu-west 6 of 7 failed (95% lower bound 48.7%); all regions 13 of 21 failed (61.9%); api 13/21; regions: ap-south, eu-west, us-east"
        ]
    );
}

#[test]
fn quorum_any_acts_on_one_region_and_all_needs_every_region() {
    let regions = figures(&[
        ("ap-south", 7, 7, 1.0),
        ("eu-west", 7, 0, 1.0),
        ("us-east", 7, 0, 1.0),
    ]);
    let any = plan("{quorum: any}", "{error_rate_above: 0.10}");
    assert_eq!(evaluate_on(&any, Overall::Pass, &regions).reasons.len(), 1);
    let all = plan("{quorum: all}", "{error_rate_above: 0.10}");
    let two = figures(&[
        ("ap-south", 7, 7, 1.0),
        ("eu-west", 7, 7, 1.0),
        ("us-east", 7, 0, 1.0),
    ]);
    let e = evaluate_on(&all, Overall::Pass, &two);
    assert!(e.reasons.is_empty());
    assert_eq!(
        e.held_back,
        [
            "error rate: ap-south and eu-west exceed 10.0%: 2 of 3 regions, the quorum needs 3 (ap-south 7 of 7 failed (95% lower bound 64.6%), eu-west 7 of 7 failed (95% lower bound 64.6%))"
        ]
    );
}

/// The blip of the second situation, per region: a few failures among a few dozen
/// requests are not evidence of a 10% error rate.
#[test]
fn a_rate_above_the_threshold_without_evidence_is_held_back_and_explained() {
    let p = plan("{quorum: any}", "{error_rate_above: 0.10}");
    let regions = figures(&[
        ("ap-south", 30, 4, 1.0),
        ("eu-west", 30, 0, 1.0),
        ("us-east", 7, 1, 1.0),
    ]);
    let e = evaluate_on(&p, Overall::Pass, &regions);
    assert!(e.reasons.is_empty());
    assert_eq!(
        e.held_back,
        [
            "error rate in ap-south: 4 of 30 failed (13.3%), but the 95% lower bound 5.3% is not above 10.0%",
            "error rate in us-east: 1 of 7 failed (14.3%), but the 95% lower bound 2.6% is not above 10.0%",
        ]
    );
    // The seed article's literal rule compares the ratio itself.
    let raw = plan("{quorum: any}", "{error_rate_above: 0.10, confidence: 0}");
    let e = evaluate_on(&raw, Overall::Pass, &regions);
    assert_eq!(e.reasons.len(), 1);
    assert!(
        e.reasons[0].starts_with("request error rate above 10.0% in 2 of 3 regions (the quorum needs 1): ap-south 4 of 30 failed, us-east 1 of 7 failed; "),
        "{}",
        e.reasons[0]
    );
}

#[test]
fn regions_that_are_not_required_do_not_count_towards_the_quorum() {
    let p = plan("{quorum: majority}", "{error_rate_above: 0.10}");
    let regions = figures(&[
        ("ap-south", 7, 7, 1.0),
        ("rogue-1", 7, 7, 1.0),
        ("rogue-2", 7, 7, 1.0),
        ("us-east", 7, 0, 1.0),
    ]);
    let e = evaluate_on(&p, Overall::Pass, &regions);
    assert!(e.reasons.is_empty(), "{:?}", e.reasons);
    assert_eq!(e.held_back.len(), 1);
}

#[test]
fn p99_is_judged_per_region_under_the_quorum() {
    let p = plan("{quorum: majority}", "{p99_latency_above: 2s}");
    let one_slow = figures(&[
        ("ap-south", 10, 0, 12_000.0),
        ("eu-west", 10, 0, 20.0),
        ("us-east", 10, 0, 20.0),
    ]);
    let e = evaluate_on(&p, Overall::Pass, &one_slow);
    assert!(e.reasons.is_empty());
    assert_eq!(
        e.held_back,
        ["p99: ap-south alone is above 2s: 1 of 3 regions, the quorum needs 2 (ap-south 12.00 s)"]
    );
    let two_slow = figures(&[
        ("ap-south", 10, 0, 12_000.0),
        ("eu-west", 10, 0, 3_000.0),
        ("us-east", 10, 0, 20.0),
    ]);
    let e = evaluate_on(&p, Overall::Pass, &two_slow);
    assert_eq!(e.reasons.len(), 1);
    assert!(
        e.reasons[0].starts_with("request p99 above 2s in 2 of 3 regions (the quorum needs 2): ap-south 12.00 s, eu-west 3.00 s; all regions 12.00 s over 30 requests; "),
        "{}",
        e.reasons[0]
    );
}

#[test]
fn a_fail_verdict_is_a_reason_unless_on_fail_is_off() {
    use crate::report::{CheckReport, RegionReport};
    use crate::verdict::CheckStatus;
    let region = |status| RegionReport {
        status,
        message: String::new(),
        latency_ms: None,
        tally: None,
    };
    let checks = [CheckReport {
        name: "api".into(),
        severity: crate::model::Severity::Critical,
        status: CheckStatus::Fail,
        message: String::new(),
        latency_ms: None,
        // A region that is not required does not count in the sentence.
        regions: [
            ("ap-south".to_owned(), region(CheckStatus::Fail)),
            ("eu-west".to_owned(), region(CheckStatus::Fail)),
            ("rogue".to_owned(), region(CheckStatus::Fail)),
            ("us-east".to_owned(), region(CheckStatus::Pass)),
        ]
        .into(),
        kind: "latency".into(),
        requests: RequestCount::default(),
        duration_ms: 0.0,
        tally: None,
    }];
    let required: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
    let regions = BTreeMap::new();
    let evidence = |overall| Evidence {
        overall,
        checks: &checks,
        required: &required,
        regions: &regions,
        per_check: &[],
        window: None,
    };
    let on = plan("{quorum: majority}", "{}");
    assert_eq!(
        evaluate(&on, &evidence(Overall::Fail)).reasons,
        ["verdict FAIL: api failed in 2 of 3 regions"]
    );
    let off = plan(
        "{quorum: majority}",
        "{on_fail: false, error_rate_above: 0.99}",
    );
    assert!(evaluate(&off, &evidence(Overall::Fail)).reasons.is_empty());
}

#[test]
fn missing_data_never_acts_unless_the_plan_says_so() {
    let p = plan("{}", "{}");
    assert_eq!(may_act(&p, Overall::Fail, RunEnd::Completed), Ok(()));
    for (overall, end, why) in [
        (
            Overall::Fail,
            RunEnd::TimedOut,
            "the run timed out before every region reported",
        ),
        (Overall::Fail, RunEnd::Cancelled, "the run was cancelled"),
        (
            Overall::Inconclusive,
            RunEnd::Completed,
            "the verdict is INCONCLUSIVE",
        ),
    ] {
        assert_eq!(
            may_act(&p, overall, end),
            Err(format!(
                "{why}, and missing data never acts (rollback.on_inconclusive: false)"
            ))
        );
    }
    let opted_in = plan("{}", "{on_inconclusive: true}");
    assert_eq!(
        may_act(&opted_in, Overall::Inconclusive, RunEnd::TimedOut),
        Ok(())
    );
}

#[test]
fn outcomes_keep_their_names() {
    for outcome in [
        ActionOutcome::Pending,
        ActionOutcome::Succeeded,
        ActionOutcome::Failed,
        ActionOutcome::DryRun,
        ActionOutcome::Skipped,
        ActionOutcome::Interrupted,
    ] {
        assert_eq!(ActionOutcome::parse(outcome.as_str()), Some(outcome));
        assert_eq!(
            serde_json::to_value(outcome).unwrap(),
            serde_json::json!(outcome.as_str())
        );
    }
    assert_eq!(ActionOutcome::parse("done"), None);
}

#[test]
fn actions_name_their_kind() {
    let env: HashMap<String, String> = HashMap::new();
    let kind = |action: &str| {
        parse_plan(
            &format!(
                "name: p\nchecks: [{{name: a, http: {{url: http://h/}}}}]\nrollback: {{action: {action}}}\n"
            ),
            "p.yaml",
            Expander::plan(&env),
        )
        .unwrap()
        .rollback
        .unwrap()
        .action
        .unwrap()
        .kind()
    };
    assert_eq!(kind("{kubernetes: {}}"), "kubernetes");
    assert_eq!(kind("{kubectl: {}}"), "kubectl");
    assert_eq!(kind("{command: [./undo.sh]}"), "command");
    assert_eq!(kind("{webhook: {url: \"http://h/\"}}"), "webhook");
}
