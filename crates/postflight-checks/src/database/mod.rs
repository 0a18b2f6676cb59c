//! `database` checks: required tables, columns and indexes exist, and data invariants hold.
//!
//! Each engine only reads its catalog into a [`Catalog`] and runs queries; what is missing and
//! whether a value meets its expectation is decided here, in pure code. Connections are opened
//! read-only: a validation must never change the database it validates.

mod error;
mod mysql;
mod postgres;
mod sqlite;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use postflight_plan::model::{DatabaseCheck, DbEngine, QueryExpect};
use postflight_plan::{CheckOutcome, CheckStatus};

pub use error::DbError;
use serde_json::Value;

/// The schema objects that exist, as `(schema, name)` and `(schema, table, column)`.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// Tables and views.
    pub tables: BTreeSet<(String, String)>,
    /// Indexes.
    pub indexes: BTreeSet<(String, String)>,
    /// Columns of tables and views.
    pub columns: BTreeSet<(String, String, String)>,
}

/// The first value of a query's first row.
#[derive(Debug, Clone, PartialEq)]
pub enum DbValue {
    /// SQL NULL.
    Null,
    /// Any other value, in the database's text form.
    Text(String),
}

/// Runs a database check within `timeout`.
pub async fn run(check: &DatabaseCheck, timeout: Duration) -> CheckOutcome {
    let started = Instant::now();
    let work = async {
        match check.engine() {
            DbEngine::Postgres => postgres::inspect(check, timeout).await,
            DbEngine::Sqlite => sqlite::inspect(check).await,
            DbEngine::MySql => mysql::inspect(check, timeout).await,
        }
    };
    let result = tokio::time::timeout(timeout, work).await;
    let elapsed = started.elapsed();
    match result {
        Err(_) => CheckOutcome::fail(
            format!(
                "the database did not answer within {} (timeout)",
                postflight_plan::duration::PlanDuration(timeout)
            ),
            elapsed,
        ),
        Ok(Err(error)) => CheckOutcome::fail(error.to_string(), elapsed),
        Ok(Ok((catalog, values))) => {
            let (status, message) = judge(check, &catalog, &values);
            CheckOutcome {
                status,
                message,
                samples: Vec::new(),
                missing: 0,
                duration: elapsed,
                answer_shape: None,
                tally: None,
            }
        }
    }
}

/// What engines return: the catalog, and for each query its first value or its error.
pub(crate) type Inspection = (Catalog, Vec<Result<Option<DbValue>, DbError>>);

/// Runs each query and reads the first value of its first row as text.
///
/// `raw_sql` uses each engine's simple protocol, where PostgreSQL sends every value as text
/// whatever its type and SQLite converts on request, so any column type can be judged.
pub(crate) async fn run_queries<DB>(
    conn: &mut DB::Connection,
    queries: &[postflight_plan::model::DbQuery],
) -> Vec<Result<Option<DbValue>, DbError>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> String: sqlx::Decode<'r, DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut values = Vec::with_capacity(queries.len());
    for query in queries {
        let row = if query.params.is_empty() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(query.sql.clone()))
                .fetch_optional(&mut *conn)
                .await
        } else {
            // Parameters are bound, never pasted: a captured value cannot change the query.
            let mut bound = sqlx::query::<DB>(sqlx::AssertSqlSafe(query.sql.clone()));
            for param in &query.params {
                bound = bound.bind(param.clone());
            }
            bound.fetch_optional(&mut *conn).await
        };
        values.push(match row {
            Err(e) => Err(DbError::Query(describe(&e))),
            Ok(None) => Ok(None),
            Ok(Some(row)) => first_value(&row).map(Some),
        });
    }
    values
}

/// A read-only query's outcome once its transaction ended: the value of its first row
/// (read by `first`), unless the query failed or the rollback did (a connection whose
/// transaction state is unknown says so rather than answering).
pub(crate) fn after_rollback<R, T>(
    row: Result<Option<R>, sqlx::Error>,
    rolled_back: Result<T, sqlx::Error>,
    first: impl FnOnce(&R) -> Result<DbValue, DbError>,
) -> Result<Option<DbValue>, DbError> {
    let value = match row {
        Err(e) => Err(DbError::Query(describe(&e))),
        Ok(None) => Ok(None),
        Ok(Some(row)) => first(&row).map(Some),
    };
    rolled_back.map_err(|e| DbError::Transaction {
        step: "end the",
        reason: describe(&e),
    })?;
    value
}

