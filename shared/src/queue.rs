//! Redis, the transport that tells workers "look at this export". PostgreSQL stays the record.

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
    .map_err(|_| Error::Unavailable("redis"))
}

async fn ping(conn: &mut ConnectionManager) -> Result<()> {
    let pong: redis::RedisResult<String> =
        tokio::time::timeout(Duration::from_secs(2), redis::cmd("PING").query_async(conn))
            .await
            .map_err(|_| Error::Unavailable("redis"))?;
    pong.map(|_| ()).map_err(|_| Error::Unavailable("redis"))
}

/// The message a worker gets: "look at this export". PostgreSQL holds everything else.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportJob {
    pub export_id: uuid::Uuid,
    /// The API request that created the export, carried into the worker's logs.
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

pub type ExportStorage = apalis_redis::RedisStorage<ExportJob>;

pub async fn storage(redis: &Redis, queue: &str) -> Result<ExportStorage> {
    Ok(apalis_redis::RedisStorage::new(redis.conn().await?).with_config(apalis_config(queue)))
}

/// Pushes a job; a failure here leaves the export QUEUED in PostgreSQL for the reconciler.
pub async fn enqueue(redis: &Redis, queue: &str, job: ExportJob) -> Result<()> {
    use apalis::prelude::TaskSink;
    let mut storage = storage(redis, queue).await?;
    tokio::time::timeout(Duration::from_secs(3), storage.push(job))
        .await
        .map_err(|_| Error::Unavailable("redis"))?
        .map_err(|_| Error::Unavailable("redis"))
}
