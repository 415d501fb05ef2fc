//! Retention: exports past `expiresAt` read EXPIRED and their objects are deleted. Every
//! worker runs it; each step is idempotent, so many processes at once do no harm.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_shared::domain::states::UploadState;
use wharf_shared::export::ExportContext;
use wharf_shared::repo::exports;

pub const INTERVAL: Duration = Duration::from_secs(30);

/// Multipart uploads older than this whose attempt is over are aborted.
pub const ORPHAN_AGE: Duration = Duration::from_secs(60);

/// One pass; returns the number of objects deleted. An item that cannot be handled (an
/// object the store will not delete) is logged and skipped: it stays due, so a later pass
/// tries it again, and it never stops the others.
pub async fn sweep(ctx: &ExportContext) -> wharf_shared::Result<usize> {
    if let Err(e) = abort_orphans(ctx, ORPHAN_AGE).await {
        tracing::warn!(error = %e, "orphaned uploads not all aborted; retried next pass");
    }
    let mut deleted = 0;
    let mut skipped = 0i64;
    loop {
        // Items skipped in this pass are still due: look past them.
        let due = exports::expire_due(&ctx.pool, 100 + skipped).await?;
        let fresh: Vec<_> = due.into_iter().skip(skipped as usize).collect();
        if fresh.is_empty() {
            return Ok(deleted);
        }
        let batch = fresh.len();
        for (id, key) in fresh {
            match ctx.store.delete(&key).await {
                Ok(()) => {
                    exports::forget_object(&ctx.pool, id).await?;
                    tracing::info!(export_id = %id, "expired export deleted");
                    deleted += 1;
                }
                Err(e) => {
                    tracing::warn!(export_id = %id, error = %e, "expired export's object not deleted; retried next pass");
                    skipped += 1;
                }
            }
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
    let mut aborted = 0;
    for (upload_id, key) in &orphans {
        let multipart = !upload_id.starts_with(wharf_shared::export::upload::PUT_PREFIX);
        let abort = if multipart {
            ctx.store.abort_multipart(key, upload_id).await
        } else {
            Ok(())
        };
        // The attempt is over without completing: whatever object it wrote is not the export's.
        match abort.and(ctx.store.delete(key).await) {
            Ok(()) => {
                exports::finish_upload(&ctx.pool, upload_id, UploadState::Aborted).await?;
                tracing::info!(upload_id, "orphaned multipart upload aborted");
                aborted += 1;
            }
            Err(e) => {
                tracing::warn!(upload_id, error = %e, "orphaned upload not aborted; retried next pass")
            }
        }
    }
    Ok(aborted)
}
