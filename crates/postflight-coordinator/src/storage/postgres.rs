//! PostgreSQL: for production, and for several coordinators sharing one history.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::sql::{Engine, SqlStore};
use super::{StoreResult, migrations};

impl SqlStore<Postgres> {
    /// Connects to `postgres://…` and migrates the schema. Rollback claims use the pool: a
    /// committed transaction is durable already.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("postflight-coordinator");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let store = Self::new(pool.clone(), pool);
        // Adopts a database whose versions an earlier postflight recorded in
        // `schema_migrations`.
        let legacy: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version)::bigint FROM schema_migrations")
                .fetch_one(&store.pool)
                .await
                .ok()
                .flatten();
        migrations::run(migrations::POSTGRES, &store.pool, legacy).await?;
        Ok(store)
    }
}

impl Engine for Postgres {
    const NOW_MS: &'static str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

    /// A transaction in which claims on `plan` are serialised across every coordinator
    /// sharing this database (a transaction-scoped advisory lock on the plan's name).
    async fn begin_claim(
        claims: &PgPool,
        plan: &str,
    ) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        let mut tx = claims.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(plan)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }
}
