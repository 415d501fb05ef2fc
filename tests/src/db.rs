//! A database of its own for each test: created from `DATABASE_URL`'s server, migrated, and
//! dropped when the test ends (kept, and named on stderr, when it fails, to be looked at).
//!
//! What `#[sqlx::test]` did, without sqlx's proc-macro crate (which compiles sqlx's PostgreSQL
//! driver a second time for the host). The drop is `WITH (FORCE)`: connections that tasks of the
//! test still hold (an app, a worker, a listener) cannot make it fail and leave the database
//! behind.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection, PgPool};

/// Test databases are named `wharf_test_<32 hex>`.
pub const PREFIX: &str = "wharf_test_";

pub struct TestDb {
    name: String,
    server: PgConnectOptions,
    pub pool: PgPool,
}

fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a PostgreSQL URL: {e}"))
        .disable_statement_logging()
}

impl TestDb {
    /// A fresh, migrated database and a pool of at most 5 connections to it.
    pub async fn new() -> TestDb {
        Self::migrated(&wharf_shared::repo::MIGRATOR).await
    }

    /// A database as the version before `version`'s migration left it: every migration older
    /// than `version` applied, none after (upgrade tests write what that version wrote, then
    /// run this version's migrations).
    pub async fn before(version: i64) -> TestDb {
        let older: Vec<sqlx::migrate::Migration> = wharf_shared::repo::MIGRATOR
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect();
        Self::migrated(&sqlx::migrate::Migrator::with_migrations(older)).await
    }

    async fn migrated(migrator: &sqlx::migrate::Migrator) -> TestDb {
        let server = server_options();
        let name = format!("{PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&server)
            .await
            .unwrap_or_else(|e| panic!("connect to DATABASE_URL: {e}"));
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        conn.close().await.ok();
        // No reaper (see repo::no_reaper): its idle-count race hung a test's runtime.
        let pool = wharf_shared::repo::no_reaper(PgPoolOptions::new())
            .max_connections(5)
            .connect_lazy_with(server.clone().database(&name));
        migrator
            .run(&pool)
            .await
            .unwrap_or_else(|e| panic!("migrate test database {name}: {e}"));
        TestDb { name, server, pool }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection options for this database (for pools a test builds itself).
    pub fn options(&self) -> PgConnectOptions {
        self.server.clone().database(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: its database {} is kept", self.name);
            return;
        }
        let name = self.name.clone();
        let server = self.server.clone();
        let dropped = on_own_runtime(move || async move {
            let mut conn = PgConnection::connect_with(&server)
                .await
                .map_err(|e| e.to_string())?;
            conn.execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await
            .map_err(|e| e.to_string())?;
            conn.close().await.ok();
            Ok(())
        });
        if let Err(e) = dropped {
            eprintln!("test database {} not dropped: {e}", self.name);
        }
    }
}

/// Runs the future `make` builds on a thread of its own with a small runtime, and waits for it:
/// for clean-ups in `Drop`, which runs inside a test's runtime that cannot block on itself.
pub fn on_own_runtime<F, Fut>(make: F) -> Result<(), String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(make())
    })
    .join()
    .unwrap_or_else(|_| Err("the clean-up panicked".into()))
}
