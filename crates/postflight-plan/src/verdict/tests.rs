use super::*;
use proptest::prelude::*;

fn regions(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn results(entries: &[(&str, CheckStatus, &str)]) -> BTreeMap<String, RegionOutcome> {
    entries
        .iter()
        .map(|(r, s, m)| {
            (
                r.to_string(),
                RegionOutcome {
                    status: *s,
                    message: m.to_string(),
                },
            )
        })
        .collect()
}

use CheckStatus::*;

#[test]
fn single_region_keeps_the_executor_message() {
    let merged = merge_regions(
        &regions(&[LOCAL_REGION]),
        &results(&[(LOCAL_REGION, Fail, "status 500, expected 2xx")]),
        Quorum::Majority,
    );
    assert_eq!(merged.status, Fail);
    assert_eq!(merged.message, "status 500, expected 2xx");
}

#[test]
fn single_region_without_result_is_inconclusive() {
    let merged = merge_regions(&regions(&[LOCAL_REGION]), &BTreeMap::new(), Quorum::Any);
    assert_eq!(merged.status, Inconclusive);
    assert_eq!(
        merged.message,
        "no result from local (the run ended before it reported)"
    );
}

#[test]
fn one_failing_region_of_three_warns_under_majority_and_names_it() {
    let r = regions(&["ap-south", "eu-west", "us-east"]);
    let res = results(&[
        ("ap-south", Fail, "status 503, expected 200"),
        ("eu-west", Pass, "ok"),
        ("us-east", Pass, "ok"),
    ]);
    let merged = merge_regions(&r, &res, Quorum::Majority);
    assert_eq!(merged.status, Warn);
    assert_eq!(
        merged.message,
        "failed in 1 of 3 regions (ap-south), fewer than the 2 needed to fail: status 503, expected 200"
    );
    let any = merge_regions(&r, &res, Quorum::Any);
    assert_eq!(any.status, Fail);
    assert_eq!(
        any.message,
        "failed in 1 of 3 regions (ap-south): status 503, expected 200"
    );
}

#[test]
fn missing_region_is_inconclusive_unless_the_outcome_is_settled() {
    let r = regions(&["ap-south", "eu-west", "us-east"]);
    // 1 fail + 1 missing under majority: the missing region decides.
    let res = results(&[("eu-west", Fail, "down"), ("us-east", Pass, "ok")]);
    let merged = merge_regions(&r, &res, Quorum::Majority);
    assert_eq!(merged.status, Inconclusive);
    assert_eq!(merged.missing, vec!["ap-south".to_string()]);
    assert!(
        merged.message.starts_with("no result from ap-south"),
        "{}",
        merged.message
    );
    // Two failures already settle a majority of three.
    let res = results(&[("eu-west", Fail, "down"), ("us-east", Fail, "down")]);
    let merged = merge_regions(&r, &res, Quorum::Majority);
    assert_eq!(merged.status, Fail);
    assert!(merged.message.contains("no result from ap-south"));
    // Under `any`, one failure settles it.
    let res = results(&[("eu-west", Fail, "down")]);
    assert_eq!(merge_regions(&r, &res, Quorum::Any).status, Fail);
    // All passing but one missing: never a pass.
    let res = results(&[("eu-west", Pass, "ok"), ("us-east", Pass, "ok")]);
    assert_eq!(
        merge_regions(&r, &res, Quorum::Majority).status,
        Inconclusive
    );
}

#[test]
fn warnings_without_failures_warn() {
    let r = regions(&["a", "b"]);
    let res = results(&[("a", Warn, "p95 3.2 s"), ("b", Pass, "ok")]);
    let merged = merge_regions(&r, &res, Quorum::Majority);
    assert_eq!(merged.status, Warn);
    assert_eq!(merged.message, "warned in 1 of 2 regions (a): p95 3.2 s");
}

#[test]
fn counts_and_overall_follow_the_contract() {
    use Severity::*;
    let (counts, overall) = judge(
        [
            (Critical, Pass),
            (Critical, Fail),
            (Warning, Fail),
            (Critical, Warn),
        ],
        2,
    );
    assert_eq!(
        counts,
        Counts {
            passed: 1,
            failed: 1,
            warnings: 2,
            inconclusive: 0
        }
    );
    assert_eq!(overall, Overall::Fail);
    assert_eq!(
        judge([(Warning, Fail), (Critical, Pass)], 2).1,
        Overall::Pass
    );
    assert_eq!(
        judge([(Warning, Fail), (Warning, Warn), (Critical, Warn)], 2).1,
        Overall::Warn
    );
    assert_eq!(judge([(Warning, Fail)], 0).1, Overall::Warn);
    assert_eq!(
        judge([(Critical, Inconclusive), (Warning, Fail)], 0).1,
        Overall::Inconclusive
    );
    assert_eq!(judge([(Warning, Inconclusive)], 2).1, Overall::Pass);
    assert_eq!(
        judge([(Critical, Inconclusive), (Critical, Fail)], 2).1,
        Overall::Fail
    );
}

#[test]
fn summaries_and_exit_codes() {
    assert_eq!(Overall::Fail.summary(), "FAIL — rollback recommended");
    assert_eq!(
        Overall::Inconclusive.summary(),
        "INCONCLUSIVE — not enough data"
    );
    assert_eq!(Overall::Warn.summary(), "WARN — manual review needed");
    assert_eq!(Overall::Pass.summary(), "PASS");
    assert_eq!(
        [
            Overall::Pass,
            Overall::Fail,
            Overall::Warn,
            Overall::Inconclusive
        ]
        .map(Overall::exit_code),
        [0, 1, 3, 4]
    );
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![Just(Severity::Critical), Just(Severity::Warning)]
}

fn status() -> impl Strategy<Value = CheckStatus> {
    prop_oneof![Just(Pass), Just(Warn), Just(Fail), Just(Inconclusive)]
}

fn region_status() -> impl Strategy<Value = Option<CheckStatus>> {
    prop_oneof![
        Just(None),
        Just(Some(Pass)),
        Just(Some(Warn)),
        Just(Some(Fail))
    ]
}

fn quorum() -> impl Strategy<Value = Quorum> {
    prop_oneof![
        Just(Quorum::Any),
        Just(Quorum::Majority),
        Just(Quorum::All),
        (1u32..6).prop_map(Quorum::Count)
    ]
}

/// Badness order for "never makes the verdict worse".
fn rank(o: Overall) -> u8 {
    match o {
        Overall::Pass => 0,
        Overall::Warn => 1,
        Overall::Inconclusive => 2,
        Overall::Fail => 3,
    }
}

proptest! {
    #[test]
    fn adding_a_passing_check_never_makes_the_verdict_worse(
        checks in prop::collection::vec((severity(), status()), 0..12),
        max_warnings in 0u32..4,
        extra_severity in severity(),
    ) {
        let (_, before) = judge(checks.clone(), max_warnings);
        let mut more = checks;
        more.push((extra_severity, Pass));
        let (_, after) = judge(more, max_warnings);
        prop_assert!(rank(after) <= rank(before));
    }

    #[test]
    fn warning_severity_never_produces_fail(
        statuses in prop::collection::vec(status(), 1..12),
        max_warnings in 0u32..4,
    ) {
        let (counts, overall) = judge(statuses.iter().map(|s| (Severity::Warning, *s)), max_warnings);
        prop_assert_ne!(overall, Overall::Fail);
        prop_assert_eq!(counts.failed, 0);
    }

    #[test]
    fn counts_add_up_to_the_number_of_checks(
        checks in prop::collection::vec((severity(), status()), 0..12),
    ) {
        let (c, _) = judge(checks.clone(), 2);
        prop_assert_eq!((c.passed + c.failed + c.warnings + c.inconclusive) as usize, checks.len());
    }

    #[test]
    fn missing_data_is_never_a_pass(
        statuses in prop::collection::vec(region_status(), 1..6),
        q in quorum(),
    ) {
        let names: Vec<String> = (0..statuses.len()).map(|i| format!("r{i}")).collect();
        let res: BTreeMap<String, RegionOutcome> = names.iter().zip(&statuses)
            .filter_map(|(n, s)| s.map(|s| (n.clone(), RegionOutcome { status: s, message: String::new() })))
            .collect();
        let merged = merge_regions(&names, &res, q);
        if statuses.iter().any(Option::is_none) {
            prop_assert_ne!(merged.status, Pass);
        }
    }

    #[test]
    fn a_settled_status_does_not_depend_on_missing_regions(
        statuses in prop::collection::vec(region_status(), 1..6),
        fill in prop::collection::vec(prop_oneof![Just(Pass), Just(Warn), Just(Fail)], 6),
        q in quorum(),
    ) {
        let names: Vec<String> = (0..statuses.len()).map(|i| format!("r{i}")).collect();
        let known: BTreeMap<String, RegionOutcome> = names.iter().zip(&statuses)
            .filter_map(|(n, s)| s.map(|s| (n.clone(), RegionOutcome { status: s, message: String::new() })))
            .collect();
        let merged = merge_regions(&names, &known, q);
        if merged.status != Inconclusive {
            let mut complete = known.clone();
            for (i, n) in names.iter().enumerate() {
                complete.entry(n.clone()).or_insert(RegionOutcome { status: fill[i], message: String::new() });
            }
            prop_assert_eq!(merge_regions(&names, &complete, q).status, merged.status);
        }
    }
}

#[test]
fn a_region_that_could_not_run_says_why() {
    let r = regions(&["ap-south", "eu-west", "us-east"]);
    let res = results(&[
        ("eu-west", Pass, "ok"),
        (
            "ap-south",
            Inconclusive,
            "probe ap-1 cannot run the plan: variable probe:KEY may not be used here",
        ),
    ]);
    let merged = merge_regions(&r, &res, Quorum::Majority);
    assert_eq!(merged.status, Inconclusive, "a refusal is missing data");
    assert!(
        merged.message.contains(
            "no result from us-east (the run ended before it reported); no result from ap-south: probe ap-1 cannot run the plan"
        ),
        "{}",
        merged.message
    );
}
