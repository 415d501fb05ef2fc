use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wharf_shared::config::Settings;
use wharf_shared::export::{self, ExportContext, Outcome};
use wharf_shared::queue::{self, JobQueue, Redis};
use wharf_shared::repo;

/// Heartbeats renew the lease (`WHARF_LEASE`, 30 s) and record progress every second, so a
/// worker must miss 30 of them (a stall, a partition, a kill) before another takes over.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Everything one worker process runs.
#[derive(Clone)]
pub struct Worker {
    pub ctx: ExportContext,
    pub transport: Transport,
    pub concurrency: usize,
    pub timing: Timing,
    /// `WHARF_METRICS_LISTEN`, and the address bound there once running.
    pub metrics: MetricsEndpoint,
    /// What webhook events need: the public URL and signing keys of their links,
    /// `WHARF_WEBHOOK_ALLOW_PRIVATE`.
    pub settings: Arc<Settings>,
    inflight: Arc<AtomicUsize>,
    /// Set when the process was told to stop: new jobs are passed on, not started.
    draining: CancellationToken,
}

/// How jobs reach this worker: the queue where "there is work" is said (pushes after a
/// release, the reconciler's re-pushes), and the apalis consumer when that queue is Redis.
#[derive(Clone)]
pub struct Transport {
    pub queue: Arc<dyn JobQueue>,
    pub redis: Option<(Redis, String)>,
}

/// The worker's clocks.
#[derive(Clone, Copy)]
pub struct Timing {
    /// `WHARF_SHUTDOWN_GRACE`: running jobs may finish this long after a stop.
    pub grace: Duration,
    /// How often the reconciler looks for lost jobs, and how long a QUEUED job may go
    /// unclaimed before it is pushed again.
    pub reconcile_every: Duration,
    pub requeue_after: Duration,
    pub janitor_every: Duration,
}

#[derive(Clone)]
pub struct MetricsEndpoint {
    pub listen: Option<String>,
    pub addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
}

/// Connects (waiting for services that are not up yet) and runs until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(url) = &settings.redis_url
        && let Some(why) = queue::redis_refusal(url).await
    {
        anyhow::bail!("Redis refuses REDIS_URL: {why}");
    }
    let Some(pool) = wait_for_postgres(&settings, &shutdown).await else {
        return Ok(());
    };
    let worker = Worker::new(&settings, pool).await?;
    worker.run(shutdown).await
}