pub(crate) fn first_value<R>(row: &R) -> Result<DbValue, DbError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    use sqlx::ValueRef;
    let raw = row.try_get_raw(0).map_err(|_| DbError::NoColumns)?;
    if raw.is_null() {
        return Ok(DbValue::Null);
    }
    row.try_get_unchecked::<String, _>(0)
        .map(DbValue::Text)
        .map_err(|e| DbError::FirstValue(describe(&e)))
}

/// Splits `schema.name`; unqualified names get `default_schema`.
pub(crate) fn qualify(name: &str, default_schema: &str) -> (String, String) {
    match name.split_once('.') {
        Some((schema, rest)) if !schema.is_empty() && !rest.is_empty() => {
            (schema.to_owned(), rest.to_owned())
        }
        _ => (default_schema.to_owned(), name.to_owned()),
    }
}

/// Schemas the check's names refer to.
pub(crate) fn schemas_of(check: &DatabaseCheck, default_schema: &str) -> Vec<String> {
    let mut schemas: BTreeSet<String> = BTreeSet::new();
    schemas.insert(default_schema.to_owned());
    let names = check
        .tables
        .iter()
        .chain(check.indexes.iter())
        .chain(check.columns.iter().map(|(t, _)| t));
    for name in names {
        schemas.insert(qualify(name, default_schema).0);
    }
    schemas.into_iter().collect()
}

/// The verdict of a database check from what was found.
pub fn judge(
    check: &DatabaseCheck,
    catalog: &Catalog,
    values: &[Result<Option<DbValue>, DbError>],
) -> (CheckStatus, String) {
    let default_schema = default_schema(check);
    let mut problems = Vec::new();
    let missing_tables: Vec<String> = check
        .tables
        .iter()
        .filter(|t| !catalog.tables.contains(&qualify(t, &default_schema)))
        .map(|t| with_case_hint(t, &default_schema, &catalog.tables))
        .collect();
    if !missing_tables.is_empty() {
        problems.push(format!(
            "missing {}: {}",
            plural(missing_tables.len(), "table", "tables"),
            missing_tables.join(", ")
        ));
    }
    let mut missing_columns = Vec::new();
    let mut column_count = 0;
    for (table, columns) in &check.columns {
        let (schema, name) = qualify(table, &default_schema);
        for column in columns {
            column_count += 1;
            let key = (schema.clone(), name.clone(), column.clone());
            if !catalog.columns.contains(&key) {
                let note = if catalog.tables.contains(&(schema.clone(), name.clone())) {
                    ""
                } else {
                    " (no such table)"
                };
                missing_columns.push(format!("{table}.{column}{note}"));
            }
        }
    }
    if !missing_columns.is_empty() {
        problems.push(format!(
            "missing {}: {}",
            plural(missing_columns.len(), "column", "columns"),
            missing_columns.join(", ")
        ));
    }
    let missing_indexes: Vec<String> = check
        .indexes
        .iter()
        .filter(|i| !catalog.indexes.contains(&qualify(i, &default_schema)))
        .map(|i| with_case_hint(i, &default_schema, &catalog.indexes))
        .collect();
    if !missing_indexes.is_empty() {
        problems.push(format!(
            "missing {}: {}",
            plural(missing_indexes.len(), "index", "indexes"),
            missing_indexes.join(", ")
        ));
    }
    let mut query_notes = Vec::new();
    for (query, value) in check.queries.iter().zip(values) {
        let sql = short_sql(&query.sql);
        match value {
            Err(e) => problems.push(format!("query `{sql}` failed: {e}")),
            Ok(None) => problems.push(format!("query `{sql}` returned no rows")),
            Ok(Some(v)) => match judge_value(&query.expect, v) {
                Ok(note) => query_notes.push(format!("`{sql}` = {note}")),
                Err(e) => problems.push(format!("query `{sql}` returned {e}")),
            },
        }
    }
    if !problems.is_empty() {
        return (CheckStatus::Fail, problems.join("; "));
    }
    let mut found = Vec::new();
    if !check.tables.is_empty() {
        found.push(plural(check.tables.len(), "table", "tables"));
    }
    if column_count > 0 {
        found.push(plural(column_count, "column", "columns"));
    }
    if !check.indexes.is_empty() {
        found.push(plural(check.indexes.len(), "index", "indexes"));
    }
    let mut message = if found.is_empty() {
        String::new()
    } else {
        format!("{} present", found.join(", "))
    };
    if !query_notes.is_empty() {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&query_notes.join("; "));
    }
    (CheckStatus::Pass, message)
}

