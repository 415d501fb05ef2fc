//! Retention: exports past `expiresAt` read EXPIRED and their objects are deleted. Every
//! worker runs it; each step is idempotent, so many processes at once do no harm.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_shared::export::ExportContext;
use wharf_shared::repo::exports;

pub const INTERVAL: Duration = Duration::from_secs(30);

/// Multipart uploads older than this whose attempt is over are aborted.
pub const ORPHAN_AGE: Duration = Duration::from_secs(60);

/// One pass; returns the number of objects deleted.
pub async fn sweep(ctx: &ExportContext) -> wharf_shared::Result<usize> {
    abort_orphans(ctx, ORPHAN_AGE).await?;
    let mut deleted = 0;
    loop {
        let due = exports::expire_due(&ctx.pool, 100).await?;
        if due.is_empty() {
            return Ok(deleted);
        }
        let batch = due.len();
        for (id, key) in due {
            ctx.store.delete(&key).await?;
            exports::forget_object(&ctx.pool, id).await?;
            tracing::info!(export_id = %id, "expired export deleted");
            deleted += 1;
        }
        if batch < 100 {
            return Ok(deleted);
        }
    }
}

pub async fn run(ctx: ExportContext, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = sweep(&ctx).await {
                    tracing::warn!(error = %e, "janitor pass failed; will retry");
                }
            }
        }
    }
}

/// Aborts multipart uploads left OPEN by attempts that ended without finishing them (a killed
/// worker). Tracked in PostgreSQL: S3 servers differ in ListMultipartUploads support.
pub async fn abort_orphans(ctx: &ExportContext, age: Duration) -> wharf_shared::Result<usize> {
    let orphans = exports::orphan_uploads(&ctx.pool, age).await?;
    for (upload_id, key) in &orphans {
        if !upload_id.starts_with(wharf_shared::export::upload::PUT_PREFIX) {
            ctx.store.abort_multipart(key, upload_id).await?;
        }
        // The attempt is over without completing: whatever object it wrote is not the export's.
        ctx.store.delete(key).await?;
        exports::finish_upload(&ctx.pool, upload_id, "ABORTED").await?;
        tracing::info!(upload_id, "orphaned multipart upload aborted");
    }
    Ok(orphans.len())
}
