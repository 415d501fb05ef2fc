//! Retention: exports past `expiresAt` read EXPIRED and their objects are deleted. Every
//! worker runs it; each step is idempotent, so many processes at once do no harm.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_shared::export::{ExportContext, upload};
use wharf_shared::repo::{exports, imports};

pub const INTERVAL: Duration = Duration::from_secs(30);

/// Writes older than this whose attempt is over are cleaned up.
pub const ORPHAN_AGE: Duration = Duration::from_secs(60);

/// One pass; returns the number of objects deleted. An item that cannot be handled (an
/// object the store will not delete) is logged and skipped: it stays due, so a later pass
/// tries it again, and it never stops the others.
pub async fn sweep(ctx: &ExportContext) -> wharf_shared::Result<usize> {
    if let Err(e) = abort_orphans(ctx, ORPHAN_AGE).await {
        tracing::warn!(error = %e, "orphaned uploads not all aborted; retried next pass");
    }
    let deleted = expire_files(ctx).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "expired uploads not all deleted; retried next pass");
        0
    });
    match wharf_shared::repo::audit::expire(&ctx.pool, ctx.audit_ttl, 10_000).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "audit events past WHARF_AUDIT_TTL removed"),
        Err(e) => tracing::warn!(error = %e, "audit events not expired; retried next pass"),
    }
    let swept = tokio::task::spawn_blocking(wharf_shared::export::import::sweep_scratch)
        .await
        .unwrap_or(0);
    if swept > 0 {
        tracing::info!(swept, "scratch directories of dead imports removed");
    }
    let expired = expire_exports(ctx).await?;
    Ok(deleted + expired + remove_datasets(ctx).await?)
}

/// Datasets that ended FAILED, CANCELLED or EXPIRED: every object under their prefix removed
/// (whoever ended one removes its files at once; this pass covers a process that could not).
async fn remove_datasets(ctx: &ExportContext) -> wharf_shared::Result<usize> {
    let mut removed = 0;
    for id in exports::ended_datasets(&ctx.pool, 100).await? {
        removed += wharf_shared::export::dataset::remove_files(&ctx.pool, &*ctx.store, id).await;
    }
    Ok(removed)
}

/// Completed exports past their retention: each object deleted, then forgotten; one the store
/// would not delete is skipped this pass (and looked past) and retried the next.
async fn expire_exports(ctx: &ExportContext) -> wharf_shared::Result<usize> {
    let (mut deleted, mut skipped) = (0usize, 0i64);
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

/// Uploaded files past their 24 hours: the object, then the record (a file that will not
/// delete stays recorded and due).
async fn expire_files(ctx: &ExportContext) -> wharf_shared::Result<usize> {
    let mut deleted = 0;
    for f in imports::expired_files(&ctx.pool, 100).await? {
        match ctx.store.delete(&f.object_key).await {
            Ok(()) => {
                imports::delete_file(&ctx.pool, f.id).await?;
                deleted += 1;
            }
            Err(e) => {
                tracing::warn!(file_id = %f.id, error = %e, "expired upload not deleted; retried next pass");
            }
        }
    }
    Ok(deleted)
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

/// Cleans up after writes left OPEN by attempts that ended without completing them (a killed
/// worker): the store's partial state (an S3 multipart upload, a temporary file) and any object
/// the attempt stored. Tracked in PostgreSQL: S3 servers differ in ListMultipartUploads support.
pub async fn abort_orphans(ctx: &ExportContext, age: Duration) -> wharf_shared::Result<usize> {
    let orphans = exports::orphan_writes(&ctx.pool, age).await?;
    let mut aborted = 0;
    for w in &orphans {
        let discarded = if w.superseded {
            upload::abandon_superseded(
                &ctx.pool,
                &*ctx.store,
                w.job_id,
                w.attempt,
                &w.object_key,
                w.write_token.as_deref(),
            )
            .await
        } else {
            upload::discard(
                &ctx.pool,
                &*ctx.store,
                w.job_id,
                w.attempt,
                &w.object_key,
                w.write_token.as_deref(),
            )
            .await
        };
        match discarded {
            Ok(()) => {
                tracing::info!(export_id = %w.export_id, attempt = w.attempt, "orphaned write cleaned up");
                aborted += 1;
            }
            Err(e) => {
                tracing::warn!(export_id = %w.export_id, attempt = w.attempt, error = %e, "orphaned write not cleaned up; retried next pass")
            }
        }
    }
    Ok(aborted)
}
