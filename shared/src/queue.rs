//! The queue: how the API tells workers "there is work". PostgreSQL stays the record (the
//! QUEUED rows themselves; a claim picks the fairest one), so a queue only has to wake a
//! worker. Two transports: Redis (apalis) when `REDIS_URL` is set, else PostgreSQL's own
//! `LISTEN/NOTIFY` (the embedded default). The reconciler pushes again whatever a transport
//! lost.

use std::time::Duration;

use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// A handle that connects on first use, so a process starts even while Redis is down.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: Arc<OnceCell<ConnectionManager>>,
}

impl Redis {
    pub fn new(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            Error::Unexpected(anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))
        })?;
        Ok(Redis {
            client,
            conn: Arc::new(OnceCell::new()),
        })
    }

    pub async fn conn(&self) -> Result<ConnectionManager> {
        self.conn
            .get_or_try_init(|| connect(self.client.clone()))
            .await
            .cloned()
    }

    pub async fn ping(&self) -> Result<()> {
        ping(&mut self.conn().await?).await
    }

    /// A message each time a job is pushed to `queue` (`RedisQueue::push` publishes on the
    /// queue's wake channel). Ends when the connection drops.
    pub async fn wakeups(&self, queue: &str) -> Result<futures::stream::BoxStream<'static, ()>> {
        use futures::StreamExt;
        let unavailable = |_| Error::Unavailable("redis");
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub
            .subscribe(wake_channel(queue))
            .await
            .map_err(unavailable)?;
        Ok(pubsub.into_on_message().map(|_| ()).boxed())
    }
}

/// Checked at start: a Redis that answers but refuses what `REDIS_URL` asks of it (a database
/// index out of range, a wrong password) is a setting to fix, named at once with Redis's own
/// words; one that does not answer may come up later (readiness says so meanwhile), so it is
/// not an error here.
pub async fn redis_refusal(url: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let conn = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    );
    match conn.await {
        Ok(Err(e)) if !is_unreachable(&e) => Some(e.to_string()),
        _ => None,
    }
}

/// Redis did not answer (down, unreachable, dropped), as opposed to answered with a refusal.
fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped()
}

/// A Redis connection that reconnects by itself and answers within bounded time.
async fn connect(client: redis::Client) -> Result<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1);
    tokio::time::timeout(
        Duration::from_secs(3),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| Error::Unavailable("redis"))?
    .map_err(|e| {
        tracing::warn!(error = %e, "cannot connect to REDIS_URL");
        Error::Unavailable("redis")
    })
}

async fn ping(conn: &mut ConnectionManager) -> Result<()> {
    let pong: redis::RedisResult<String> =
        tokio::time::timeout(Duration::from_secs(2), redis::cmd("PING").query_async(conn))
            .await
            .map_err(|_| Error::Unavailable("redis"))?;
    pong.map(|_| ()).map_err(|_| Error::Unavailable("redis"))
}

/// The message a worker gets: a job of the ledger (`jobs.id`) is due. PostgreSQL holds the
/// job; which job a woken slot runs is the fair claim's choice.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    /// `exportId` in messages pushed by the version before the job ledger.
    #[serde(alias = "exportId")]
    pub job_id: uuid::Uuid,
    /// The API request that created the job, carried into the worker's logs.
    pub request_id: Option<String>,
}

/// apalis-redis settings, explicit rather than its defaults (see notes/apalis-1.0.md): a
/// short heartbeat so orphans are rescued in seconds, not five minutes.
pub fn apalis_config(queue: &str) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(queue)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(3)
        .idempotency_ttl(Some(Duration::from_secs(3600)))
        // With the 50 ms poll of the worker: 400 messages a second per worker, so a burst of one
        // project's exports (each beyond its cap is skipped at once) cannot hold another
        // project's export for long. Small enough that one worker does not hoard the queue.
        .batch_size(20)
}

/// How often an idle worker asks Redis for jobs.
pub const POLL: Duration = Duration::from_millis(50);

pub type JobStorage = apalis_redis::RedisStorage<JobMessage>;

