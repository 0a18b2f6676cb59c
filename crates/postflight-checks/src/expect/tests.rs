use super::*;
use postflight_plan::model::{JsonPathExpr, Pattern, StatusExpect};
use serde_json::json;

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into(),
        truncated: false,
        latency: Duration::from_millis(12),
    }
}

fn assertion(path: &str) -> JsonAssertion {
    JsonAssertion {
        path: JsonPathExpr::parse(path).unwrap(),
        exists: None,
        equals: None,
        contains: None,
        min_length: None,
        max_length: None,
    }
}

#[test]
fn status_defaults_to_any_2xx_and_stops_on_mismatch() {
    let expect = HttpExpect::default();
    assert_eq!(
        judge(&expect, &answer(204, "")).unwrap(),
        "status 204 in 12.0 ms, 1 expectation met"
    );
    let err = judge(&expect, &answer(503, "upstream down")).unwrap_err();
    assert_eq!(err, ["status 503, expected 2xx (body: \"upstream down\")"]);
    let expect = HttpExpect {
        status: StatusExpect::OneOf(vec![200, 201]),
        body_contains: vec!["never checked".into()],
        ..HttpExpect::default()
    };
    assert_eq!(
        judge(&expect, &answer(500, "")).unwrap_err(),
        ["status 500, expected one of 200, 201 (body: empty)"]
    );
}

#[test]
fn the_design_contains_message() {
    let mut a = assertion("$.response");
    a.contains = Some(json!("INV-001"));
    let expect = HttpExpect {
        json: vec![a],
        ..HttpExpect::default()
    };
    assert_eq!(
        judge(
            &expect,
            &answer(200, r#"{"response": "I could not find it"}"#)
        )
        .unwrap_err(),
        ["$.response does not contain \"INV-001\" (got: \"I could not find it\")"]
    );
    assert!(
        judge(
            &expect,
            &answer(200, r#"{"response": "Invoice INV-001: $120, paid"}"#)
        )
        .is_ok()
    );
}

#[test]
fn min_and_max_length_count_characters_items_and_keys() {
    let mut a = assertion("$.response");
    a.min_length = Some(11);
    let doc = json!({"response": "short"});
    assert_eq!(
        judge_json(&a, &doc).unwrap_err(),
        "$.response has 5 characters, expected at least 11 (got: \"short\")"
    );
    assert!(judge_json(&a, &json!({"response": "héllo wörld!"})).is_ok());
    let mut items = assertion("$.items");
    items.max_length = Some(1);
    assert_eq!(
        judge_json(&items, &json!({"items": [1, 2]})).unwrap_err(),
        "$.items has 2 items, expected at most 1 (got: [1,2])"
    );
    let mut n = assertion("$.n");
    n.min_length = Some(1);
    assert_eq!(
        judge_json(&n, &json!({"n": 5})).unwrap_err(),
        "$.n is 5 (a number), which has no length"
    );
}

#[test]
fn exists_equals_and_missing_paths() {
    let doc = json!({"status": "degraded", "count": 3, "ok": true});
    assert_eq!(
        judge_json(&assertion("$.missing"), &doc).unwrap_err(),
        "$.missing not found (got: {\"status\":\"degraded\",\"count\":3,\"ok\":true})"
    );
    let mut absent = assertion("$.error");
    absent.exists = Some(false);
    assert!(judge_json(&absent, &doc).is_ok());
    let mut present = assertion("$.status");
    present.exists = Some(false);
    assert_eq!(
        judge_json(&present, &doc).unwrap_err(),
        "$.status exists, expected it not to (got: \"degraded\")"
    );
    let mut eq = assertion("$.status");
    eq.equals = Some(json!("ok"));
    assert_eq!(
        judge_json(&eq, &doc).unwrap_err(),
        "$.status is \"degraded\", expected \"ok\""
    );
    let mut num = assertion("$.count");
    num.equals = Some(json!(3.0));
    assert!(judge_json(&num, &doc).is_ok(), "3 equals 3.0");
    let mut b = assertion("$.ok");
    b.equals = Some(json!(true));
    assert!(judge_json(&b, &doc).is_ok());
}

#[test]
fn contains_on_arrays_and_objects() {
    let doc = json!({"tools": ["lookup_invoice", "send_email"], "meta": {"region": "eu"}, "ids": [{"id": 1}]});
    let mut a = assertion("$.tools");
    a.contains = Some(json!("lookup_invoice"));
    assert!(judge_json(&a, &doc).is_ok());
    a.contains = Some(json!("invoice"));
    assert!(judge_json(&a, &doc).is_ok(), "substring of an element");
    a.contains = Some(json!("refund"));
    assert_eq!(
        judge_json(&a, &doc).unwrap_err(),
        "$.tools does not contain \"refund\" (got: [\"lookup_invoice\",\"send_email\"])"
    );
    let mut wild = assertion("$.ids[*].id");
    wild.contains = Some(json!(1));
    assert!(judge_json(&wild, &doc).is_ok());
    let mut key = assertion("$.meta");
    key.contains = Some(json!("region"));
    assert!(judge_json(&key, &doc).is_ok());
}

#[test]
fn non_json_body_is_explained() {
    let mut a = assertion("$.response");
    a.min_length = Some(1);
    let expect = HttpExpect {
        json: vec![a],
        ..HttpExpect::default()
    };
    let mut html = answer(200, "<html>maintenance</html>");
    html.headers = vec![("content-type".into(), "text/html".into())];
    let err = judge(&expect, &html).unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(
        err[0].starts_with("expected a JSON body for $.response, got text/html that is not JSON"),
        "{}",
        err[0]
    );
    assert!(
        err[0].ends_with(": \"<html>maintenance</html>\""),
        "{}",
        err[0]
    );
}

#[test]
fn body_headers_and_latency_expectations_report_every_failure() {
    let expect = HttpExpect {
        body_contains: vec!["INV-001".into()],
        body_not_contains: vec!["error".into()],
        body_regex: Some(Pattern::parse(r"total: \d+").unwrap()),
        headers: vec![
            ("Content-Type".into(), "json".into()),
            ("X-Version".into(), "2".into()),
        ],
        max_latency: Some(Duration::from_millis(5)),
        ..HttpExpect::default()
    };
    let err = judge(&expect, &answer(200, "an error happened")).unwrap_err();
    assert_eq!(
        err,
        [
            "body does not contain \"INV-001\" (got: \"an error happened\")",
            "body contains \"error\", expected it not to (at: \"an error happened\")",
            "body does not match /total: \\d+/ (got: \"an error happened\")",
            "header X-Version is missing",
            "took 12.0 ms, expected at most 5ms",
        ]
    );
    let good = answer(200, "INV-001 total: 120");
    let mut ok_expect = expect.clone();
    ok_expect.headers.pop();
    ok_expect.max_latency = Some(Duration::from_secs(1));
    assert_eq!(
        judge(&ok_expect, &good).unwrap(),
        "status 200 in 12.0 ms, all 6 expectations met"
    );
}

#[test]
fn long_bodies_are_cut_in_messages() {
    let body = "x".repeat(1000);
    let text = excerpt(&body);
    assert!(text.chars().count() <= EXCERPT_CHARS + 1);
    assert!(text.ends_with('…'));
}
