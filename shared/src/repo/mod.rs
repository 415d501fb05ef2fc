//! All SQL of Wharf lives under this module. Handlers and workers call these functions.

pub mod export_query;
pub mod exports;
pub mod keys;
pub mod projects;
pub mod runs;
pub mod workflows;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::Settings;
use crate::error::Result;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool that fails fast when PostgreSQL is down instead of hanging requests.
pub async fn connect(settings: &Settings) -> Result<PgPool> {
    Ok(pool_options()
        .connect(settings.database_url.expose_secret())
        .await?)
}

/// Like `connect` but returns at once; connections are made on first use.
pub fn connect_lazy(settings: &Settings) -> Result<PgPool> {
    Ok(pool_options().connect_lazy(settings.database_url.expose_secret())?)
}

/// Connections for run uploads, apart from `pool`'s (same server and credentials): an upload
/// holds its connection for as long as its rows stream in, so uploads get a few of their own
/// and wait for one rather than take what reads and status need.
pub fn ingest_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(INGEST_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with((*pool.connect_options()).clone())
}

pub const INGEST_CONNECTIONS: u32 = 8;

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(3))
}

pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| crate::error::Error::Unexpected(e.into()))
}

pub async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Keyset pagination: ids are UUIDv7, so newest-first is id-descending.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub before: Option<uuid::Uuid>,
    pub limit: i64,
}

/// Splits a fetched `limit + 1` rows into the page and the next cursor.
pub fn paginate<T>(
    mut rows: Vec<T>,
    page: Page,
    id: impl Fn(&T) -> uuid::Uuid,
) -> (Vec<T>, Option<uuid::Uuid>) {
    let limit = usize::try_from(page.limit).unwrap_or(0);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(id);
        (rows, next)
    } else {
        (rows, None)
    }
}
