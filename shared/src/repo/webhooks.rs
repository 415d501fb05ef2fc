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

/// Claims due deliveries: each is leased for `lease_secs` (its next attempt moved that far), so
/// a worker that dies mid-delivery leaves it to be tried again then.
pub async fn claim_due(pool: &PgPool, limit: i64, lease_secs: f64) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET attempts = attempts + 1,
             next_attempt_at = now() + make_interval(secs => $2)
         WHERE id IN (SELECT id FROM webhook_deliveries
                      WHERE state = 'PENDING' AND next_attempt_at <= now()
                      ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING {DELIVERY}"
    )))
    .bind(limit)
    .bind(lease_secs)
    .fetch_all(pool)
    .await?)
}

pub async fn delivered(pool: &PgPool, id: Uuid, status: i32) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'DELIVERED', delivered_at = now(), last_status = $2,
             last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(pool)
    .await?;
    Ok(())
}

/// A failed attempt: tried again after `retry_secs`, or DEAD once the event is a day old.
pub async fn failed(
    pool: &PgPool,
    id: Uuid,
    status: Option<i32>,
    error: &str,
    retry_secs: f64,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET last_status = $2, last_error = $3,
             next_attempt_at = now() + make_interval(secs => $4),
             state = CASE WHEN created_at < now() - interval '24 hours' THEN 'DEAD' ELSE 'PENDING' END
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(retry_secs)
    .execute(pool)
    .await?;
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
