//! Webhook endpoints and their deliveries (the outbox the export trigger fills).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Page, paginate};
use crate::domain::ids::new_id;
use crate::error::Result;

pg_row! {
    #[derive(Debug, Clone)]
    pub struct Webhook {
        pub id: Uuid,
        pub project_id: Uuid,
        pub url: String,
        pub events: Vec<String>,
        pub secret: String,
        pub created_at: DateTime<Utc>,
    }
}

const HOOK: &str = "id, project_id, url, events, secret, created_at";

/// Endpoints per project at most.
pub const MAX_WEBHOOKS: i64 = 20;

pub async fn create(
    pool: &PgPool,
    project_id: Uuid,
    url: &str,
    events: &[String],
    secret: &str,
) -> Result<Option<Webhook>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('webhooks/' || $1::text, 0))")
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhooks WHERE project_id = $1 AND deleted_at IS NULL",
    )
    .bind(project_id)
    .fetch_one(&mut *tx)
    .await?;
    if n >= MAX_WEBHOOKS {
        return Ok(None);
    }
    let hook = sqlx::query_as::<_, Webhook>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhooks (id, project_id, url, events, secret) VALUES ($1, $2, $3, $4, $5)
         RETURNING {HOOK}"
    )))
    .bind(new_id())
    .bind(project_id)
    .bind(url)
    .bind(events)
    .bind(secret)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(hook))
}

pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    page: Page,
) -> Result<(Vec<Webhook>, Option<Uuid>)> {
    let rows: Vec<Webhook> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {HOOK} FROM webhooks WHERE project_id = $1 AND deleted_at IS NULL
           AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(project_id)
    .bind(page.before)
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(paginate(rows, page, |w| w.id))
}

pub async fn get(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<Webhook>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {HOOK} FROM webhooks WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL"
    )))
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?)
}

/// Removes an endpoint: no new deliveries, and its pending ones are dropped (their jobs with
/// them).
pub async fn delete(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(project_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM jobs WHERE id IN (
             SELECT id FROM webhook_deliveries WHERE webhook_id = $1 AND state = 'PENDING')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

pg_row! {
    /// One event for one endpoint: the domain record (`webhook_deliveries`) with its job's
    /// attempts, due time and lease (`jobs`, kind `webhook`, the same id).
    #[derive(Debug, Clone)]
    pub struct Delivery {
        pub id: Uuid,
        pub event_id: Uuid,
        pub webhook_id: Uuid,
        pub event_type: String,
        /// The export (or import) the event is about.
        pub job_id: Uuid,
        pub state: String,
        pub attempts: i32,
        pub last_status: Option<i32>,
        pub last_error: Option<String>,
        pub next_attempt_at: Option<DateTime<Utc>>,
        pub created_at: DateTime<Utc>,
        pub delivered_at: Option<DateTime<Utc>>,
        /// The claim's lease: every outcome is fenced on it.
        pub lease_token: Option<Uuid>,
    }
}

const DELIVERY: &str = "d.id, d.event_id, d.webhook_id, d.event_type, d.job_id, d.state,
    j.attempts, d.last_status, d.last_error, j.due_at AS next_attempt_at, d.created_at,
    d.delivered_at, j.lease_token";

pub async fn deliveries(pool: &PgPool, webhook_id: Uuid, limit: i64) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY} FROM webhook_deliveries d JOIN jobs j ON j.id = d.id
         WHERE d.webhook_id = $1 ORDER BY d.created_at DESC LIMIT $2"
    )))
    .bind(webhook_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Endpoints failing in a row before the endpoint as a whole is paused.
pub const PAUSE_AFTER_FAILURES: i32 = 3;

/// `claim_due`'s statement: endpoints with a due delivery, free and not paused (`ready`, each
/// project's numbered in turn), within the project's share (`chosen`), made busy (`leased`),
/// each one's earliest due delivery (`picked`) claimed in the ledger (`j`).
static CLAIM_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH busy AS (
         SELECT project_id, count(*) AS n FROM webhooks
         WHERE deleted_at IS NULL AND busy_until > now() GROUP BY project_id
     ),
     ready AS (
         SELECT w.id, w.project_id, due.at,
                row_number() OVER (PARTITION BY w.project_id ORDER BY due.at) AS turn
         FROM webhooks w
         CROSS JOIN LATERAL (
             SELECT min(q.due_at) AS at FROM webhook_deliveries p JOIN jobs q ON q.id = p.id
             WHERE p.webhook_id = w.id AND p.state = 'PENDING'
               AND q.status = 'QUEUED' AND q.due_at <= now()
         ) due
         WHERE w.deleted_at IS NULL AND due.at IS NOT NULL
           AND (w.busy_until IS NULL OR w.busy_until <= now())
           AND (w.paused_until IS NULL OR w.paused_until <= now())
     ),
     chosen AS (
         SELECT r.id FROM ready r LEFT JOIN busy b USING (project_id)
         WHERE r.turn + coalesce(b.n, 0) <= $2
         ORDER BY r.turn, r.at LIMIT $1
     ),
     leased AS (
         UPDATE webhooks SET busy_until = now() + make_interval(secs => $3)
         WHERE id IN (SELECT id FROM chosen) RETURNING id
     ),
     picked AS (
         SELECT DISTINCT ON (p.webhook_id) p.id FROM webhook_deliveries p
         JOIN jobs q ON q.id = p.id
         WHERE p.webhook_id IN (SELECT id FROM leased)
           AND p.state = 'PENDING' AND q.status = 'QUEUED' AND q.due_at <= now()
         ORDER BY p.webhook_id, q.due_at
     ),
     j AS (
         UPDATE jobs SET status = 'RUNNING', attempts = attempts + 1,
             lease_token = gen_random_uuid(),
             lease_expires_at = now() + make_interval(secs => $3),
             worker_id = $4, updated_at = now(),
             -- due again at once if the lease lapses
             due_at = now()
         WHERE id IN (SELECT id FROM picked) AND status = 'QUEUED'
         RETURNING id, attempts, due_at, lease_token
     )
     SELECT {DELIVERY} FROM webhook_deliveries d JOIN j ON j.id = d.id"
    )
});

