use super::*;
use postflight_plan::model::DbQuery;

fn check(url: &str) -> DatabaseCheck {
    DatabaseCheck {
        url: url.into(),
        schema: None,
        tables: vec![
            "conversations".into(),
            "messages".into(),
            "audit.events".into(),
        ],
        columns: vec![(
            "messages".into(),
            vec!["id".into(), "conversation_id".into()],
        )],
        indexes: vec!["messages_conversation_id_idx".into()],
        queries: vec![],
    }
}

fn catalog(schema: &str) -> Catalog {
    let s = schema.to_owned();
    Catalog {
        tables: [
            (s.clone(), "conversations".into()),
            (s.clone(), "messages".into()),
            ("audit".into(), "events".into()),
        ]
        .into_iter()
        .collect(),
        indexes: [(s.clone(), "messages_conversation_id_idx".into())]
            .into_iter()
            .collect(),
        columns: [
            (s.clone(), "messages".into(), "id".into()),
            (s, "messages".into(), "conversation_id".into()),
        ]
        .into_iter()
        .collect(),
    }
}

#[test]
fn everything_present_passes_with_a_summary() {
    let (status, message) = judge(&check("postgres://h/db"), &catalog("public"), &[]);
    assert_eq!(status, CheckStatus::Pass);
    assert_eq!(message, "3 tables, 2 columns, 1 index present");
}

#[test]
fn every_missing_object_is_named() {
    let mut cat = catalog("public");
    cat.tables
        .remove(&("public".into(), "conversations".into()));
    cat.tables.remove(&("audit".into(), "events".into()));
    cat.indexes.clear();
    cat.columns
        .remove(&("public".into(), "messages".into(), "conversation_id".into()));
    let (status, message) = judge(&check("postgres://h/db"), &cat, &[]);
    assert_eq!(status, CheckStatus::Fail);
    assert_eq!(
        message,
        "missing 2 tables: conversations, audit.events; missing 1 column: messages.conversation_id; \
         missing 1 index: messages_conversation_id_idx"
    );
}

#[test]
fn schema_option_and_case_hint() {
    let mut c = check("postgres://h/db");
    c.schema = Some("app".into());
    c.tables = vec!["Messages".into()];
    c.columns.clear();
    c.indexes.clear();
    let (status, message) = judge(&c, &catalog("app"), &[]);
    assert_eq!(status, CheckStatus::Fail);
    assert_eq!(
        message,
        "missing 1 table: Messages (found messages: names are case-sensitive)"
    );
}

#[test]
fn missing_table_explains_its_missing_columns() {
    let mut c = check("sqlite:x.db");
    c.tables.clear();
    c.indexes.clear();
    c.columns = vec![("ghost".into(), vec!["id".into()])];
    let (_, message) = judge(&c, &catalog("main"), &[]);
    assert_eq!(message, "missing 1 column: ghost.id (no such table)");
}

#[test]
fn query_values_against_expectations() {
    let min1 = QueryExpect {
        min: Some(1.0),
        ..QueryExpect::default()
    };
    assert_eq!(
        judge_value(&min1, &DbValue::Text("3".into())),
        Ok("3 (at least 1)".into())
    );
    assert_eq!(
        judge_value(&min1, &DbValue::Text("0".into())),
        Err("0, expected at least 1".into())
    );
    assert_eq!(
        judge_value(&min1, &DbValue::Text("abc".into())),
        Err("\"abc\", not a number (expected at least 1)".into())
    );
    assert_eq!(
        judge_value(&min1, &DbValue::Null),
        Err("NULL, expected at least 1".into())
    );
    let range = QueryExpect {
        min: Some(1.0),
        max: Some(10.0),
        ..QueryExpect::default()
    };
    assert_eq!(
        judge_value(&range, &DbValue::Text("11".into())),
        Err("11, expected at least 1 and at most 10".into())
    );
    let eq = |v: Value| QueryExpect {
        equals: Some(v),
        ..QueryExpect::default()
    };
    assert!(judge_value(&eq(serde_json::json!(3)), &DbValue::Text("3.0".into())).is_ok());
    assert!(judge_value(&eq(serde_json::json!("ok")), &DbValue::Text("ok".into())).is_ok());
    assert!(judge_value(&eq(serde_json::json!(true)), &DbValue::Text("t".into())).is_ok());
    assert!(judge_value(&eq(serde_json::json!(false)), &DbValue::Text("t".into())).is_err());
    assert!(judge_value(&eq(Value::Null), &DbValue::Null).is_ok());
    assert_eq!(
        judge_value(&QueryExpect::default(), &DbValue::Text("x".into())),
        Ok("x".into())
    );
}

#[test]
fn query_failures_and_empty_results_fail_the_check() {
    let mut c = check("sqlite:x.db");
    c.tables.clear();
    c.columns.clear();
    c.indexes.clear();
    c.queries = vec![
        DbQuery {
            sql: "SELECT count(*)\n  FROM sessions".into(),
            params: vec![],
            expect: QueryExpect {
                min: Some(1.0),
                ..QueryExpect::default()
            },
        },
        DbQuery {
            sql: "SELECT 1 WHERE false".into(),
            params: vec![],
            expect: QueryExpect::default(),
        },
        DbQuery {
            sql: "SELECT nope".into(),
            params: vec![],
            expect: QueryExpect::default(),
        },
    ];
    let values = vec![
        Ok(Some(DbValue::Text("0".into()))),
        Ok(None),
        Err(DbError::Query("no such column: nope".into())),
    ];
    let (status, message) = judge(&c, &Catalog::default(), &values);
    assert_eq!(status, CheckStatus::Fail);
    assert_eq!(
        message,
        "query `SELECT count(*) FROM sessions` returned 0, expected at least 1; \
         query `SELECT 1 WHERE false` returned no rows; query `SELECT nope` failed: no such column: nope"
    );
}

#[test]
fn qualified_names() {
    assert_eq!(
        qualify("audit.events", "public"),
        ("audit".into(), "events".into())
    );
    assert_eq!(
        qualify("events", "public"),
        ("public".into(), "events".into())
    );
    assert_eq!(qualify(".x", "public"), ("public".into(), ".x".into()));
}
