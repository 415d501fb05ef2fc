use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wharf_shared::config::Settings;
use wharf_shared::export::{self, ExportContext, Outcome};
use wharf_shared::queue::{self, ExportJob, Redis};
use wharf_shared::repo;
use wharf_shared::store::s3::S3Store;

/// Lease of a claim; heartbeats renew it every `HEARTBEAT`.
pub const LEASE: Duration = Duration::from_secs(30);
pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const PART_SIZE: usize = 8 << 20;

/// Connects (waiting for services that are not up yet) and runs until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(pool) = wait_for_postgres(&settings, &shutdown).await else {
        return Ok(());
    };
    let ctx = context(&settings, pool).await;
    tokio::spawn(crate::janitor::run(
        ctx.clone(),
        crate::janitor::INTERVAL,
        shutdown.clone(),
    ));
    let redis = Redis::new(&settings.redis_url)?;
    run_worker(
        ctx,
        redis,
        &settings.queue,
        settings.worker_concurrency,
        shutdown,
    )
    .await
}

pub async fn context(settings: &Settings, pool: PgPool) -> ExportContext {
    let store = S3Store::new(&settings.s3).await;
    ExportContext {
        pool,
        store: Arc::new(store),
        worker_id: worker_name(),
        export_ttl: settings.export_ttl,
        lease: LEASE,
        heartbeat: HEARTBEAT,
        part_size: PART_SIZE,
    }
}

/// Unique per process start (apalis refuses a name still "active" after a restart).
fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!(
        "wharf-{}-{}-{}",
        host.trim(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Pulls jobs from `queue` until `shutdown`, `concurrency` at a time; restarts the apalis
/// worker if its Redis connection breaks.
pub async fn run_worker(
    ctx: ExportContext,
    redis: Redis,
    queue_name: &str,
    concurrency: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(worker = %ctx.worker_id, concurrency, queue = queue_name, "wharf-worker started");
    while !shutdown.is_cancelled() {
        let storage = match queue::storage(&redis, queue_name).await {
            Ok(s) => s.poll_with_interval(Duration::from_millis(200)),
            Err(e) => {
                tracing::warn!(error = %e, "redis not reachable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let worker = WorkerBuilder::new(format!(
            "{}-{}",
            ctx.worker_id,
            uuid::Uuid::new_v4().simple()
        ))
        .backend(storage)
        .concurrency(concurrency)
        .data(ctx.clone())
        .build(handle);
        let stop = shutdown.clone();
        let res = worker.run_until(async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        });
        if let Err(e) = res.await {
            tracing::warn!(error = %e, "queue worker stopped; restarting");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tracing::info!("wharf-worker stopped");
    Ok(())
}

/// One job. Every outcome is recorded in PostgreSQL, so the job is never retried by apalis:
/// retries and attempts are Wharf's (see notes/apalis-1.0.md).
async fn handle(job: ExportJob, ctx: Data<ExportContext>) -> Result<(), AbortError> {
    let span = tracing::info_span!("job", export_id = %job.export_id, request_id = job.request_id.as_deref().unwrap_or(""));
    let outcome =
        tracing::Instrument::instrument(export::run(&ctx, job.export_id), span.clone()).await;
    let _g = span.enter();
    match outcome {
        Ok(Outcome::Skipped) => {
            tracing::info!("export not claimable (finished, taken or unknown); job dropped")
        }
        Ok(Outcome::Completed { .. } | Outcome::Cancelled | Outcome::Failed { .. }) => {}
        Err(e) => tracing::error!(error = %e, "export job errored"),
    }
    Ok(())
}

/// A worker that starts before PostgreSQL (or before the API migrated it) waits and retries.
async fn wait_for_postgres(settings: &Settings, shutdown: &CancellationToken) -> Option<PgPool> {
    let mut delay = Duration::from_millis(250);
    loop {
        match repo::connect(settings).await {
            Ok(pool) => return Some(pool),
            Err(e) => tracing::warn!(error = %e, "postgres not reachable yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
