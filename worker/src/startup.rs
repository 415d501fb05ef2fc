use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wharf_shared::config::Settings;
use wharf_shared::export::{self, ExportContext, Outcome};
use wharf_shared::queue::{self, ExportJob, Redis};
use wharf_shared::repo;
use wharf_shared::store::s3::S3Store;

/// Heartbeats renew the lease (`WHARF_LEASE`, 30 s) and record progress every second, so a
/// worker must miss 30 of them (a stall, a partition, a kill) before another takes over.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const PART_SIZE: usize = 8 << 20;

/// Everything one worker process runs.
#[derive(Clone)]
pub struct Worker {
    pub ctx: ExportContext,
    pub redis: Redis,
    pub queue: String,
    pub concurrency: usize,
    pub grace: Duration,
    /// How often the reconciler looks for lost jobs, and how long a QUEUED export may go
    /// unclaimed before it is pushed again.
    pub reconcile_every: Duration,
    pub requeue_after: Duration,
    pub janitor_every: Duration,
    inflight: Arc<AtomicUsize>,
    /// Set when the process was told to stop: new jobs are passed on, not started.
    draining: CancellationToken,
}

/// Connects (waiting for services that are not up yet) and runs until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(pool) = wait_for_postgres(&settings, &shutdown).await else {
        return Ok(());
    };
    let worker = Worker::new(&settings, pool).await?;
    worker.run(shutdown).await
}

