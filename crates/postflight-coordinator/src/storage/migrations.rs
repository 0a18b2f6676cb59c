//! The schema: SQL files per engine under `migrations/`, applied in order by sqlx's migrator,
//! which records what ran (with a checksum) in `_sqlx_migrations`. Databases created before
//! the migrator (their versions in `schema_migrations`) are adopted: the versions they have are
//! recorded as applied, then the rest runs. No migration may drop data; a test reads every
//! file.

use std::borrow::Cow;

use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use super::{StoreError, StoreResult};

/// One engine's migrations: version, description, SQL.
type Files = &'static [(i64, &'static str, &'static str)];

/// SQLite.
pub(crate) const SQLITE: Files = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "monitors and rollbacks",
        include_str!("../../migrations/sqlite/0002_monitors_and_rollbacks.sql"),
    ),
    (
        3,
        "result batches",
        include_str!("../../migrations/sqlite/0003_result_batches.sql"),
    ),
    (
        4,
        "action kind and round regions",
        include_str!("../../migrations/sqlite/0004_action_kind_and_round_regions.sql"),
    ),
    (
        5,
        "baselines",
        include_str!("../../migrations/sqlite/0005_baselines.sql"),
    ),
    (
        6,
        "stages",
        include_str!("../../migrations/sqlite/0006_stages.sql"),
    ),
    (
        7,
        "feedback",
        include_str!("../../migrations/sqlite/0007_feedback.sql"),
    ),
    (
        8,
        "monitor baselines",
        include_str!("../../migrations/sqlite/0008_monitor_baselines.sql"),
    ),
    (
        9,
        "run owners",
        include_str!("../../migrations/sqlite/0009_run_owners.sql"),
    ),
    (
        10,
        "monitor owners",
        include_str!("../../migrations/sqlite/0010_monitor_owners.sql"),
    ),
    (
        11,
        "relays",
        include_str!("../../migrations/sqlite/0011_relays.sql"),
    ),
];

/// PostgreSQL.
pub(crate) const POSTGRES: Files = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "monitors and rollbacks",
        include_str!("../../migrations/postgres/0002_monitors_and_rollbacks.sql"),
    ),
    (
        3,
        "result batches",
        include_str!("../../migrations/postgres/0003_result_batches.sql"),
    ),
    (
        4,
        "action kind and round regions",
        include_str!("../../migrations/postgres/0004_action_kind_and_round_regions.sql"),
    ),
    (
        5,
        "baselines",
        include_str!("../../migrations/postgres/0005_baselines.sql"),
    ),
    (
        6,
        "stages",
        include_str!("../../migrations/postgres/0006_stages.sql"),
    ),
    (
        7,
        "feedback",
        include_str!("../../migrations/postgres/0007_feedback.sql"),
    ),
    (
        8,
        "monitor baselines",
        include_str!("../../migrations/postgres/0008_monitor_baselines.sql"),
    ),
    (
        9,
        "run owners",
        include_str!("../../migrations/postgres/0009_run_owners.sql"),
    ),
    (
        10,
        "monitor owners",
        include_str!("../../migrations/postgres/0010_monitor_owners.sql"),
    ),
    (
        11,
        "relays",
        include_str!("../../migrations/postgres/0011_relays.sql"),
    ),
];

/// The migrator over `files`.
pub(crate) fn migrator(files: Files) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Brings the database at `pool` to the latest schema of `files`, adopting a database that
/// an earlier version migrated by hand (`legacy` is the highest version it recorded, if any).
pub(crate) async fn run<'a, A>(files: Files, pool: A, legacy: Option<i64>) -> StoreResult<()>
where
    A: sqlx::Acquire<'a> + Clone,
    <A::Connection as std::ops::Deref>::Target: Migrate,
{
    let migrator = migrator(files);
    if let Some(version) = legacy.filter(|v| *v > 0) {
        migrator
            .skip(pool.clone(), Some(version))
            .await
            .map_err(migrate_error)?;
    }
    migrator.run(pool).await.map_err(migrate_error)
}

fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Database(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration must never lose data: renaming a table or adding a column is fine;
    /// dropping a table or a column, or deleting rows, is not.
    #[test]
    fn no_migration_drops_data() {
        for (engine, files) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            for (version, _, sql) in files {
                let code: String = sql
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .to_uppercase();
                for forbidden in ["DROP TABLE", "DROP COLUMN", "DELETE FROM", "TRUNCATE"] {
                    assert!(
                        !code.contains(forbidden),
                        "{engine} migration {version} contains {forbidden}"
                    );
                }
            }
        }
    }

    #[test]
    fn versions_are_consecutive_and_the_same_for_both_engines() {
        let versions = |files: Files| files.iter().map(|(v, _, _)| *v).collect::<Vec<_>>();
        let expected: Vec<i64> = (1..=SQLITE.len() as i64).collect();
        assert_eq!(versions(SQLITE), expected);
        assert_eq!(versions(POSTGRES), expected);
    }
}
