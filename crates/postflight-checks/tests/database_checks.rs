//! Database checks against a real PostgreSQL server (a scratch database per test) and real
//! SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;

use postflight_checks::Executor;
use postflight_e2e::{SEED_SCHEMA, ScratchDb, closed_port, sqlite_file};
use postflight_plan::{CheckOutcome, CheckStatus, Expander, parse_plan};

/// The seed article's database-integrity check, with a query on the data.
fn integrity_plan(url: &str, extra: &str) -> String {
    format!(
        "name: db\nchecks:\n  - name: database-integrity\n    timeout: 10s\n    database:\n      url: \"{url}\"\n      tables: [conversations, messages, tool_calls, sessions]\n      columns: {{messages: [id, conversation_id]}}\n      indexes: [messages_conversation_id_idx]\n      queries: [{{sql: \"SELECT count(*) FROM sessions\", expect: {{min: 1}}}}]\n{extra}"
    )
}

async fn run(yaml: &str) -> CheckOutcome {
    let env: HashMap<String, String> = HashMap::new();
    let plan = parse_plan(yaml, "db.yaml", Expander::plan(&env))
        .unwrap_or_else(|e| panic!("{}", e.render()));
    Executor::new()
        .unwrap()
        .execute(&plan, &plan.checks[0])
        .await
}

#[tokio::test]
async fn postgres_all_present() {
    let db = ScratchDb::create().await;
    db.execute(SEED_SCHEMA).await;
    let o = run(&integrity_plan(&db.url, "")).await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    assert_eq!(
        o.message,
        "4 tables, 2 columns, 1 index present; `SELECT count(*) FROM sessions` = 3 (at least 1)"
    );
    assert!(
        o.samples.is_empty(),
        "database checks make no HTTP requests"
    );
}

#[tokio::test]
async fn postgres_missing_table_index_and_column_are_all_named() {
    let db = ScratchDb::create().await;
    db.execute(SEED_SCHEMA).await;
    db.execute("DROP TABLE tool_calls; DROP INDEX messages_conversation_id_idx; ALTER TABLE messages DROP COLUMN conversation_id;")
        .await;
    let o = run(&integrity_plan(&db.url, "")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        "missing 1 table: tool_calls; missing 1 column: messages.conversation_id; missing 1 index: messages_conversation_id_idx"
    );
}

#[tokio::test]
async fn postgres_query_below_its_minimum() {
    let db = ScratchDb::create().await;
    db.execute(SEED_SCHEMA).await;
    db.execute("DELETE FROM sessions").await;
    let o = run(&integrity_plan(&db.url, "")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        "query `SELECT count(*) FROM sessions` returned 0, expected at least 1"
    );
}

#[tokio::test]
async fn postgres_schema_qualified_names_and_typed_values() {
    let db = ScratchDb::create().await;
    db.execute(
        "CREATE SCHEMA audit; CREATE TABLE audit.events (id bigint, amount numeric(10,2), ok boolean, note text);\
         CREATE INDEX events_id_idx ON audit.events (id);\
         INSERT INTO audit.events VALUES (1, 12.50, true, 'migrated'), (2, NULL, false, NULL);",
    )
    .await;
    let url = &db.url;
    let yaml = format!(
        "name: db\nchecks:\n  - name: audit\n    database:\n      url: \"{url}\"\n      schema: audit\n      tables: [events, public.nothing]\n      columns: {{events: [id, amount]}}\n      indexes: [audit.events_id_idx]\n      queries:\n        - {{sql: \"SELECT sum(amount) FROM audit.events\", expect: {{equals: 12.5}}}}\n        - {{sql: \"SELECT bool_or(ok) FROM audit.events\", expect: {{equals: true}}}}\n        - {{sql: \"SELECT note FROM audit.events ORDER BY id\", expect: {{equals: migrated}}}}\n        - {{sql: \"SELECT max(amount) FROM audit.events WHERE id = 2\", expect: {{equals: null}}}}\n"
    );
    let o = run(&yaml).await;
    assert_eq!(o.status, CheckStatus::Fail, "{}", o.message);
    assert_eq!(
        o.message, "missing 1 table: public.nothing",
        "every query held; only the absent table fails"
    );
}

#[tokio::test]
async fn postgres_checks_never_write() {
    let db = ScratchDb::create().await;
    db.execute(SEED_SCHEMA).await;
    let url = &db.url;
    let yaml = format!(
        "name: db\nchecks:\n  - name: writes\n    database:\n      url: \"{url}\"\n      queries: [{{sql: \"DELETE FROM sessions RETURNING id\"}}]\n"
    );
    let o = run(&yaml).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(o.message.contains("read-only transaction"), "{}", o.message);
    let again = run(&integrity_plan(&db.url, "")).await;
    assert_eq!(
        again.status,
        CheckStatus::Pass,
        "sessions are still there: {}",
        again.message
    );
}

