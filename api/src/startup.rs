//! Builds the whole API from `Settings`; tests call the same code with port 0.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::error::QueryPayloadError;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpServer, web};
use anyhow::Context;
use sqlx::PgPool;
use wharf_shared::config::Settings;
use wharf_shared::{Error, repo};

use crate::error::ApiError;
use crate::limits::{AuthFailures, IngestSlots, KeyLimiter};
use crate::routes;
use crate::state::AppState;

pub use crate::json::MAX_JSON_BYTES;

pub struct Application {
    port: u16,
    server: Server,
    audit: crate::app::audit::AuditLog,
}

impl Application {
    /// Connects to PostgreSQL (retrying for a while: it may still be starting), applies
    /// pending migrations, and binds `WHARF_LISTEN`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if let Some(url) = &settings.redis_url
            && let Some(why) = wharf_shared::queue::redis_refusal(url).await
        {
            anyhow::bail!("Redis refuses REDIS_URL: {why}");
        }
        let pool = connect_with_retry(&settings).await?;
        let listener = TcpListener::bind(&settings.listen)
            .with_context(|| format!("cannot listen on WHARF_LISTEN={}", settings.listen))?;
        Self::build_with(settings, pool, listener).await
    }

    /// For tests and embedders: a ready pool and a bound listener.
    pub async fn build_with(
        settings: Settings,
        pool: PgPool,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        repo::migrate(&pool).await.context("applying migrations")?;
        let store = wharf_shared::store::from_settings(&settings).await;
        if let Err(e) = store.ensure_bucket().await {
            // Not fatal: /readyz reports the store until it is reachable.
            tracing::warn!(store = %settings.store, error = %e, "the object store is not ready yet");
        }
        let state = app_state(settings, pool, store)?;
        let audit = state.audit.clone();
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(crate::request_id::middleware))
                .wrap(from_fn(http_metrics))
                .app_data(web::Data::new(state.clone()))
                .app_data(web::JsonConfig::default().limit(MAX_JSON_BYTES))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .configure(|cfg| {
                    routes::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                        cfg,
                    ))
                })
        })
        .shutdown_timeout(30)
        .listen(listener)?
        .run();
        tracing::info!(port, "wharf-api listening");
        Ok(Application {
            port,
            server,
            audit,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until stopped (SIGTERM, SIGINT: in-flight requests get `shutdown_timeout`), then
    /// writes the audit events still buffered.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if tokio::time::timeout(Duration::from_secs(10), self.audit.flush())
            .await
            .is_err()
        {
            tracing::error!("audit events still buffered after 10 s at stop; not all written");
        }
        served
    }
}

/// Connects, naming the cause of every failure at once; gives up at once when retrying cannot
/// help (no such database, credentials refused), else after about a minute (PostgreSQL may
/// still be starting).
async fn connect_with_retry(settings: &Settings) -> anyhow::Result<PgPool> {
    let mut delay = Duration::from_millis(250);
    for attempt in 1.. {
        match repo::connect(settings).await {
            Ok(pool) => return Ok(pool),
            Err(e) if attempt < 20 && !repo::is_permanent(&e) => {
                let cause = repo::connect_cause(&e);
                let at = repo::database_address(settings);
                tracing::warn!(attempt, %cause, %at, "cannot reach DATABASE_URL ({at}) yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot connect to DATABASE_URL ({}): {}",
                    repo::database_address(settings),
                    repo::connect_cause(&e)
                ));
            }
        }
    }
    unreachable!("the retry loop returns")
}

/// What every request shares: the pool, store and queue, the caches that follow PostgreSQL's
/// notifications, the per-project slots and the limiters (their sweeper started here).
fn app_state(
    settings: Settings,
    pool: PgPool,
    store: Arc<dyn wharf_shared::store::ObjectStore>,
) -> anyhow::Result<AppState> {
    let limiter = KeyLimiter::new(settings.rate_limit);
    let auth_failures = AuthFailures::new(settings.auth_failures_per_minute);
    tokio::spawn(shrink_now_and_then(limiter.clone(), auth_failures.clone()));
    let waiters = crate::waiters::Waiters::new();
    tokio::spawn(waiters.clone().listen(pool.clone()));
    let keys = wharf_shared::auth::KeyCache::new(settings.key_cache_ttl);
    tokio::spawn(keys.clone().listen(pool.clone()));
    Ok(AppState {
        audit: crate::app::audit::AuditLog::start(pool.clone()),
        keys,
        queue: wharf_shared::queue::from_settings(&settings, &pool)?,
        ingest_slots: IngestSlots::new(settings.project_ingests),
        read_slots: IngestSlots::named(settings.project_reads, "data reads", "WHARF_PROJECT_READS"),
        long_polls: IngestSlots::named(MAX_LONG_POLLS, "long polls", "at most 500 per project"),
        auth_failures,
        page_keys: crate::compat::kadoa::PageKeys::default(),
        metrics: Arc::new(wharf_shared::metrics::Metrics::new()),
        waiters,
        settings: Arc::new(settings),
        pool,
        ingest_gate: repo::IngestGate::default(),
        store,
        limiter,
    })
}

/// Drops the limiters' full buckets every minute (memory bounded by active keys and by the
/// addresses failing now).
async fn shrink_now_and_then(limiter: KeyLimiter, failures: AuthFailures) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        limiter.shrink();
        failures.shrink();
    }
}

/// Long polls (`?wait=`) one project may hold open at once in an API process: each holds a
/// socket and a waiter, so one key cannot take the process's descriptors.
pub const MAX_LONG_POLLS: usize = 500;

/// Counts every request by its route pattern (never the raw path) and status, and its latency.
async fn http_metrics(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let res = next.call(req).await;
    if let Some(m) = metrics {
        let (route, status) = match &res {
            Ok(r) => (r.request().match_pattern(), r.status().as_u16()),
            Err(e) => (None, e.as_response_error().status_code().as_u16()),
        };
        m.http(
            route.as_deref().unwrap_or("unmatched"),
            status,
            started.elapsed().as_secs_f64(),
        );
    }
    res
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError(Error::invalid(format!("invalid query string: {err}"))).into()
}
