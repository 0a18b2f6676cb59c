//! PostgreSQL: the catalog from `pg_class` / `pg_attribute` (what exists, whatever the
//! privileges on `information_schema`), queries over the simple protocol so that any column
//! type comes back as text.
//!
//! A check reads a production database during a migration, so it must neither write nor get
//! in the migration's way. Every query is one statement (the server parses it first and
//! refuses several), runs in its own `READ ONLY` transaction whose snapshot is taken before
//! the query (so the query cannot switch it back to read-write) and which is always rolled
//! back (so a `SET` does not outlive it), under server-side statement and lock timeouts: a
//! query that waits for a migration's lock gives up within a second instead of queueing in
//! front of everyone else. A least-privileged role is still the first protection.

use std::time::Duration;

use postflight_plan::model::DatabaseCheck;
use postflight_plan::secrets::redact_url;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::{
    Catalog, DbError, DbValue, Inspection, after_rollback, describe, first_value, schemas_of,
};

/// How long a query may wait for a lock: long enough for ordinary row locks, short enough not
/// to hold up a migration's `ALTER TABLE` (which waits behind any queued reader).
const LOCK_TIMEOUT_MS: u128 = 1_000;

pub(super) async fn inspect(
    check: &DatabaseCheck,
    timeout: Duration,
) -> Result<Inspection, DbError> {
    let shown = redact_url(&check.url);
    let options: PgConnectOptions = check.url.parse().map_err(|e| DbError::InvalidUrl {
        url: shown.clone(),
        reason: describe(&e),
    })?;
    let statement_ms = timeout.as_millis().max(1).to_string();
    let lock_ms = timeout.as_millis().clamp(1, LOCK_TIMEOUT_MS).to_string();
    let options = options.application_name("postflight").options([
        ("default_transaction_read_only", "on"),
        ("statement_timeout", statement_ms.as_str()),
        ("lock_timeout", lock_ms.as_str()),
        ("idle_in_transaction_session_timeout", statement_ms.as_str()),
    ]);
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(|e| DbError::Connect {
            url: shown.clone(),
            reason: describe(&e),
        })?;
    let default_schema = check.schema.clone().unwrap_or_else(|| "public".to_owned());
    let schemas = schemas_of(check, &default_schema);
    let mut catalog = Catalog::default();
    if !check.tables.is_empty() || !check.indexes.is_empty() || !check.columns.is_empty() {
        let rows = sqlx::query(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1)",
        )
        .bind(&schemas)
        .fetch_all(&mut conn)
        .await
        .map_err(catalog_error("the catalog"))?;
        for row in rows {
            let schema: String = row.try_get(0).map_err(catalog_error("the catalog"))?;
            let name: String = row.try_get(1).map_err(catalog_error("the catalog"))?;
            let kind: String = row.try_get(2).map_err(catalog_error("the catalog"))?;
            match kind.as_str() {
                "r" | "p" | "v" | "m" | "f" => {
                    catalog.tables.insert((schema, name));
                }
                "i" | "I" => {
                    catalog.indexes.insert((schema, name));
                }
                _ => {}
            }
        }
    }
    if !check.columns.is_empty() {
        let rows = sqlx::query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attnum > 0 AND NOT a.attisdropped \
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname = ANY($1)",
        )
        .bind(&schemas)
        .fetch_all(&mut conn)
        .await
        .map_err(catalog_error("the catalog"))?;
        for row in rows {
            let schema: String = row.try_get(0).map_err(catalog_error("the catalog"))?;
            let table: String = row.try_get(1).map_err(catalog_error("the catalog"))?;
            let column: String = row.try_get(2).map_err(catalog_error("the catalog"))?;
            catalog.columns.insert((schema, table, column));
        }
    }
    let mut values = Vec::with_capacity(check.queries.len());
    for query in &check.queries {
        values.push(read_only(&mut conn, &query.sql, &query.params).await);
    }
    // Closing politely is best effort; the answer is already complete.
    let _ = conn.close().await;
    Ok((catalog, values))
}

/// One query, read-only: checked to be a single statement, run in a read-only transaction
/// with its snapshot already taken, then rolled back whatever happened.
///
/// A query with parameters needs the extended protocol, where values come back in binary:
/// it runs as `SELECT q.v::text FROM (query) AS q(v) LIMIT 1`, which renames its first
/// column and casts it to text, so every type is judged as the simple protocol would show it.
/// Parameters are bound as text (`$1::int` compares them with numbers).
async fn read_only(
    conn: &mut PgConnection,
    sql: &str,
    params: &[String],
) -> Result<Option<DbValue>, DbError> {
    use sqlx::{AssertSqlSafe, Executor, SqlSafeStr};
    // The extended protocol's parse step refuses several statements in one string.
    if let Err(e) = (&mut *conn)
        .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
    {
        let reason = describe(&e);
        return Err(if reason.contains("multiple commands") {
            DbError::MultipleStatements
        } else {
            DbError::Query(reason)
        });
    }
    sqlx::raw_sql("BEGIN READ ONLY; SELECT 1")
        .execute(&mut *conn)
        .await
        .map_err(|e| DbError::Transaction {
            step: "start a",
            reason: describe(&e),
        })?;
    let row = if params.is_empty() {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .fetch_optional(&mut *conn)
            .await
    } else {
        let inner = sql.trim().trim_end_matches(';');
        // The newline ends a trailing `--` comment before the closing parenthesis.
        let wrapped = format!("SELECT q.v::text FROM ({inner}\n) AS q(v) LIMIT 1");
        let mut bound = sqlx::query(AssertSqlSafe(wrapped));
        for param in params {
            bound = bound.bind(param.as_str());
        }
        bound.fetch_optional(&mut *conn).await
    };
    let rolled_back = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    after_rollback(row, rolled_back, first_value)
}

fn catalog_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |e| DbError::Catalog {
        what: what.to_owned(),
        reason: describe(&e),
    }
}