#[tokio::test]
async fn postgres_wrong_password_is_clear_and_never_shows_the_password() {
    let db = ScratchDb::create().await;
    let secret = "Sup3r-s3cret-pw";
    let url = db.url.replacen(":postflight@", &format!(":{secret}@"), 1);
    assert!(
        url.contains(secret),
        "the test must really use the wrong password: {url}"
    );
    let o = run(&integrity_plan(&url, "")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message
            .contains("password authentication failed for user \"postflight\""),
        "{}",
        o.message
    );
    assert!(o.message.contains(":****@"), "{}", o.message);
    assert!(!o.message.contains(secret), "{}", o.message);
}

#[tokio::test]
async fn postgres_server_down() {
    let port = closed_port();
    let o = run(&integrity_plan(
        &format!("postgres://u:pw@127.0.0.1:{port}/app"),
        "",
    ))
    .await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        format!(
            "cannot connect to postgres://u:****@127.0.0.1:{port}/app: could not connect: connection refused"
        )
    );
}

#[tokio::test]
async fn sqlite_all_present_and_each_missing_kind() {
    let dir = tempfile::tempdir().unwrap();
    let good = sqlite_file(dir.path(), "good.db", SEED_SCHEMA).await;
    let o = run(&integrity_plan(&good, "")).await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    assert_eq!(
        o.message,
        "4 tables, 2 columns, 1 index present; `SELECT count(*) FROM sessions` = 3 (at least 1)"
    );
    let cases = [
        ("DROP TABLE tool_calls;", "missing 1 table: tool_calls"),
        (
            "DROP INDEX messages_conversation_id_idx;",
            "missing 1 index: messages_conversation_id_idx",
        ),
        (
            "ALTER TABLE messages RENAME COLUMN conversation_id TO conv_id;",
            "missing 1 column: messages.conversation_id",
        ),
        (
            "DELETE FROM sessions;",
            "query `SELECT count(*) FROM sessions` returned 0, expected at least 1",
        ),
    ];
    for (i, (change, expected)) in cases.into_iter().enumerate() {
        let schema = format!("{SEED_SCHEMA}{change}");
        let url = sqlite_file(dir.path(), &format!("case{i}.db"), &schema).await;
        let o = run(&integrity_plan(&url, "")).await;
        assert_eq!(o.status, CheckStatus::Fail, "{change}");
        assert_eq!(o.message, expected, "{change}");
    }
}

#[tokio::test]
async fn sqlite_missing_file_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let o = run(&integrity_plan(&format!("sqlite:{}", path.display()), "")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message
            .starts_with(&format!("cannot open sqlite:{}", path.display())),
        "{}",
        o.message
    );
    assert!(!path.exists(), "a validation must not create the database");
}

/// Every known way out of a session's read-only default, tried on a real PostgreSQL: one
/// query that switches the default off and writes, one that commits in between, one that
/// switches the transaction itself. Each is refused and the data is untouched, also for the
/// check's next query on the same connection.
#[tokio::test]
async fn postgres_queries_cannot_write_by_any_trick() {
    let db = ScratchDb::create().await;
    db.execute(SEED_SCHEMA).await;
    let tricks = [
        (
            "SET default_transaction_read_only = off; DELETE FROM sessions",
            "a query must be a single statement",
        ),
        (
            "SET default_transaction_read_only = off; COMMIT; DELETE FROM sessions",
            "a query must be a single statement",
        ),
        ("SET transaction_read_only = off", "transaction_read_only"),
        ("DELETE FROM sessions", "read-only transaction"),
        ("CREATE TABLE intruder (a int)", "read-only transaction"),
    ];
    for (sql, refusal) in tricks {
        // A SET as the query before, on the same connection, does not survive either.
        let queries = format!(
            "[{{sql: \"SET default_transaction_read_only = off\", expect: {{}}}}, {{sql: \"{sql}\", expect: {{}}}}, {{sql: \"SELECT count(*) FROM sessions\", expect: {{min: 3}}}}]"
        );
        let yaml = format!(
            "name: db\nchecks:\n  - name: tricks\n    database:\n      url: \"{}\"\n      queries: {queries}\n",
            db.url
        );
        let o = run(&yaml).await;
        assert_eq!(o.status, CheckStatus::Fail, "{sql}: {}", o.message);
        assert!(o.message.contains(refusal), "{sql}: {}", o.message);
        assert!(
            !o.message.contains("below"),
            "{sql}: the data changed: {}",
            o.message
        );
    }
    let again = run(&integrity_plan(&db.url, "")).await;
    assert_eq!(again.status, CheckStatus::Pass, "{}", again.message);
}

