//! MySQL and MariaDB: the catalog from `information_schema`, queries over the text protocol
//! so that any column type comes back as text.
//!
//! The same rules as PostgreSQL: a query is one statement (checked by preparing it first),
//! runs in a `READ ONLY` transaction of a session whose every transaction defaults to read
//! only (set again before each query, so a query cannot switch it off for the next one), and
//! is rolled back. Server-side limits keep a query from queueing behind a migration's
//! metadata lock (`lock_wait_timeout`) or running past the check (`max_statement_time` on
//! MariaDB, `max_execution_time` on MySQL; each server ignores the other's).

use std::time::Duration;

use postflight_plan::model::DatabaseCheck;
use postflight_plan::secrets::redact_url;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Row};

use super::{
    Catalog, DbError, DbValue, Inspection, after_rollback, default_schema, describe, qualify,
};

/// The database a `mysql://host/NAME` URL names (empty when it names none).
pub(crate) fn database_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .unwrap_or_default()
}

pub(super) async fn inspect(
    check: &DatabaseCheck,
    timeout: Duration,
) -> Result<Inspection, DbError> {
    let shown = redact_url(&check.url);
    let options: MySqlConnectOptions = check.url.parse().map_err(|e| DbError::InvalidUrl {
        url: shown.clone(),
        reason: describe(&e),
    })?;
    let mut conn = MySqlConnection::connect_with(&options)
        .await
        .map_err(|e| DbError::Connect {
            url: shown.clone(),
            reason: describe(&e),
        })?;
    let seconds = timeout.as_secs().max(1);
    let millis = timeout.as_millis().max(1);
    for (setting, optional) in [
        ("SET SESSION lock_wait_timeout = 1".to_owned(), false),
        ("SET SESSION innodb_lock_wait_timeout = 1".to_owned(), false),
        (format!("SET SESSION max_statement_time = {seconds}"), true),
        (format!("SET SESSION max_execution_time = {millis}"), true),
    ] {
        let applied = sqlx::raw_sql(sqlx::AssertSqlSafe(setting))
            .execute(&mut conn)
            .await;
        if let Err(e) = applied
            && !optional
        {
            return Err(DbError::Transaction {
                step: "prepare the",
                reason: describe(&e),
            });
        }
    }
    let schema = default_schema(check);
    let mut schemas: Vec<String> = vec![schema.clone()];
    for name in check
        .tables
        .iter()
        .chain(&check.indexes)
        .chain(check.columns.iter().map(|(t, _)| t))
    {
        let (s, _) = qualify(name, &schema);
        if !schemas.contains(&s) {
            schemas.push(s);
        }
    }
    let mut catalog = Catalog::default();
    for s in &schemas {
        read_catalog(&mut conn, check, s, &mut catalog).await?;
    }
    let mut values = Vec::with_capacity(check.queries.len());
    for query in &check.queries {
        values.push(read_only(&mut conn, &query.sql, &query.params).await);
    }
    let _ = conn.close().await;
    Ok((catalog, values))
}

async fn read_catalog(
    conn: &mut MySqlConnection,
    check: &DatabaseCheck,
    schema: &str,
    catalog: &mut Catalog,
) -> Result<(), DbError> {
    let failed = |e: sqlx::Error| DbError::Catalog {
        what: "the catalog".to_owned(),
        reason: describe(&e),
    };
    let text = |row: &sqlx::mysql::MySqlRow, i: usize| -> Result<String, DbError> {
        row.try_get_unchecked::<String, _>(i)
            .map_err(|e| DbError::Catalog {
                what: "the catalog".to_owned(),
                reason: describe(&e),
            })
    };
    if !check.tables.is_empty() || !check.columns.is_empty() {
        let rows = sqlx::query(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = ?",
        )
        .bind(schema)
        .fetch_all(&mut *conn)
        .await
        .map_err(failed)?;
        for row in rows {
            catalog.tables.insert((schema.to_owned(), text(&row, 0)?));
        }
    }
    if !check.indexes.is_empty() {
        let rows = sqlx::query(
            "SELECT DISTINCT CAST(index_name AS CHAR) FROM information_schema.statistics WHERE table_schema = ?",
        )
        .bind(schema)
        .fetch_all(&mut *conn)
        .await
        .map_err(failed)?;
        for row in rows {
            catalog.indexes.insert((schema.to_owned(), text(&row, 0)?));
        }
    }
    if !check.columns.is_empty() {
        let rows = sqlx::query(
            "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.columns WHERE table_schema = ?",
        )
        .bind(schema)
        .fetch_all(&mut *conn)
        .await
        .map_err(failed)?;
        for row in rows {
            catalog
                .columns
                .insert((schema.to_owned(), text(&row, 0)?, text(&row, 1)?));
        }
    }
    Ok(())
}