/// Claims due deliveries, fairly: at most one per endpoint, and only for endpoints with none in
/// flight anywhere (one receiver at a time per endpoint) and not paused after repeated failures;
/// at most `per_project` endpoints of one project in flight at once; the endpoints of every
/// project taken in turn (each project's first, then each one's second …). A claimed delivery's
/// job is RUNNING under a lease token of its own for `lease_secs`, and its endpoint busy as
/// long, so a worker that dies mid-delivery leaves both to be tried again then (the
/// reconciler's lapsed-lease pass, as for every kind). Claims take turns (a transaction-level
/// advisory lock), so the counts they read are exact across workers.
pub async fn claim_due(
    pool: &PgPool,
    worker_id: &str,
    limit: i64,
    per_project: i64,
    lease_secs: f64,
) -> Result<Vec<Delivery>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('wharf_webhook_claim'))")
        .execute(&mut *tx)
        .await?;
    let claimed = sqlx::query_as(sqlx::AssertSqlSafe(CLAIM_DUE.as_str()))
        .bind(limit)
        .bind(per_project)
        .bind(lease_secs)
        .bind(worker_id)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// The receiver took it (fenced on the claim: a lapsed lease records nothing, and the
/// delivery is made again, at least once).
pub async fn delivered(pool: &PgPool, d: &Delivery, status: i32) -> Result<bool> {
    let done = sqlx::query(
        "WITH job AS (
             UPDATE jobs SET status = 'SUCCEEDED', lease_token = NULL, lease_expires_at = NULL,
                 due_at = NULL, updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING' RETURNING id
         ), delivery AS (
             UPDATE webhook_deliveries SET state = 'DELIVERED', delivered_at = now(),
                 last_status = $3, last_error = NULL
             WHERE id IN (SELECT id FROM job) RETURNING webhook_id
         )
         UPDATE webhooks SET busy_until = NULL, failures = 0, paused_until = NULL
         WHERE id IN (SELECT webhook_id FROM delivery)",
    )
    .bind(d.id)
    .bind(d.lease_token)
    .bind(status)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How an attempt that was not taken is recorded.