/// A migration holds a table's lock: the check's query gives up after the server-side lock
/// timeout instead of queueing in front of everyone else until the check's own timeout.
#[tokio::test]
async fn postgres_queries_do_not_queue_behind_a_migration() {
    use sqlx::Connection;
    let db = ScratchDb::create().await;
    db.execute(SEED_SCHEMA).await;
    let mut migration = sqlx::postgres::PgConnection::connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut migration)
        .await
        .unwrap();
    let yaml = format!(
        "name: db\nchecks:\n  - name: locked\n    timeout: 20s\n    database:\n      url: \"{}\"\n      queries: [{{sql: \"SELECT count(*) FROM sessions\", expect: {{min: 1}}}}]\n",
        db.url
    );
    let o = run(&yaml).await;
    assert_eq!(o.status, CheckStatus::Fail, "{}", o.message);
    assert!(o.message.contains("lock timeout"), "{}", o.message);
    // The lock timeout answered, not the check's 20 s timeout.
    assert!(!o.message.contains("did not answer"), "{}", o.message);
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut migration)
        .await
        .unwrap();
}

/// Queries with `params` bind their values, never paste them: on PostgreSQL (where the
/// extended protocol returns binary values, so the first column is read back as text) and on
/// SQLite; a hostile value is only ever compared, and typed columns are judged as before.
#[tokio::test]
async fn query_parameters_are_bound_on_postgres_and_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = ScratchDb::create().await;
    db.execute(SEED_SCHEMA).await;
    let sqlite = sqlite_file(dir.path(), "params.db", SEED_SCHEMA).await;
    for (url, cast) in [(db.url.as_str(), "::int"), (sqlite.as_str(), "")] {
        let yaml = format!(
            "name: db\nchecks:\n  - name: params\n    database:\n      url: \"{url}\"\n      queries:\n        - {{sql: \"SELECT user_name FROM sessions WHERE id = $1{cast}\", params: [\"2\"], expect: {{equals: grace}}}}\n        - {{sql: \"SELECT count(*) FROM sessions WHERE user_name = $1 OR user_name = $2;\", params: [ada, \"'; DROP TABLE sessions; --\"], expect: {{equals: 1}}}}\n        - {{sql: \"SELECT id > 0 FROM sessions WHERE user_name = $1 -- trailing comment\", params: [linus], expect: {{equals: true}}}}\n        - {{sql: \"SELECT id FROM sessions WHERE user_name = $1\", params: [nobody]}}\n"
        );
        let o = run(&yaml).await;
        assert_eq!(o.status, CheckStatus::Fail, "{url}: {}", o.message);
        assert_eq!(
            o.message, "query `SELECT id FROM sessions WHERE user_name = $1` returned no rows",
            "{url}: every other query held"
        );
        let again = run(&integrity_plan(url, "")).await;
        assert_eq!(again.status, CheckStatus::Pass, "{url}: {}", again.message);
    }
}

/// The seed schema on MySQL: `TEXT` columns cannot be indexed whole there.
const SEED_SCHEMA_MYSQL: &str = "
CREATE TABLE conversations (id INTEGER PRIMARY KEY, started_at VARCHAR(40));
CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER, body TEXT);
CREATE INDEX messages_conversation_id_idx ON messages (conversation_id);
CREATE TABLE tool_calls (id INTEGER PRIMARY KEY, message_id INTEGER, tool TEXT);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_name VARCHAR(40));
INSERT INTO sessions (id, user_name) VALUES (1, 'ada'), (2, 'grace'), (3, 'linus');
";

/// `mysql://` checks against a real MariaDB: the same integrity check as on PostgreSQL and
/// SQLite, each missing kind named, typed values and bound parameters, and a wrong password
/// that never shows.
#[tokio::test]
async fn mysql_integrity_typed_values_and_parameters() {
    let db = postflight_e2e::ScratchMysql::create().await;
    db.execute(SEED_SCHEMA_MYSQL).await;
    let o = run(&integrity_plan(&db.url, "")).await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    assert_eq!(
        o.message,
        "4 tables, 2 columns, 1 index present; `SELECT count(*) FROM sessions` = 3 (at least 1)"
    );
    let yaml = format!(
        "name: db\nchecks:\n  - name: typed\n    database:\n      url: \"{}\"\n      queries:\n        - {{sql: \"SELECT user_name FROM sessions WHERE id = ?\", params: [\"2\"], expect: {{equals: grace}}}}\n        - {{sql: \"SELECT count(*) FROM sessions WHERE user_name = ? OR user_name = ?\", params: [ada, \"'; DROP TABLE sessions; --\"], expect: {{equals: 1}}}}\n        - {{sql: \"SELECT 12.5 * 2\", expect: {{equals: 25}}}}\n        - {{sql: \"SELECT NULL\", expect: {{equals: null}}}}\n        - {{sql: \"SELECT id > 0 FROM sessions WHERE user_name = ?\", params: [linus], expect: {{equals: true}}}}\n",
        db.url
    );
    let o = run(&yaml).await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    db.execute("DROP TABLE tool_calls; DROP INDEX messages_conversation_id_idx ON messages")
        .await;
    let o = run(&integrity_plan(&db.url, "")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        "missing 1 table: tool_calls; missing 1 index: messages_conversation_id_idx"
    );
    let wrong = db.url.replace(":postflight-test@", ":n0t-the-password@");
    let o = run(&integrity_plan(&wrong, "")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message
            .starts_with("cannot connect to mysql://postflight:****@"),
        "{}",
        o.message
    );
    assert!(!o.message.contains("n0t-the-password"), "{}", o.message);
}