pub async fn storage(redis: &Redis, queue: &str) -> Result<JobStorage> {
    Ok(apalis_redis::RedisStorage::new(redis.conn().await?).with_config(apalis_config(queue)))
}

/// Pushes a job; a failure here leaves the export QUEUED in PostgreSQL for the reconciler.
async fn enqueue(redis: &Redis, queue: &str, job: JobMessage) -> Result<()> {
    use apalis::prelude::TaskSink;
    let mut storage = storage(redis, queue).await?;
    tokio::time::timeout(Duration::from_secs(3), storage.push(job))
        .await
        .map_err(|_| Error::Unavailable("redis"))?
        .map_err(|_| Error::Unavailable("redis"))
}

/// The Redis pub/sub channel a queue's pushes are announced on.
pub fn wake_channel(queue: &str) -> String {
    format!("{queue}:wake")
}

/// The channel workers `LISTEN` on (one per database, so installations never share it).
pub const CHANNEL: &str = "wharf_exports";

/// Saying "there is work" to the workers.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Wakes a worker for `job`; a failure leaves the export QUEUED for the reconciler.
    async fn push(&self, job: JobMessage) -> Result<()>;
    /// Reachability, for readiness probes.
    async fn ping(&self) -> Result<()>;
    /// `redis` or `postgres`, for readiness and logs.
    fn kind(&self) -> &'static str;
}

/// Wakes a worker for a job already recorded (an export, bundle or import). If the queue cannot
/// take it, the job is marked unqueued and the reconciler pushes it later: the record is the
/// truth, the push only a wake-up. The one place a job is enqueued (API creates, a worker's
/// release, the reconciler).
pub async fn wake_for(
    queue: &dyn JobQueue,
    pool: &sqlx::PgPool,
    job_id: uuid::Uuid,
    request_id: Option<String>,
) {
    let job = JobMessage { job_id, request_id };
    if let Err(e) = queue.push(job).await {
        tracing::warn!(%job_id, error = %e, "enqueue failed; left for the reconciler");
        crate::repo::exports::mark_unqueued(pool, job_id).await.ok();
    }
}

/// Redis via apalis (the scaled profile).
#[derive(Clone)]
pub struct RedisQueue {
    pub redis: Redis,
    pub name: String,
}

#[async_trait::async_trait]
impl JobQueue for RedisQueue {
    async fn push(&self, job: JobMessage) -> Result<()> {
        let id = job.job_id;
        enqueue(&self.redis, &self.name, job).await?;
        // The fast path: idle workers hear of the job at once instead of at their next poll
        // (apalis's own push notification never fires: it files every job as scheduled). A
        // lost wake-up costs only latency; the job is in the queue.
        if let Ok(mut conn) = self.redis.conn().await {
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(wake_channel(&self.name))
                .arg(id.to_string())
                .query_async(&mut conn)
                .await;
            if let Err(e) = published {
                tracing::debug!(error = %e, "wake-up not published; workers poll");
            }
        }
        Ok(())
    }
    async fn ping(&self) -> Result<()> {
        self.redis.ping().await
    }
    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// PostgreSQL `NOTIFY` (the embedded default): workers `LISTEN` and claim at once.
#[derive(Clone)]
pub struct PgQueue {
    pub pool: sqlx::PgPool,
}

#[async_trait::async_trait]
impl JobQueue for PgQueue {
    async fn push(&self, job: JobMessage) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(job.job_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
    async fn ping(&self) -> Result<()> {
        crate::repo::ping(&self.pool).await
    }
    fn kind(&self) -> &'static str {
        "postgres"
    }
}

/// The queue the settings name: Redis when `REDIS_URL` is set, else PostgreSQL.
pub fn from_settings(
    settings: &crate::config::Settings,
    pool: &sqlx::PgPool,
) -> Result<std::sync::Arc<dyn JobQueue>> {
    Ok(match &settings.redis_url {
        Some(url) => std::sync::Arc::new(RedisQueue {
            redis: Redis::new(url)?,
            name: settings.queue.clone(),
        }),
        None => std::sync::Arc::new(PgQueue { pool: pool.clone() }),
    })
}
