//! The schema's migrations, compiled into the binaries. Listed here by hand instead of through
//! sqlx's `migrate!` macro, whose proc-macro crate compiles sqlx's PostgreSQL driver a second
//! time for the host (README, "Time to first green"); a test holds this list to the files in
//! `migrations/`, so a new file that is not listed fails the build's tests.

use std::borrow::Cow;
use std::sync::LazyLock;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

/// (version, description, SQL), in order; the file name is `{version}_{description}.sql`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        20261122000001,
        "init",
        include_str!("../../../migrations/20261122000001_init.sql"),
    ),
    (
        20261123000001,
        "limits",
        include_str!("../../../migrations/20261123000001_limits.sql"),
    ),
    (
        20261124000001,
        "object_writes",
        include_str!("../../../migrations/20261124000001_object_writes.sql"),
    ),
    (
        20261125000001,
        "claim_function",
        include_str!("../../../migrations/20261125000001_claim_function.sql"),
    ),
    (
        20261126000001,
        "bundles",
        include_str!("../../../migrations/20261126000001_bundles.sql"),
    ),
    (
        20261127000001,
        "workers",
        include_str!("../../../migrations/20261127000001_workers.sql"),
    ),
    (
        20261128000001,
        "export_events",
        include_str!("../../../migrations/20261128000001_export_events.sql"),
    ),
    (
        20261129000001,
        "webhooks",
        include_str!("../../../migrations/20261129000001_webhooks.sql"),
    ),
    (
        20261130000001,
        "claim_by_project",
        include_str!("../../../migrations/20261130000001_claim_by_project.sql"),
    ),
    (
        20261203000001,
        "webhook_fairness",
        include_str!("../../../migrations/20261203000001_webhook_fairness.sql"),
    ),
    (
        20261204000001,
        "formats_from_the_registry",
        include_str!("../../../migrations/20261204000001_formats_from_the_registry.sql"),
    ),
    (
        20261204000002,
        "job_ledger",
        include_str!("../../../migrations/20261204000002_job_ledger.sql"),
    ),
    (
        20261205000001,
        "webhook_deliveries_on_the_ledger",
        include_str!("../../../migrations/20261205000001_webhook_deliveries_on_the_ledger.sql"),
    ),
    (
        20261205000002,
        "audit",
        include_str!("../../../migrations/20261205000002_audit.sql"),
    ),
    (
        20261206000001,
        "datasets",
        include_str!("../../../migrations/20261206000001_datasets.sql"),
    ),
];

/// The migrator the API runs at startup (and the test harness on each test's database). Its
/// checksums are the SHA-384 of each file, as `migrate!` computes them, so databases migrated
/// by earlier builds validate.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Owned(description.replace('_', " ")),
                    MigrationType::Simple,
                    AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|(v, d, _)| format!("{v}_{d}.sql"))
            .collect();
        assert_eq!(files, listed);
        for (v, d, sql) in MIGRATIONS {
            let on_disk = std::fs::read_to_string(format!("{dir}/{v}_{d}.sql")).expect("file");
            assert_eq!(&on_disk, sql, "{v}_{d}.sql");
            assert!(
                !sql.trim_start().starts_with("-- no-transaction"),
                "{v}_{d}.sql: no-transaction migrations are not supported by this list"
            );
        }
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
    }
}