pub(crate) fn default_schema(check: &DatabaseCheck) -> String {
    match check.engine() {
        DbEngine::Postgres => check.schema.clone().unwrap_or_else(|| "public".to_owned()),
        DbEngine::Sqlite => "main".to_owned(),
        DbEngine::MySql => check
            .schema
            .clone()
            .unwrap_or_else(|| mysql::database_of(&check.url)),
    }
}

/// `Messages (found messages: names are case-sensitive)` when only the case differs.
fn with_case_hint(name: &str, default_schema: &str, set: &BTreeSet<(String, String)>) -> String {
    let (schema, wanted) = qualify(name, default_schema);
    let near = set
        .iter()
        .find(|(s, n)| *s == schema && n.eq_ignore_ascii_case(&wanted));
    match near {
        Some((_, n)) => format!("{name} (found {n}: names are case-sensitive)"),
        None => name.to_owned(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn short_sql(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        format!("{}…", one_line.chars().take(80).collect::<String>())
    } else {
        one_line
    }
}

/// Whether a query's first value meets its expectation: `Ok` with the value and what held,
/// `Err` with the value and what was expected.
pub fn judge_value(expect: &QueryExpect, value: &DbValue) -> Result<String, String> {
    let text = match value {
        DbValue::Null => {
            return match &expect.equals {
                Some(Value::Null) => Ok("NULL".to_owned()),
                None if expect.min.is_none() && expect.max.is_none() => Ok("NULL".to_owned()),
                _ => Err(format!("NULL, expected {}", describe_expect(expect))),
            };
        }
        DbValue::Text(t) => t.trim(),
    };
    let number = text.parse::<f64>().ok();
    if expect.min.is_some() || expect.max.is_some() {
        let Some(n) = number else {
            return Err(format!(
                "\"{text}\", not a number (expected {})",
                describe_expect(expect)
            ));
        };
        if expect.min.is_some_and(|min| n < min) || expect.max.is_some_and(|max| n > max) {
            return Err(format!("{text}, expected {}", describe_expect(expect)));
        }
    }
    if let Some(expected) = &expect.equals {
        let equal = match expected {
            Value::Number(e) => number.is_some_and(|n| Some(n) == e.as_f64()),
            Value::Bool(b) => {
                let truthy = matches!(text.to_ascii_lowercase().as_str(), "t" | "true" | "1");
                let falsy = matches!(text.to_ascii_lowercase().as_str(), "f" | "false" | "0");
                (*b && truthy) || (!*b && falsy)
            }
            Value::String(s) => text == s,
            Value::Null => false,
            other => serde_json::from_str::<Value>(text).is_ok_and(|v| v == *other),
        };
        if !equal {
            return Err(format!("{text}, expected {}", describe_expect(expect)));
        }
    }
    if expect == &QueryExpect::default() {
        Ok(text.to_owned())
    } else {
        Ok(format!("{text} ({})", describe_expect(expect)))
    }
}

fn describe_expect(expect: &QueryExpect) -> String {
    let mut parts = Vec::new();
    if let Some(min) = expect.min {
        parts.push(format!("at least {min}"));
    }
    if let Some(max) = expect.max {
        parts.push(format!("at most {max}"));
    }
    if let Some(eq) = &expect.equals {
        parts.push(match eq {
            Value::Null => "NULL".to_owned(),
            other => format!("= {other}"),
        });
    }
    if parts.is_empty() {
        "a value".to_owned()
    } else {
        parts.join(" and ")
    }
}

/// An sqlx error as a sentence without the driver's boilerplate.
pub(crate) fn describe(error: &sqlx::Error) -> String {
    let text = error.to_string();
    let text = text
        .strip_prefix("error returned from database: ")
        .or_else(|| text.strip_prefix("error communicating with database: "))
        .unwrap_or(&text)
        .replace(" (os error 111)", "");
    match error {
        sqlx::Error::Io(_) => format!("could not connect: {}", text.to_lowercase()),
        sqlx::Error::Tls(_) => format!("TLS error: {text}"),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests;
