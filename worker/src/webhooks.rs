//! Webhook delivery: every worker claims due deliveries from the outbox (jobs of the ledger,
//! kind `webhook`, leased, so a killed worker's are retried), posts each signed event in a task
//! of its own (a slow or dead receiver holds only its own slot, for at most `TIMEOUT`), and
//! records the answer: delivered on 2xx, else retried with backoff until the event is a day old.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wharf_shared::Error;
use wharf_shared::jobs::{Job, JobError, Kind};
use wharf_shared::repo::exports;
use wharf_shared::repo::webhooks::{self, Failure};
use wharf_shared::webhooks::{Event, SendError, TIMEOUT, event_data, send};

use crate::startup::Worker;

/// Deliveries in flight per worker.
const IN_FLIGHT: usize = 32;
/// Endpoints of one project in flight at once: a quarter of a worker's slots, so one
/// project's hanging receivers leave the rest to everyone else (each endpoint has at most
/// one delivery in flight, and one that keeps failing is paused as a whole).
const PER_PROJECT: usize = IN_FLIGHT / 4;

/// Backoff after `attempts` failed tries: 1 s, 2 s, 4 s … capped at an hour.
pub fn backoff_secs(attempts: i32) -> f64 {
    let exp = attempts.clamp(1, 13) - 1;
    f64::from(1u32 << exp).min(3600.0)
}

pub async fn run(worker: Worker, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let free = slots.available_permits() as i64;
        if free == 0 {
            continue;
        }
        // A claimed delivery is retried after the lease if its worker vanished (`WHARF_LEASE`).
        let lease = worker.ctx.lease.max(TIMEOUT + Duration::from_secs(1));
        let claimed = webhooks::claim_due(
            &worker.ctx.pool,
            &worker.ctx.worker_id,
            free,
            PER_PROJECT as i64,
            lease.as_secs_f64(),
        );
        let due = match claimed.await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "webhook deliveries not claimed; next tick");
                continue;
            }
        };
        for d in due {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            let worker = worker.clone();
            tokio::spawn(async move {
                let _permit = permit;
                deliver(&worker, d).await;
            });
        }
    }
}

/// A webhook delivery as a job of the ledger: one attempt posts the signed event and reports
/// the receiver's status code; no answer is worth another attempt, a vanished endpoint or
/// export is not.
pub struct Deliver;

#[async_trait]
impl Job for Deliver {
    type Context = Worker;
    type Claimed = webhooks::Delivery;
    type Slot = ();
    type Done = u16;
    fn kind(&self) -> Kind {
        Kind::Webhook
    }
    async fn run(
        &self,
        worker: &Worker,
        d: &webhooks::Delivery,
        _: &mut (),
    ) -> Result<u16, JobError> {
        attempt(worker, d).await
    }
}

async fn deliver(worker: &Worker, d: webhooks::Delivery) {
    let pool = &worker.ctx.pool;
    let span = tracing::info_span!("webhook", delivery_id = %d.id, event_id = %d.event_id, event = %d.event_type, attempt = d.attempts);
    let outcome =
        tracing::Instrument::instrument(Deliver.run(worker, &d, &mut ()), span.clone()).await;
    let _g = span.enter();
    let recorded = record(pool, &d, outcome).await;
    match recorded {
        Ok(true) => {}
        Ok(false) => tracing::info!("webhook outcome not recorded: the claim's lease lapsed"),
        Err(e) => tracing::warn!(error = %e, "webhook outcome not recorded; the lease retries it"),
    }
}

/// The attempt's outcome on the delivery's record (fenced on its lease): delivered on a 2xx;
/// else failed, to be retried after the backoff unless the failure is for good.
async fn record(
    pool: &sqlx::PgPool,
    d: &webhooks::Delivery,
    outcome: Result<u16, JobError>,
) -> wharf_shared::Result<bool> {
    let (status, error, dead) = match outcome {
        Ok(status) if (200..300).contains(&status) => {
            tracing::info!(status, "webhook delivered");
            return webhooks::delivered(pool, d, i32::from(status)).await;
        }
        Ok(status) => {
            tracing::info!(status, "webhook refused by its receiver; will retry");
            let error = format!("the receiver answered {status}");
            (Some(i32::from(status)), error, false)
        }
        Err(JobError::Retryable(why)) => {
            tracing::info!(error = %why, "webhook not delivered; will retry");
            (None, reason(&why), false)
        }
        Err(JobError::Fatal { message, cause, .. }) => {
            tracing::info!(error = %cause, "webhook not delivered, for good");
            (None, message, true)
        }
    };
    let f = Failure {
        status,
        error: &error,
        retry_secs: backoff_secs(d.attempts),
        dead,
    };
    webhooks::failed(pool, d, &f).await
}

/// What a delivery's record says of an attempt that got no answer.
fn reason(e: &Error) -> String {
    match e {
        Error::Unexpected(why) => why.to_string(),
        e => e.public_message(),
    }
}

fn retry(why: String) -> JobError {
    JobError::Retryable(Error::Unexpected(anyhow::anyhow!(why)))
}

/// One attempt: the status code the receiver answered, or why there was none.
async fn attempt(worker: &Worker, d: &webhooks::Delivery) -> Result<u16, JobError> {
    let pool = &worker.ctx.pool;
    let hook = webhooks::get_any(pool, d.webhook_id)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    let job = exports::get_any(pool, d.job_id)
        .await?
        .ok_or(Error::NotFound("export"))?;
    let event = Event {
        id: format!("evt_{}", d.event_id.simple()),
        kind: &d.event_type,
        created_at: d.created_at,
        data: event_data(&worker.settings, &job),
    };
    send(
        &hook.url,
        worker.settings.webhook_allow_private,
        &hook.secret,
        &event,
    )
    .await
    .map_err(|e| match e {
        SendError::Refused(e) => retry(e.public_message()),
        SendError::Failed(why) => retry(why),
    })
}