pub async fn context(settings: &Settings, pool: PgPool) -> ExportContext {
    ExportContext {
        pool,
        store: wharf_shared::store::from_settings(settings).await,
        worker_id: worker_name(),
        export_ttl: settings.export_ttl,
        lease: settings.lease,
        heartbeat: HEARTBEAT,
        project_cap: settings.project_concurrency,
        stop: CancellationToken::new(),
        metrics: Arc::new(wharf_shared::metrics::Metrics::new()),
        scratch: wharf_shared::export::scratch::ScratchBudget::new(settings.import_scratch),
        audit_ttl: settings.audit_ttl,
        replica: wharf_shared::export::Replica::from_settings(settings).unwrap_or_else(|e| {
            tracing::error!(error = %e, "WHARF_READ_DATABASE_URL ignored: every read goes to the primary");
            None
        }),
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
            ctx: context(settings, pool.clone()).await,
            transport: Transport {
                queue: queue::from_settings(settings, &pool)?,
                redis: match &settings.redis_url {
                    Some(url) => Some((Redis::new(url)?, settings.queue.clone())),
                    None => None,
                },
            },
            concurrency: settings.worker_concurrency,
            timing: Timing {
                grace: settings.shutdown_grace,
                reconcile_every: Duration::from_secs(2),
                requeue_after: settings.requeue_after,
                janitor_every: crate::janitor::INTERVAL,
            },
            metrics: MetricsEndpoint {
                listen: settings.metrics_listen.clone(),
                addr: Arc::default(),
            },
            settings: Arc::new(settings.clone()),
            inflight: Arc::new(AtomicUsize::new(0)),
            draining: CancellationToken::new(),
        })
    }

    /// Pulls jobs until `shutdown`; then lets running exports finish for `grace`, hands the
    /// rest back (QUEUED and pushed again, so another worker resumes them at once), and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let loops = CancellationToken::new();
        self.start_loops(&loops).await?;
        tracing::info!(worker = %self.ctx.worker_id, concurrency = self.concurrency, queue = self.transport.queue.kind(), "wharf-worker started");
        // Drain first, then stop the queue worker: apalis's shutdown waits for its running
        // tasks, so it only begins once ours have finished or been released.
        let queue_stop = CancellationToken::new();
        let drain = tokio::spawn(self.clone().drain_on(shutdown, queue_stop.clone()));
        match self.transport.redis.clone() {
            Some((redis, name)) => crate::pull::redis(&self, &redis, &name, &queue_stop).await,
            None => crate::pull::postgres(&self, &queue_stop).await,
        }
        loops.cancel();
        drain.await.ok();
        tracing::info!("wharf-worker stopped");
        Ok(())
    }

    /// The loops beside the queue's: the janitor, the reconciler, `/metrics` (when asked for),
    /// the worker's registration and webhook deliveries; all stop with `loops`.
    async fn start_loops(&self, loops: &CancellationToken) -> anyhow::Result<()> {
        tokio::spawn(crate::janitor::run(
            self.ctx.clone(),
            self.timing.janitor_every,
            loops.clone(),
        ));
        tokio::spawn(crate::reconciler::run(self.clone(), loops.clone()));
        if let Some(addr) = &self.metrics.listen {
            let bound = crate::ops::serve_metrics(self.clone(), addr, loops.clone())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot listen on WHARF_METRICS_LISTEN={addr}: {e}")
                })?;
            self.metrics.addr.set(bound).ok();
            tracing::info!(%bound, "serving /metrics and /healthz");
        }
        tokio::spawn(crate::ops::register(self.clone(), loops.clone()));
        tokio::spawn(crate::webhooks::run(self.clone(), loops.clone()));
        Ok(())
    }

    /// Once `shutdown` fires: running exports get the grace period, then are released; then the
    /// queue's worker is stopped.
    async fn drain_on(self, shutdown: CancellationToken, queue_stop: CancellationToken) {
        shutdown.cancelled().await;
        self.draining.cancel();
        tracing::info!(
            running = self.running(),
            grace_ms = self.timing.grace.as_millis() as u64,
            "draining"
        );
        if !self.drained(self.timing.grace).await {
            tracing::info!(
                running = self.running(),
                "grace period over; releasing running exports"
            );
            self.ctx.stop.cancel();
            self.drained(Duration::from_secs(10)).await;
        }
        queue_stop.cancel();
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

    /// Exports this worker is running right now.
    pub fn running(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Pushes an export to the queue again (after a release, or for the reconciler).
    pub async fn enqueue(&self, export_id: uuid::Uuid, request_id: Option<String>) {
        wharf_shared::queue::wake_for(
            self.transport.queue.as_ref(),
            &self.ctx.pool,
            export_id,
            request_id,
        )
        .await;
    }
}

/// Decrements the in-flight count however the export task ends.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Worker {
    pub(crate) fn draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Counts a slot as busy until the guard drops.
    pub(crate) fn busy(&self) -> InFlight {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.inflight.clone())
    }

    /// One slot's work: claim the fairest export and run it, again and again, until nothing
    /// is claimable. A wake-up message says "there is work", not which; so a project's backlog
    /// is drained by the slots it holds even when messages were spent on skips. Every outcome
    /// is recorded in PostgreSQL.
    /// Claims and runs jobs until none is claimable (or the process is stopping). Which job
    /// runs is the fair claim's choice, not the message's that woke the slot.
    pub(crate) async fn drain_slot(&self) {
        let span = tracing::info_span!("slot");
        // The slot's own connection for reading rows, kept while it drains (export::ReadConn).
        let mut read_conn = export::ReadConn::default();
        loop {
            let outcome = tracing::Instrument::instrument(
                export::run(&self.ctx, &mut read_conn),
                span.clone(),
            )
            .await;
            let _g = span.enter();
            match outcome {
                Ok(Outcome::Skipped) => {
                    tracing::debug!("nothing claimable now (none queued below its project's cap)");
                    return;
                }
                Ok(Outcome::Planned { jobs }) => {
                    // Every part announced, so idle slots of every worker take one each.
                    for job in jobs {
                        self.enqueue(job, None).await;
                    }
                    if self.draining() {
                        return;
                    }
                }
                Ok(Outcome::Released { job, after }) if after.is_zero() => {
                    // Stopping: the job goes straight back to the queue for another worker.
                    self.enqueue(job, None).await;
                    return;
                }
                Ok(_) if self.draining() => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "export job errored; the reconciler will retry it");
                    return;
                }
            }
        }
    }
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
                let at = repo::database_address(settings);
                tracing::warn!(%cause, %at, "cannot reach DATABASE_URL ({at}) yet; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
