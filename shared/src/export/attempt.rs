//! How an attempt ends when it does not complete (released for a retry with backoff, cancelled,
//! or FAILED with a stable code), and the heartbeat that keeps its lease and shows its progress.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ExportContext, FIRST_BEAT, Outcome, Progress};
use crate::error::{Error, Result};
use crate::jobs::{self, JobError};
use crate::repo::exports::{self, Claim, ExportRecord};

/// How a failed attempt ends: released (the worker is stopping, or a transient failure with
/// attempts left), cancelled (the claim was lost), or FAILED with its code.
pub(super) async fn settle_error(
    ctx: &ExportContext,
    claim: &Claim,
    rec: &ExportRecord,
    e: Error,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    match e {
        _ if ctx.stop.is_cancelled() => {
            exports::release(&ctx.pool, claim, Duration::ZERO).await?;
            tracing::info!("worker stopping: job released to another worker");
            Ok(Outcome::Released {
                job: claim.export_id,
                after: Duration::ZERO,
            })
        }
        _ if cancel.is_cancelled() => {
            tracing::info!("job stopped: cancelled or claim lost");
            Ok(Outcome::Cancelled)
        }
        e => match JobError::from(e) {
            JobError::Retryable(e) if exports::has_attempts_left(claim, rec.max_attempts) => {
                let after = backoff(claim.attempt);
                tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "attempt failed; will retry");
                exports::release(&ctx.pool, claim, after).await?;
                Ok(Outcome::Released {
                    job: claim.export_id,
                    after,
                })
            }
            JobError::Retryable(e) => {
                let (code, message) = jobs::failure(&e);
                tracing::warn!(code = %code, error = %e, "job failed: no attempts left");
                exports::fail(&ctx.pool, claim, code, &message).await?;
                Ok(Outcome::Failed { code })
            }
            JobError::Fatal {
                code,
                message,
                cause,
            } => {
                tracing::warn!(code = %code, error = %cause, "job failed");
                exports::fail(&ctx.pool, claim, code, &message).await?;
                Ok(Outcome::Failed { code })
            }
        },
    }
}

/// Exponential backoff with ±25 % jitter: 1 s, 2 s, 4 s … capped at 30 s.
fn backoff(attempt: i32) -> Duration {
    use rand::Rng;
    let base = 1000u64 << attempt.clamp(1, 6).saturating_sub(1);
    let ms = base.min(30_000) as f64 * rand::rng().random_range(0.75..1.25);
    Duration::from_millis(ms as u64)
}

pub(super) async fn heartbeat(
    ctx: ExportContext,
    claim: Claim,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + FIRST_BEAT.min(ctx.heartbeat),
        ctx.heartbeat,
    );
    loop {
        tick.tick().await;
        let beat = exports::Beat {
            rows: progress.rows.load(Ordering::Relaxed) as i64,
            bytes: progress.bytes.load(Ordering::Relaxed) as i64,
            total: progress.total.get().copied(),
        };
        match exports::heartbeat(&ctx.pool, &claim, &beat, ctx.lease).await {
            Ok(true) => {}
            Ok(false) => {
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
        }
    }
}