/// Every way a query could write on MySQL is refused and the data stays: statements that do
/// not read (writes, DDL, `SET`, `CALL` of a procedure that could commit and write), several
/// statements in one, and a locking read, which meets the read-only transaction.
#[tokio::test]
async fn mysql_queries_cannot_write_by_any_trick() {
    let db = postflight_e2e::ScratchMysql::create().await;
    db.execute(SEED_SCHEMA_MYSQL).await;
    let tricks = [
        ("DELETE FROM sessions", "`DELETE` is not run on MySQL"),
        (
            "/* hi */ DELETE FROM sessions",
            "`DELETE` is not run on MySQL",
        ),
        (
            "CREATE TABLE intruder (a int)",
            "`CREATE` is not run on MySQL",
        ),
        ("DROP TABLE tool_calls", "`DROP` is not run on MySQL"),
        ("CALL purge()", "`CALL` is not run on MySQL"),
        (
            "SELECT 1; DELETE FROM sessions",
            "a query must be a single statement",
        ),
        (
            "SET SESSION TRANSACTION READ WRITE",
            "`SET` is not run on MySQL",
        ),
        ("SET SESSION tx_read_only = 0", "`SET` is not run on MySQL"),
        ("SELECT * FROM sessions FOR UPDATE", ""),
    ];
    for (sql, refusal) in tricks {
        let yaml = format!(
            "name: db\nchecks:\n  - name: tricks\n    database:\n      url: \"{}\"\n      tables: [sessions, tool_calls]\n      queries: [{{sql: \"{sql}\", expect: {{}}}}, {{sql: \"DELETE FROM sessions\", expect: {{}}}}, {{sql: \"SELECT count(*) FROM sessions\", expect: {{min: 3}}}}]\n",
            db.url
        );
        let o = run(&yaml).await;
        assert_eq!(o.status, CheckStatus::Fail, "{sql}: {}", o.message);
        assert!(o.message.contains(refusal), "{sql}: {}", o.message);
        assert!(
            !o.message.contains("below"),
            "{sql}: the data changed: {}",
            o.message
        );
        assert!(
            !o.message.contains("missing"),
            "{sql}: a table went: {}",
            o.message
        );
    }
    let o = run(&integrity_plan(&db.url, "")).await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    let intruder = format!(
        "name: db\nchecks:\n  - name: t\n    database:\n      url: \"{}\"\n      tables: [intruder]\n",
        db.url
    );
    assert_eq!(
        run(&intruder).await.status,
        CheckStatus::Fail,
        "no table was created"
    );
}

/// A migration holds a table's metadata lock on MariaDB: the check's query gives up after the
/// server's lock wait timeout instead of queueing in front of everyone else.
#[tokio::test]
async fn mysql_queries_do_not_queue_behind_a_migration() {
    use sqlx::Connection;
    let db = postflight_e2e::ScratchMysql::create().await;
    db.execute(SEED_SCHEMA_MYSQL).await;
    let mut migration = sqlx::mysql::MySqlConnection::connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql("LOCK TABLES sessions WRITE")
        .execute(&mut migration)
        .await
        .unwrap();
    let yaml = format!(
        "name: db\nchecks:\n  - name: locked\n    timeout: 20s\n    database:\n      url: \"{}\"\n      queries: [{{sql: \"SELECT count(*) FROM sessions\", expect: {{min: 1}}}}]\n",
        db.url
    );
    let o = run(&yaml).await;
    assert_eq!(o.status, CheckStatus::Fail, "{}", o.message);
    assert!(
        o.message.contains("Lock wait timeout exceeded"),
        "{}",
        o.message
    );
    assert!(!o.message.contains("did not answer"), "{}", o.message);
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut migration)
        .await
        .unwrap();
}
