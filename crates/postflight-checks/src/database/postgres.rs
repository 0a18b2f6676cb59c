//! PostgreSQL: the catalog from `pg_class` / `pg_attribute` (what exists, whatever the
//! privileges on `information_schema`), queries over the simple protocol so that any column
//! type comes back as text.

use postflight_plan::model::DatabaseCheck;
use postflight_plan::secrets::redact_url;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::{Catalog, Inspection, describe, run_queries, schemas_of};

pub(super) async fn inspect(check: &DatabaseCheck) -> Result<Inspection, String> {
    let shown = redact_url(&check.url);
    let options: PgConnectOptions = check
        .url
        .parse()
        .map_err(|e| format!("invalid database url {shown}: {}", describe(&e)))?;
    let options = options
        .application_name("postflight")
        .options([("default_transaction_read_only", "on")]);
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(|e| format!("cannot connect to {shown}: {}", describe(&e)))?;
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
        .map_err(|e| format!("cannot read the catalog: {}", describe(&e)))?;
        for row in rows {
            let schema: String = row.try_get(0).map_err(|e| describe(&e))?;
            let name: String = row.try_get(1).map_err(|e| describe(&e))?;
            let kind: String = row.try_get(2).map_err(|e| describe(&e))?;
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
        .map_err(|e| format!("cannot read the catalog: {}", describe(&e)))?;
        for row in rows {
            let schema: String = row.try_get(0).map_err(|e| describe(&e))?;
            let table: String = row.try_get(1).map_err(|e| describe(&e))?;
            let column: String = row.try_get(2).map_err(|e| describe(&e))?;
            catalog.columns.insert((schema, table, column));
        }
    }
    let values = run_queries::<sqlx::Postgres>(&mut conn, &check.queries).await;
    // Closing politely is best effort; the answer is already complete.
    let _ = conn.close().await;
    Ok((catalog, values))
}
