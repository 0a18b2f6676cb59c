//! SQLite: one file, created on first start, in WAL mode so readers never wait for the writer.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::{Engine, SqlStore};
use super::{StoreResult, migrations};

impl SqlStore<Sqlite> {
    /// Opens `sqlite://FILE` (or `sqlite:FILE`), creating and migrating it as needed.
    ///
    /// Rollback claims get one connection of their own with `synchronous=FULL`: a claim must
    /// survive a power loss right after it is taken (the action starts then), which WAL's
    /// `NORMAL` does not promise. Everything else keeps `NORMAL`, which loses nothing on a
    /// process crash.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Checkpoints copy the WAL into the database and fsync it; every 64 MB instead of
            // every 4 MB keeps a burst of results from stalling on them.
            .pragma("wal_autocheckpoint", "16384")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let claims = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.synchronous(SqliteSynchronous::Full))
            .await?;
        let store = Self::new(pool, claims);
        // Adopts a database whose versions an earlier postflight recorded in
        // `schema_migrations`.
        let legacy: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&store.pool)
            .await
            .ok()
            .flatten();
        migrations::run(migrations::SQLITE, &store.pool, legacy).await?;
        Ok(store)
    }
}

impl Engine for Sqlite {
    const NOW_MS: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

    /// A transaction that holds SQLite's write lock from its start, so claims are serialised,
    /// on the fully synchronous connection.
    async fn begin_claim(
        claims: &SqlitePool,
        _plan: &str,
    ) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
        Ok(claims.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims are committed on a fully synchronous connection (durable through a power loss
    /// before the action starts); everything else keeps WAL's `NORMAL`.
    #[tokio::test]
    async fn claims_are_written_fully_synchronously() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqlStore::<Sqlite>::open(&url).await.unwrap();
        let level = |pool: &SqlitePool| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(level(&store.claims).await, 2, "FULL");
        assert_eq!(level(&store.pool).await, 1, "NORMAL");
        let mut claim = Sqlite::begin_claim(&store.claims, "p").await.unwrap();
        let inside: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *claim)
            .await
            .unwrap();
        assert_eq!(
            inside, 2,
            "the claim's transaction runs on the FULL connection"
        );
    }
}
