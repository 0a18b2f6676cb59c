use serde_json::json;

use super::*;

fn fill_text(text: &str, captures: &Captures) -> Result<String, String> {
    Refs::Steps(captures).text(text)
}

fn fill_json(value: &Value, captures: &Captures) -> Result<Value, String> {
    Refs::Steps(captures).json(value)
}

fn captures() -> Captures {
    Captures::from([
        ("session".to_owned(), json!("sess-4f9a2c71")),
        ("user_id".to_owned(), json!(42)),
    ])
}

#[test]
fn references_are_filled_in_text() {
    assert_eq!(
        fill_text("/sessions/${step:session}?u=${step:user_id}", &captures()).unwrap(),
        "/sessions/sess-4f9a2c71?u=42"
    );
    assert_eq!(fill_text("no refs", &captures()).unwrap(), "no refs");
    assert_eq!(
        fill_text("${step:unclosed", &captures()).unwrap(),
        "${step:unclosed"
    );
    let missing = fill_text("${step:token}", &captures()).unwrap_err();
    assert!(missing.contains("${step:token} has no value"), "{missing}");
}

#[test]
fn a_whole_reference_keeps_the_captured_type_in_json() {
    let body = json!({"session": "${step:session}", "user": "${step:user_id}",
                      "note": "user ${step:user_id}", "list": ["${step:user_id}", 1]});
    assert_eq!(
        fill_json(&body, &captures()).unwrap(),
        json!({"session": "sess-4f9a2c71", "user": 42, "note": "user 42", "list": [42, 1]})
    );
    assert!(fill_json(&json!({"x": "${step:nope}"}), &captures()).is_err());
}

#[test]
fn longer_values_and_cut_off_values_are_masked_too() {
    let captures = Captures::from([
        ("a".to_owned(), json!("token-123")),
        ("b".to_owned(), json!("token-123-long-tail")),
        ("c".to_owned(), json!("sess-4f9a2c71d0e3b5a7")),
    ]);
    assert_eq!(
        mask("got token-123-long-tail and token-123", &captures),
        "got *** and ***"
    );
    assert_eq!(
        mask("body: {\"t\": \"sess-4f9a2c…", &captures),
        "body: {\"t\": \"***…"
    );
}

#[test]
fn captured_values_are_masked_in_messages() {
    assert_eq!(
        mask(
            "step `chat` failed: GET /s/sess-4f9a2c71 answered 500 for user 42",
            &captures()
        ),
        "step `chat` failed: GET /s/*** answered 500 for user 42"
    );
}

#[test]
fn captures_come_from_the_json_answer() {
    let step = FlowStep {
        name: "login".to_owned(),
        always: false,
        capture: vec![(
            "session".to_owned(),
            postflight_plan::model::JsonPathExpr::parse("$.session_id").unwrap(),
        )],
        action: StepAction::Database(DatabaseCheck {
            url: "sqlite::memory:".to_owned(),
            schema: None,
            tables: vec![],
            columns: vec![],
            indexes: vec![],
            queries: vec![],
        }),
    };
    let mut got = Captures::new();
    capture(&step, r#"{"session_id": "abc"}"#, &mut got).unwrap();
    assert_eq!(got["session"], json!("abc"));
    let nothing = capture(&step, r#"{"other": 1}"#, &mut got).unwrap_err();
    assert!(
        nothing.contains("cannot capture session: $.session_id matches nothing"),
        "{nothing}"
    );
    let not_json = capture(&step, "<html>", &mut got).unwrap_err();
    assert!(not_json.contains("the answer is not JSON"), "{not_json}");
}