pub struct Failure<'a> {
    /// What the receiver answered, if it answered.
    pub status: Option<i32>,
    pub error: &'a str,
    /// Tried again after this, unless `dead`.
    pub retry_secs: f64,
    /// Never worth another attempt (the event's export is gone).
    pub dead: bool,
}

/// A failed attempt (fenced on the claim): tried again after `retry_secs`, or DEAD (its job
/// FAILED) once the event is a day old or the failure is final. The endpoint is free again;
/// after `PAUSE_AFTER_FAILURES` failures in a row it is paused as a whole, for
/// 2^(failures - 3) s up to 10 min (its other queued events wait with it).
pub async fn failed(pool: &PgPool, d: &Delivery, f: &Failure<'_>) -> Result<bool> {
    let done = sqlx::query(
        "WITH job AS (
             UPDATE jobs SET lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                 updated_at = now(), due_at = now() + make_interval(secs => $5),
                 status = CASE WHEN $6 OR attempts >= max_attempts
                     OR created_at < now() - interval '24 hours' THEN 'FAILED' ELSE 'QUEUED' END
             WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING' RETURNING id, status
         ), delivery AS (
             UPDATE webhook_deliveries dd SET last_status = $3, last_error = $4,
                 state = CASE WHEN job.status = 'FAILED' THEN 'DEAD' ELSE 'PENDING' END
             FROM job WHERE dd.id = job.id RETURNING dd.webhook_id
         )
         UPDATE webhooks SET busy_until = NULL, failures = failures + 1,
             paused_until = CASE WHEN failures + 1 >= $7
                 THEN now() + make_interval(secs => least(power(2, failures + 1 - $7), 600))
                 END
         WHERE id IN (SELECT webhook_id FROM delivery)",
    )
    .bind(d.id)
    .bind(d.lease_token)
    .bind(f.status)
    .bind(f.error)
    .bind(f.retry_secs)
    .bind(f.dead)
    .bind(PAUSE_AFTER_FAILURES)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a retry found.
pub enum Retried {
    /// QUEUED again, due now, with a day of attempts of its own (and the endpoint unpaused).
    Queued(Box<Delivery>),
    /// Being made right now: nothing to do.
    InFlight,
    NotFound,
}

/// Sends a delivery of `webhook_id` again (delivered, dead or waiting alike: receivers dedupe
/// by the event's id).
pub async fn retry(pool: &PgPool, webhook_id: Uuid, delivery_id: Uuid) -> Result<Retried> {
    let done = sqlx::query(
        "WITH d AS (
             SELECT id FROM webhook_deliveries WHERE id = $2 AND webhook_id = $1
         ), job AS (
             UPDATE jobs SET status = 'QUEUED', due_at = now(), lease_token = NULL,
                 lease_expires_at = NULL, worker_id = NULL, updated_at = now(),
                 -- a day of attempts from now: the DEAD rule counts from created_at
                 created_at = now(), max_attempts = greatest(max_attempts, attempts + 1)
             WHERE id IN (SELECT id FROM d) AND status <> 'RUNNING' RETURNING id
         ), delivery AS (
             UPDATE webhook_deliveries SET state = 'PENDING'
             WHERE id IN (SELECT id FROM job) RETURNING webhook_id
         )
         UPDATE webhooks SET paused_until = NULL, failures = 0
         WHERE id IN (SELECT webhook_id FROM delivery)",
    )
    .bind(webhook_id)
    .bind(delivery_id)
    .execute(pool)
    .await?;
    let found: Option<Delivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY} FROM webhook_deliveries d JOIN jobs j ON j.id = d.id
         WHERE d.id = $1 AND d.webhook_id = $2"
    )))
    .bind(delivery_id)
    .bind(webhook_id)
    .fetch_optional(pool)
    .await?;
    Ok(match found {
        None => Retried::NotFound,
        Some(d) if done.rows_affected() == 1 => Retried::Queued(Box::new(d)),
        Some(_) => Retried::InFlight,
    })
}

/// An endpoint of any project (workers delivering), unless removed.
pub async fn get_any(pool: &PgPool, id: Uuid) -> Result<Option<Webhook>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {HOOK} FROM webhooks WHERE id = $1 AND deleted_at IS NULL"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}
