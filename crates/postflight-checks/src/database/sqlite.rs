//! SQLite: the catalog from `sqlite_schema` and `pragma_table_info`. The file is opened
//! read-only and never created: a missing file is a failed check, not a new empty database.

use std::str::FromStr;

use postflight_plan::model::DatabaseCheck;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

use super::{Catalog, DbError, Inspection, describe, qualify, run_queries};

const SCHEMA: &str = "main";

pub(super) async fn inspect(check: &DatabaseCheck) -> Result<Inspection, DbError> {
    let failed = |what: String| {
        move |e: sqlx::Error| DbError::Catalog {
            what,
            reason: describe(&e),
        }
    };
    let options = SqliteConnectOptions::from_str(&check.url)
        .map_err(|e| DbError::InvalidUrl {
            url: check.url.clone(),
            reason: describe(&e),
        })?
        .read_only(true)
        .create_if_missing(false);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| DbError::Open {
            url: check.url.clone(),
            reason: describe(&e),
        })?;
    let mut catalog = Catalog::default();
    let rows = sqlx::query("SELECT type, name FROM sqlite_schema")
        .fetch_all(&mut conn)
        .await
        .map_err(failed(format!("the catalog of {}", check.url)))?;
    for row in rows {
        let kind: String = row.try_get(0).map_err(failed("the catalog".to_owned()))?;
        let name: String = row.try_get(1).map_err(failed("the catalog".to_owned()))?;
        match kind.as_str() {
            "table" | "view" => {
                catalog.tables.insert((SCHEMA.to_owned(), name));
            }
            "index" => {
                catalog.indexes.insert((SCHEMA.to_owned(), name));
            }
            _ => {}
        }
    }
    for (table, _) in &check.columns {
        let (_, name) = qualify(table, SCHEMA);
        let rows = sqlx::query("SELECT name FROM pragma_table_info(?1)")
            .bind(&name)
            .fetch_all(&mut conn)
            .await
            .map_err(failed(format!("the columns of {name}")))?;
        for row in rows {
            let column: String = row
                .try_get(0)
                .map_err(failed(format!("the columns of {name}")))?;
            catalog
                .columns
                .insert((SCHEMA.to_owned(), name.clone(), column));
        }
    }
    let values = run_queries::<sqlx::Sqlite>(&mut conn, &check.queries).await;
    let _ = conn.close().await;
    Ok((catalog, values))
}
