//! PostgreSQL: for production, and for several coordinators sharing one history.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::*;
use crate::storage::migrations;

/// The PostgreSQL engine.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The result writer's own connection (see [`WriterConnection`]).
    writer: WriterConnection<sqlx::Postgres>,
}

impl PostgresStore {
    /// Connects to `postgres://…` and migrates the schema.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("postflight-coordinator");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let store = Self {
            pool,
            writer: WriterConnection::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A transaction in which claims on `plan` are serialised across every coordinator
    /// sharing this database (a transaction-scoped advisory lock on the plan's name).
    async fn begin_claim(
        &self,
        plan: &str,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(plan)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Where claims' outcomes are written: a committed transaction is durable already.
    fn claims_pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the schema's migrations (see [`migrations`]), adopting a database whose
    /// versions an earlier postflight recorded in `schema_migrations`.
    async fn migrate(&self) -> StoreResult<()> {
        let legacy: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version)::bigint FROM schema_migrations")
                .fetch_one(&self.pool)
                .await
                .ok()
                .flatten();
        migrations::run(migrations::POSTGRES, &self.pool, legacy).await
    }
}

row_ext!(sqlx::postgres::PgRow);
store_impl!(PostgresStore);
