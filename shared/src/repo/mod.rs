//! All SQL of Wharf lives under this module. Handlers and workers call these functions.

/// Declares a struct read from a query's row by column name (what `#[derive(sqlx::FromRow)]`
/// would write; by hand so sqlx's proc-macro crate stays out of the build).
macro_rules! pg_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty ),*
        }

        impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for $name {
            fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
                use sqlx::Row;
                Ok($name {
                    $( $field: row.try_get(stringify!($field))? ),*
                })
            }
        }
    };
}

pub mod audit;
pub mod export_query;
pub mod exports;
pub mod imports;
pub mod keys;
pub mod lent;
mod migrations;
pub mod ops;
pub mod projects;
pub mod runs;
pub mod webhooks;
pub mod workflows;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::Settings;
use crate::error::Result;

pub use migrations::MIGRATOR;

/// A pool that fails fast when PostgreSQL is down instead of hanging requests.
/// One direct connection first, so a failure carries its real cause (`connection refused`,
/// `database "x" does not exist`) rather than the pool's "timed out".
pub async fn connect(settings: &Settings) -> Result<PgPool> {
    use sqlx::Connection;
    let url = settings.database_url.expose_secret();
    let probe = tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    probe.close().await.ok();
    Ok(pool_options().connect(url).await?)
}

/// Like `connect` but returns at once; connections are made on first use.
pub fn connect_lazy(settings: &Settings) -> Result<PgPool> {
    Ok(pool_options().connect_lazy(settings.database_url.expose_secret())?)
}

/// Connections run uploads may hold at once. An upload holds its connection for as long as its
/// rows stream in, so uploads share these few (an `IngestGate`) and the pool has room for them
/// on top of what reads, status and creates need: uploads can never take those.
pub const INGEST_CONNECTIONS: u32 = 8;
/// Connections for everything but uploads.
pub const SERVING_CONNECTIONS: u32 = 20;

/// Admits at most `INGEST_CONNECTIONS` uploads to the database at once; the others wait (up
/// to 30 s, then 503) without holding a connection.
#[derive(Clone)]
pub struct IngestGate(std::sync::Arc<tokio::sync::Semaphore>);

impl Default for IngestGate {
    fn default() -> Self {
        IngestGate(std::sync::Arc::new(tokio::sync::Semaphore::new(
            INGEST_CONNECTIONS as usize,
        )))
    }
}

impl IngestGate {
    pub async fn enter(&self) -> crate::error::Result<tokio::sync::OwnedSemaphorePermit> {
        let wait = tokio::time::timeout(Duration::from_secs(30), self.0.clone().acquire_owned());
        match wait.await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(crate::error::Error::Unavailable(
                "the database's capacity for uploads",
            )),
        }
    }
}

fn pool_options() -> PgPoolOptions {
    no_reaper(PgPoolOptions::new())
        .max_connections(SERVING_CONNECTIONS + INGEST_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// sqlx pings a connection (a round trip) before every acquire by default, and again when it
/// is released: three round trips for each statement run on the pool. A small export's
/// worker makes a dozen such statements, and on 2 cores the loopback round trips and their
/// wakeups were a third of the CPU (vmstat: 40 % system time). Like HikariCP's bypass window,
/// only a connection idle for longer than this is tested before use; one that broke within
/// the window fails its statement once (the request answers 503, a worker's step is retried)
/// and is closed when released, where sqlx still pings.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Pools without sqlx's background reaper (idle timeout and max lifetime off). In sqlx 0.9.0
/// `release` makes a connection acquirable before counting it idle, so a concurrent pop can
/// wrap the idle count to `usize::MAX`; the reaper then loops over that many slots without
/// awaiting: one core at 100 % for good, and on a current-thread runtime nothing else runs
/// (seen here: a test hung with its connections idle in transaction; sqlx issue 3645, fixed
/// upstream by pull request 4289 after 0.9.0). Connections are few (a handful per process) and
/// reused; PostgreSQL closes those of a process that goes away.
pub fn no_reaper(options: PgPoolOptions) -> PgPoolOptions {
    options
        .idle_timeout(None)
        .max_lifetime(None)
        .min_connections(0)
}

/// Why a connection failed, in words an operator can act on: `database "x" does not exist`,
/// `password authentication failed for user "y"`, `connection refused`.
/// Where `DATABASE_URL` points, for messages: host (or socket directory), port and database,
/// never the credentials.
pub fn database_address(settings: &Settings) -> String {
    use std::str::FromStr;
    match sqlx::postgres::PgConnectOptions::from_str(settings.database_url.expose_secret()) {
        Ok(o) => format!(
            "{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        ),
        Err(_) => "an unreadable URL".into(),
    }
}

pub fn connect_cause(e: &crate::error::Error) -> String {
    match e {
        crate::error::Error::Database(sqlx::Error::Database(db)) => db.message().to_string(),
        crate::error::Error::Database(sqlx::Error::Io(io)) => io.to_string(),
        crate::error::Error::Database(other) => other.to_string(),
        other => other.to_string(),
    }
}

/// A failure that retrying will not mend: the database does not exist, or the credentials are
/// refused (SQLSTATE classes 3D and 28), or the URL is malformed.
pub fn is_permanent(e: &crate::error::Error) -> bool {
    match e {
        crate::error::Error::Database(sqlx::Error::Database(db)) => db
            .code()
            .is_some_and(|c| c.starts_with("3D") || c.starts_with("28")),
        crate::error::Error::Database(sqlx::Error::Configuration(_)) => true,
        _ => false,
    }
}

/// True once every migration this binary knows has been applied (the API applies them; a
/// worker that starts first waits for this).
pub async fn schema_ready(pool: &PgPool) -> bool {
    let Some(latest) = MIGRATOR.iter().map(|m| m.version).max() else {
        return true;
    };
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1 AND success)",
    )
    .bind(latest)
    .fetch_one(pool)
    .await
    .unwrap_or(false)
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
