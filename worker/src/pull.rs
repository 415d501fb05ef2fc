//! Where a worker hears of work: Redis (apalis) when `REDIS_URL` is set, else PostgreSQL's
//! `LISTEN/NOTIFY`. Either way a message only wakes a slot; the slot claims the fairest
//! QUEUED export (PostgreSQL is the record) and keeps going until nothing is claimable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use sqlx::postgres::PgListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wharf_shared::queue::{self, JobMessage, Redis};

use crate::startup::Worker;

/// An idle worker on PostgreSQL also looks for work this often without a notification (a
/// notification lost while the listener reconnected, a retry whose backoff ended).
pub const SAFETY_TICK: Duration = Duration::from_secs(1);

/// The apalis worker, restarted if its Redis connection breaks, and beside it a subscriber to
/// the queue's push notifications that fills free slots at once: an idle worker starts a job
/// within a millisecond or two of its push instead of at its next poll. Both share the slots.
pub async fn redis(worker: &Worker, redis: &Redis, name: &str, shutdown: &CancellationToken) {
    let slots = Slots::new(worker.concurrency);
    tokio::join!(
        apalis_loop(worker, redis, name, &slots, shutdown),
        wakeups(worker, redis, name, &slots, shutdown)
    );
}

/// Each push message fills the free slots; a lost subscription is made again (apalis's poll
/// covers the gap).
async fn wakeups(
    worker: &Worker,
    redis: &Redis,
    name: &str,
    slots: &Slots,
    shutdown: &CancellationToken,
) {
    use futures::StreamExt;
    while !shutdown.is_cancelled() {
        match redis.wakeups(name).await {
            Ok(mut messages) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = messages.next() => match m {
                        Some(()) => wake(worker, slots),
                        None => break,
                    },
                }
            },
            Err(e) => tracing::debug!(error = %e, "push notifications not subscribed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The worker's slots, shared by every way it hears of work. `pending` closes the gap between
/// a slot that found nothing claimable and gives its place back, and a wake-up that found every
/// slot busy meanwhile: the wake-up sets it before it looks for a free slot, the slot reads it
/// after it freed its place, so one of the two claims again.
#[derive(Clone)]
struct Slots {
    free: Arc<Semaphore>,
    pending: Arc<AtomicBool>,
}

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            free: Arc::new(Semaphore::new(n)),
            pending: Arc::new(AtomicBool::new(false)),
        }
    }
}

async fn apalis_loop(
    worker: &Worker,
    redis: &Redis,
    name: &str,
    slots: &Slots,
    shutdown: &CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let storage = match queue::storage(redis, name).await {
            Ok(s) => s.poll_with_interval(queue::POLL),
            Err(e) => {
                tracing::warn!(error = %e, "redis not reachable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let apalis_worker = WorkerBuilder::new(format!(
            "{}-{}",
            worker.ctx.worker_id,
            uuid::Uuid::new_v4().simple()
        ))
        .backend(storage)
        .concurrency(worker.concurrency)
        .data(worker.clone())
        .data(slots.clone())
        .build(handle);
        let stop = shutdown.clone();
        let res = apalis_worker
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

/// One apalis message: the ledger job it announces (`job_id`, logged with the request that
/// created it), which means "there is work". A slot that is free starts claiming; when none is, the
/// busy slots claim it as they finish (each drains until nothing is claimable), so the message
/// is done at once: it never holds a slot, nor a claim that finds nothing (on the Redis queue
/// every export's message used to take a slot and spend a claim after the slots had drained
/// the ledger). Every outcome is recorded in PostgreSQL, so apalis never retries it: attempts
/// and retries are Wharf's (see notes/apalis-1.0.md).
async fn handle(
    job: JobMessage,
    worker: Data<Worker>,
    slots: Data<Slots>,
) -> Result<(), AbortError> {
    if worker.draining() {
        // Stopping: hand the job straight to another worker.
        worker.enqueue(job.job_id, job.request_id).await;
        return Ok(());
    }
    tracing::debug!(job_id = %job.job_id, request_id = job.request_id.as_deref().unwrap_or(""), "queue message");
    wake(&worker, &slots);
    Ok(())
}

/// `LISTEN` on the database: each notification (or the safety tick) fills the free slots;
/// each slot claims until nothing is claimable, then frees itself.
pub async fn postgres(worker: &Worker, shutdown: &CancellationToken) {
    let slots = Slots::new(worker.concurrency);
    let mut listener: Option<PgListener> = None;
    while !shutdown.is_cancelled() {
        if listener.is_none() {
            listener = listen(worker).await;
        }
        fill_slots(worker, &slots);
        let heard = async {
            match listener.as_mut() {
                Some(l) => l
                    .recv()
                    .await
                    .map(|n| n.payload().to_string())
                    .map_err(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            heard = heard => {
                if heard.is_err() {
                    tracing::warn!("lost the database's notifications; reconnecting");
                    listener = None;
                } else {
                    slots.pending.store(true, Ordering::SeqCst);
                }
            }
            _ = tokio::time::sleep(SAFETY_TICK) => {}
        }
    }
}

async fn listen(worker: &Worker) -> Option<PgListener> {
    let mut l = match PgListener::connect_with(&worker.ctx.pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for work yet; polling meanwhile");
            return None;
        }
    };
    match l.listen(queue::CHANNEL).await {
        Ok(()) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for work yet; polling meanwhile");
            None
        }
    }
}

/// There is work: every free slot starts claiming, and a slot finishing now claims once more.
fn wake(worker: &Worker, slots: &Slots) {
    slots.pending.store(true, Ordering::SeqCst);
    fill_slots(worker, slots);
}

/// Starts a slot task for every free slot (none while draining). Each claims until nothing is
/// claimable, then gives its place back, and takes it again if a wake-up came meanwhile.
fn fill_slots(worker: &Worker, slots: &Slots) {
    while !worker.draining() {
        let Ok(permit) = slots.free.clone().try_acquire_owned() else {
            return;
        };
        // This slot claims after now: it sees every export a wake-up announced so far.
        slots.pending.store(false, Ordering::SeqCst);
        let (worker, slots, guard) = (worker.clone(), slots.clone(), worker.busy());
        tokio::spawn(async move {
            let _busy = guard;
            let mut permit = permit;
            loop {
                worker.drain_slot().await;
                drop(permit);
                if worker.draining() || !slots.pending.swap(false, Ordering::SeqCst) {
                    return;
                }
                match slots.free.clone().try_acquire_owned() {
                    Ok(p) => permit = p,
                    // Another slot took the place, and claims after the wake-up.
                    Err(_) => return,
                }
            }
        });
    }
}
