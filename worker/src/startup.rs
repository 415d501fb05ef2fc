use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wharf_shared::config::Settings;
use wharf_shared::queue::Redis;
use wharf_shared::repo;

/// Connects (waiting for services that are not up yet) and runs until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(pool) = wait_for_postgres(&settings, &shutdown).await else {
        return Ok(());
    };
    let redis = Redis::new(&settings.redis_url)?;
    tracing::info!(
        concurrency = settings.worker_concurrency,
        "wharf-worker started"
    );
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let pg = repo::ping(&pool).await.is_ok();
                let rd = redis.ping().await.is_ok();
                tracing::debug!(postgres = pg, redis = rd, "worker heartbeat");
            }
        }
    }
    tracing::info!("wharf-worker stopped");
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
