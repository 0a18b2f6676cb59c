//! Tool-call assertions on answers written as OpenAI, Anthropic and plain calls.

use serde_json::json;

use super::*;

fn expect() -> ToolExpect {
    ToolExpect {
        path: None,
        format: ToolFormat::Auto,
        called: Vec::new(),
        not_called: Vec::new(),
        args: Vec::new(),
        strict_order: false,
        max_calls: None,
    }
}

fn openai(calls: &[(&str, &str)]) -> Value {
    json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls":
        calls.iter().enumerate().map(|(i, (name, args))| json!({
            "id": format!("call_{i}"), "type": "function",
            "function": {"name": name, "arguments": args}
        })).collect::<Vec<_>>()
    }}]})
}

#[test]
fn openai_calls_are_read_with_their_json_text_arguments() {
    let answer = openai(&[("search_invoices", r#"{"query": "INV-001"}"#)]);
    let mut e = expect();
    e.called = vec!["lookup_invoice".into()];
    e.args = vec![("lookup_invoice".into(), json!({"invoice_id": "INV-001"}))];
    assert_eq!(
        judge_tools(&e, &answer).unwrap_err(),
        ["called search_invoices(query=INV-001), expected lookup_invoice(invoice_id=INV-001)"]
    );
    let right = openai(&[(
        "lookup_invoice",
        r#"{"invoice_id": "INV-001", "verbose": true}"#,
    )]);
    assert_eq!(judge_tools(&e, &right), Ok(()), "extra arguments are fine");
    let wrong_args = openai(&[("lookup_invoice", r#"{"invoice_id": "INV-002"}"#)]);
    assert_eq!(
        judge_tools(&e, &wrong_args).unwrap_err(),
        ["called lookup_invoice(invoice_id=INV-002), expected lookup_invoice(invoice_id=INV-001)"]
    );
}

#[test]
fn malformed_arguments_fail_clearly() {
    let answer = openai(&[("lookup_invoice", r#"{"invoice_id": "INV-001""#)]);
    let mut e = expect();
    e.called = vec!["lookup_invoice".into()];
    let problems = judge_tools(&e, &answer).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("the arguments of lookup_invoice are not JSON (EOF while parsing"),
        "{problems:?}"
    );
    e.args = vec![("lookup_invoice".into(), json!({"invoice_id": "INV-001"}))];
    let problems = judge_tools(&e, &answer).unwrap_err();
    assert!(
        problems[1].contains("called lookup_invoice(<unreadable arguments>)"),
        "{problems:?}"
    );
}

#[test]
fn anthropic_and_plain_calls_are_read_too() {
    let anthropic = json!({"content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "t1", "name": "lookup_invoice", "input": {"invoice_id": "INV-001"}}
    ]});
    let mut e = expect();
    e.called = vec!["lookup_invoice".into()];
    e.args = vec![("lookup_invoice".into(), json!({"invoice_id": "INV-001"}))];
    assert_eq!(judge_tools(&e, &anthropic), Ok(()));
    let plain =
        json!({"tool_calls": [{"name": "lookup_invoice", "arguments": {"invoice_id": "INV-001"}}]});
    assert_eq!(judge_tools(&e, &plain), Ok(()));
    // The demo backend writes `tool`, `arguments`.
    let demo = json!({"response": "…", "tool_calls": [{"tool": "lookup_invoice", "arguments": {"invoice_id": "INV-001"}}]});
    assert_eq!(judge_tools(&e, &demo), Ok(()));
    // An explicit format reads only that format.
    e.format = ToolFormat::OpenAi;
    assert_eq!(
        judge_tools(&e, &plain).unwrap_err(),
        ["no tool was called, expected lookup_invoice(invoice_id=INV-001)"]
    );
}

#[test]
fn forbidden_tools_order_and_count() {
    let answer = json!({"tool_calls": [
        {"name": "lookup_invoice", "arguments": {}},
        {"name": "delete_invoice", "arguments": {"id": 1}},
        {"name": "send_email", "arguments": {}}
    ]});
    let mut e = expect();
    e.not_called = vec!["delete_*".into(), "drop_?able".into()];
    assert_eq!(
        judge_tools(&e, &answer).unwrap_err(),
        ["called delete_invoice(id=1), which must not be called (delete_*)"]
    );
    let mut e = expect();
    e.called = vec!["send_email".into(), "lookup_invoice".into()];
    e.strict_order = true;
    assert!(
        judge_tools(&e, &answer).unwrap_err()[0]
            .ends_with("expected them in the order send_email → lookup_invoice")
    );
    e.called.reverse();
    assert_eq!(judge_tools(&e, &answer), Ok(()));
    e.max_calls = Some(2);
    assert!(
        judge_tools(&e, &answer).unwrap_err()[0].starts_with("3 tool calls, at most 2 expected")
    );
}

#[test]
fn no_calls_at_all_is_said_plainly() {
    let mut e = expect();
    e.called = vec!["lookup_invoice".into()];
    let problems = judge_tools(&e, &json!({"response": "I could not find it"})).unwrap_err();
    assert!(
        problems[0].starts_with("no tool calls in the answer (looked at $.choices[0].message.tool_calls, $.tool_calls, $.content"),
        "{problems:?}"
    );
    let empty = json!({"tool_calls": []});
    assert_eq!(
        judge_tools(&e, &empty).unwrap_err(),
        ["no tool was called, expected lookup_invoice()"]
    );
}

#[test]
fn globs_match_whole_names() {
    assert!(glob("delete_*", "delete_invoice"));
    assert!(!glob("delete_*", "undelete_invoice"));
    assert!(glob("*_invoice", "lookup_invoice"));
    assert!(glob("a?c", "abc"));
    assert!(!glob("a?c", "abbc"));
    assert!(glob("*", ""));
}