pub async fn context(settings: &Settings, pool: PgPool) -> ExportContext {
    let store = S3Store::new(&settings.s3).await;
    ExportContext {
        pool,
        store: Arc::new(store),
        worker_id: worker_name(),
        export_ttl: settings.export_ttl,
        lease: settings.lease,
        heartbeat: HEARTBEAT,
        part_size: PART_SIZE,
        project_cap: settings.project_concurrency,
        stop: CancellationToken::new(),
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

impl Worker {
    pub async fn new(settings: &Settings, pool: PgPool) -> anyhow::Result<Worker> {
        Ok(Worker {
            ctx: context(settings, pool).await,
            redis: Redis::new(&settings.redis_url)?,
            queue: settings.queue.clone(),
            concurrency: settings.worker_concurrency,
            grace: settings.shutdown_grace,
            reconcile_every: Duration::from_secs(2),
            requeue_after: settings.requeue_after,
            janitor_every: crate::janitor::INTERVAL,
            inflight: Arc::new(AtomicUsize::new(0)),
            draining: CancellationToken::new(),
        })
    }

    /// Pulls jobs until `shutdown`; then lets running exports finish for `grace`, hands the
    /// rest back (QUEUED and pushed again, so another worker resumes them at once), and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let loops = CancellationToken::new();
        tokio::spawn(crate::janitor::run(
            self.ctx.clone(),
            self.janitor_every,
            loops.clone(),
        ));
        tokio::spawn(crate::reconciler::run(self.clone(), loops.clone()));
        tracing::info!(worker = %self.ctx.worker_id, concurrency = self.concurrency, queue = %self.queue, "wharf-worker started");
        // Drain first, then stop the queue worker: apalis's shutdown waits for its running
        // tasks, so it only begins once ours have finished or been released.
        let queue_stop = CancellationToken::new();
        let drain = {
            let (me, signal, queue_stop) = (self.clone(), shutdown.clone(), queue_stop.clone());
            tokio::spawn(async move {
                signal.cancelled().await;
                me.draining.cancel();
                tracing::info!(
                    running = me.running(),
                    grace_ms = me.grace.as_millis() as u64,
                    "draining"
                );
                if !me.drained(me.grace).await {
                    tracing::info!(
                        running = me.running(),
                        "grace period over; releasing running exports"
                    );
                    me.ctx.stop.cancel();
                    me.drained(Duration::from_secs(10)).await;
                }
                queue_stop.cancel();
            })
        };
        self.pull(&queue_stop).await;
        loops.cancel();
        drain.await.ok();
        tracing::info!("wharf-worker stopped");
        Ok(())
    }

    async fn drained(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.inflight.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// The apalis worker, restarted if its Redis connection breaks.
    async fn pull(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let storage = match queue::storage(&self.redis, &self.queue).await {
                Ok(s) => s.poll_with_interval(queue::POLL),
                Err(e) => {
                    tracing::warn!(error = %e, "redis not reachable; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let worker = WorkerBuilder::new(format!(
                "{}-{}",
                self.ctx.worker_id,
                uuid::Uuid::new_v4().simple()
            ))
            .backend(storage)
            .concurrency(self.concurrency)
            .data(self.clone())
            .build(handle);
            let stop = shutdown.clone();
            let res = worker
                .run_until(async move {
                    stop.cancelled().await;
                    Ok::<(), std::io::Error>(())
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "queue worker stopped; restarting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Exports this worker is running right now.
    pub fn running(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Pushes an export to the queue again (after a release, or for the reconciler).
    pub async fn enqueue(&self, export_id: uuid::Uuid, request_id: Option<String>) {
        if let Err(e) = queue::enqueue(
            &self.redis,
            &self.queue,
            ExportJob {
                export_id,
                request_id,
            },
        )
        .await
        {
            tracing::warn!(export_id = %export_id, error = %e, "enqueue failed; the reconciler retries");
            repo::exports::mark_unqueued(&self.ctx.pool, export_id)
                .await
                .ok();
        }
    }
}

/// Decrements the in-flight count however the export task ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One job. Every outcome is recorded in PostgreSQL, so apalis never retries it: attempts and
/// retries are Wharf's (see notes/apalis-1.0.md). The export runs in a task of its own, so it
/// survives apalis dropping this future at shutdown and is released, not abandoned.
async fn handle(job: ExportJob, worker: Data<Worker>) -> Result<(), AbortError> {
    let worker = (*worker).clone();
    if worker.draining.is_cancelled() {
        // Stopping: hand the job straight to another worker.
        worker.enqueue(job.export_id, job.request_id).await;
        return Ok(());
    }
    worker.inflight.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight(worker.inflight.clone());
    let task = tokio::spawn(async move {
        let _guard = guard;
        // The message says "there is work" (it names the export that sent it); the claim picks
        // the fairest export. A slot keeps claiming after each export, so a project's backlog
        // is drained by the slots it holds even when messages were spent on skips.
        let span = tracing::info_span!("job", message_for = %job.export_id, request_id = job.request_id.as_deref().unwrap_or(""));
        loop {
            let outcome =
                tracing::Instrument::instrument(export::run(&worker.ctx), span.clone()).await;
            let _g = span.enter();
            match outcome {
                Ok(Outcome::Skipped) => {
                    tracing::debug!("nothing claimable now (none queued below its project's cap)");
                    break;
                }
                Ok(Outcome::Released { after }) if after.is_zero() => {
                    worker.enqueue(job.export_id, job.request_id.clone()).await;
                    break;
                }
                Ok(_) if worker.draining.is_cancelled() => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "export job errored; the reconciler will retry it");
                    break;
                }
            }
        }
    });
    task.await.map_err(AbortError::new)
}

/// A worker that starts before PostgreSQL (or before the API migrated it) waits and retries,
/// saying why at every try.
async fn wait_for_postgres(settings: &Settings, shutdown: &CancellationToken) -> Option<PgPool> {
    let mut delay = Duration::from_millis(250);
    loop {
        match repo::connect(settings).await {
            Ok(pool) if repo::schema_ready(&pool).await => return Some(pool),
            Ok(_) => tracing::warn!("waiting for the API to apply the database migrations"),
            Err(e) => {
                let cause = repo::connect_cause(&e);
                tracing::warn!(%cause, "cannot reach DATABASE_URL yet; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