/// The statements a MySQL check runs. A stored procedure (`CALL`) could commit the
/// read-only transaction and switch its session back to read-write from inside, so only
/// statements that read are run at all.
const READING_STATEMENTS: [&str; 8] = [
    "SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES", "TABLE",
];

/// The first keyword of `sql`, past blanks, comments and opening parentheses, upper-cased.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = trimmed
            .strip_prefix("--")
            .or_else(|| trimmed.strip_prefix('#'))
        {
            rest = after.split_once('\n').map_or("", |(_, next)| next);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, next)| next);
        } else {
            return trimmed
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect::<String>()
                .to_ascii_uppercase();
        }
    }
}

/// One query, read-only, rolled back; values read as text.
async fn read_only(
    conn: &mut MySqlConnection,
    sql: &str,
    params: &[String],
) -> Result<Option<DbValue>, DbError> {
    use sqlx::{AssertSqlSafe, Executor, SqlSafeStr};
    let keyword = first_keyword(sql);
    if !READING_STATEMENTS.contains(&keyword.as_str()) {
        return Err(DbError::Query(format!(
            "`{keyword}` is not run on MySQL: a check runs statements that read ({})",
            READING_STATEMENTS.join(", ")
        )));
    }
    // Preparing refuses several statements in one string.
    if let Err(e) = (&mut *conn)
        .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
    {
        let reason = describe(&e);
        return Err(if reason.contains("syntax") && sql.contains(';') {
            DbError::MultipleStatements
        } else {
            DbError::Query(reason)
        });
    }
    for step in [
        "SET SESSION TRANSACTION READ ONLY",
        "START TRANSACTION READ ONLY",
    ] {
        sqlx::raw_sql(step)
            .execute(&mut *conn)
            .await
            .map_err(|e| DbError::Transaction {
                step: "start a",
                reason: describe(&e),
            })?;
    }
    let row = if params.is_empty() {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .fetch_optional(&mut *conn)
            .await
    } else {
        let mut bound = sqlx::query(AssertSqlSafe(sql.to_owned()));
        for param in params {
            bound = bound.bind(param.as_str());
        }
        bound.fetch_optional(&mut *conn).await
    };
    let rolled_back = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    after_rollback(row, rolled_back, first_value)
}

/// The first value as text. The text protocol sends every value as text; a prepared
/// statement (a query with parameters) sends numbers in binary, read as numbers.
fn first_value(row: &sqlx::mysql::MySqlRow) -> Result<DbValue, DbError> {
    use sqlx::ValueRef;
    let raw = row.try_get_raw(0).map_err(|_| DbError::NoColumns)?;
    if raw.is_null() {
        return Ok(DbValue::Null);
    }
    if let Ok(text) = row.try_get::<String, _>(0) {
        return Ok(DbValue::Text(text));
    }
    if let Ok(n) = row.try_get::<i64, _>(0) {
        return Ok(DbValue::Text(n.to_string()));
    }
    if let Ok(n) = row.try_get::<u64, _>(0) {
        return Ok(DbValue::Text(n.to_string()));
    }
    if let Ok(n) = row.try_get::<f64, _>(0) {
        return Ok(DbValue::Text(n.to_string()));
    }
    row.try_get_unchecked::<String, _>(0)
        .map(DbValue::Text)
        .map_err(|e| DbError::FirstValue(describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::first_keyword;

    #[test]
    fn the_first_keyword_is_found_past_comments() {
        assert_eq!(first_keyword("  select 1"), "SELECT");
        assert_eq!(
            first_keyword("-- note\n/* x */ (WITH a AS (SELECT 1) SELECT * FROM a)"),
            "WITH"
        );
        assert_eq!(first_keyword("# c\nCALL p()"), "CALL");
        assert_eq!(first_keyword("/* unclosed"), "");
    }
}
