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

/// Removes an endpoint: no new deliveries, and its pending ones are dropped.
pub async fn delete(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(project_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND state = 'PENDING'")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

pg_row! {
    #[derive(Debug, Clone)]
    pub struct Delivery {
        pub id: Uuid,
        pub event_id: Uuid,
        pub webhook_id: Uuid,
        pub event_type: String,
        pub job_id: Uuid,
        pub state: String,
        pub attempts: i32,
        pub last_status: Option<i32>,
        pub last_error: Option<String>,
        pub next_attempt_at: DateTime<Utc>,
        pub created_at: DateTime<Utc>,
        pub delivered_at: Option<DateTime<Utc>>,
    }
}

const DELIVERY: &str = "id, event_id, webhook_id, event_type, job_id, state, attempts, last_status,
    last_error, next_attempt_at, created_at, delivered_at";

pub async fn deliveries(pool: &PgPool, webhook_id: Uuid, limit: i64) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY} FROM webhook_deliveries WHERE webhook_id = $1
         ORDER BY created_at DESC LIMIT $2"
    )))
    .bind(webhook_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Endpoints failing in a row before the endpoint as a whole is paused.
pub const PAUSE_AFTER_FAILURES: i32 = 3;

/// Claims due deliveries, fairly: at most one per endpoint, and only for endpoints with none in
/// flight anywhere (one receiver at a time per endpoint) and not paused after repeated failures;
/// at most `per_project` endpoints of one project in flight at once; the endpoints of every
/// project taken in turn (each project's first, then each one's second …). A claimed delivery
/// and its endpoint are leased for `lease_secs`, so a worker that dies mid-delivery leaves both
/// to be tried again then. Claims take turns (a transaction-level advisory lock), so the counts
/// they read are exact across workers.
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    per_project: i64,
    lease_secs: f64,
) -> Result<Vec<Delivery>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('wharf_webhook_claim'))")
        .execute(&mut *tx)
        .await?;
    let claimed = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH busy AS (
             SELECT project_id, count(*) AS n FROM webhooks
             WHERE deleted_at IS NULL AND busy_until > now() GROUP BY project_id
         ),
         ready AS (
             SELECT w.id, w.project_id, due.at,
                    row_number() OVER (PARTITION BY w.project_id ORDER BY due.at) AS turn
             FROM webhooks w
             CROSS JOIN LATERAL (
                 SELECT min(d.next_attempt_at) AS at FROM webhook_deliveries d
                 WHERE d.webhook_id = w.id AND d.state = 'PENDING' AND d.next_attempt_at <= now()
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
             SELECT DISTINCT ON (d.webhook_id) d.id FROM webhook_deliveries d
             WHERE d.webhook_id IN (SELECT id FROM leased)
               AND d.state = 'PENDING' AND d.next_attempt_at <= now()
             ORDER BY d.webhook_id, d.next_attempt_at
         )
         UPDATE webhook_deliveries SET attempts = attempts + 1,
             next_attempt_at = now() + make_interval(secs => $3)
         WHERE id IN (SELECT id FROM picked)
         RETURNING {DELIVERY}"
    )))
    .bind(limit)
    .bind(per_project)
    .bind(lease_secs)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

pub async fn delivered(pool: &PgPool, d: &Delivery, status: i32) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'DELIVERED', delivered_at = now(), last_status = $2,
             last_error = NULL WHERE id = $1",
    )
    .bind(d.id)
    .bind(status)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhooks SET busy_until = NULL, failures = 0, paused_until = NULL WHERE id = $1",
    )
    .bind(d.webhook_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A failed attempt: tried again after `retry_secs`, or DEAD once the event is a day old. The
/// endpoint is free again; after `PAUSE_AFTER_FAILURES` failures in a row it is paused as a
/// whole, for 2^(failures - 3) s up to 10 min (its other queued events wait with it).
pub async fn failed(
    pool: &PgPool,
    d: &Delivery,
    status: Option<i32>,
    error: &str,
    retry_secs: f64,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET last_status = $2, last_error = $3,
             next_attempt_at = now() + make_interval(secs => $4),
             state = CASE WHEN created_at < now() - interval '24 hours' THEN 'DEAD' ELSE 'PENDING' END
         WHERE id = $1",
    )
    .bind(d.id)
    .bind(status)
    .bind(error)
    .bind(retry_secs)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhooks SET busy_until = NULL, failures = failures + 1,
             paused_until = CASE WHEN failures + 1 >= $2
                 THEN now() + make_interval(secs => least(power(2, failures + 1 - $2), 600))
                 END
         WHERE id = $1",
    )
    .bind(d.webhook_id)
    .bind(PAUSE_AFTER_FAILURES)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
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
