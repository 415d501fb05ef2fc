//! The reconciler: PostgreSQL is the record, Redis only transport. Exports whose lease lapsed
//! (a killed or frozen worker) go back to QUEUED, and QUEUED exports that no worker took within
//! `requeue_after` (Redis flushed or down, a failed push) are pushed again.

use tokio_util::sync::CancellationToken;
use wharf_shared::repo::exports;

use crate::startup::Worker;

pub async fn pass(worker: &Worker) -> wharf_shared::Result<usize> {
    let due = exports::reconcile(&worker.ctx.pool, worker.timing.requeue_after, 500).await?;
    for (id, request_id) in &due {
        tracing::info!(export_id = %id, "re-enqueued by the reconciler");
        worker.enqueue(*id, request_id.clone()).await;
    }
    Ok(due.len())
}

pub async fn run(worker: Worker, stop: CancellationToken) {
    let mut tick = tokio::time::interval(worker.timing.reconcile_every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = pass(&worker).await {
                    tracing::warn!(error = %e, "reconciler pass failed; will retry");
                }
            }
        }
    }
}
