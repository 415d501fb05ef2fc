//! What operators see: queue figures (metrics, autoscalers) and the ops page's tables, each one
//! query over indexed columns; and the live-workers register.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::states::FailureCode;
use crate::error::Result;

#[derive(Debug, Clone, Default)]
pub struct QueueFigures {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_seconds: f64,
}

/// Exports queued and running, and the age of the oldest queued (the partial index of active
/// exports answers it).
pub async fn queue_figures(pool: &PgPool) -> Result<QueueFigures> {
    let (queued, running, oldest): (i64, i64, Option<f64>) = sqlx::query_as(concat!(
        "SELECT count(*) FILTER (WHERE status = ",
        crate::sql_status!(Queued),
        "), count(*) FILTER (WHERE status = ",
        crate::sql_status!(InProgress),
        "), extract(epoch FROM now() - min(created_at) FILTER (WHERE status = ",
        crate::sql_status!(Queued),
        "))::float8
         FROM exports WHERE status IN (",
        crate::sql_status!(Queued),
        ", ",
        crate::sql_status!(InProgress),
        ")"
    ))
    .fetch_one(pool)
    .await?;
    Ok(QueueFigures {
        queued,
        running,
        oldest_queued_seconds: oldest.unwrap_or(0.0).max(0.0),
    })
}

pg_row! {
    #[derive(Debug, Clone)]
    pub struct ProjectQueue {
        pub slug: String,
        pub queued: i64,
        pub running: i64,
        pub oldest_queued_seconds: Option<f64>,
    }
}

pub async fn queue_by_project(pool: &PgPool) -> Result<Vec<ProjectQueue>> {
    Ok(sqlx::query_as(concat!(
        "SELECT p.slug,
             count(*) FILTER (WHERE e.status = ",
        crate::sql_status!(Queued),
        ") AS queued,
             count(*) FILTER (WHERE e.status = ",
        crate::sql_status!(InProgress),
        ") AS running,
             extract(epoch FROM now() - min(e.created_at) FILTER (WHERE e.status = ",
        crate::sql_status!(Queued),
        "))::float8 AS oldest_queued_seconds
         FROM exports e JOIN projects p ON p.id = e.project_id
         WHERE e.status IN (",
        crate::sql_status!(Queued),
        ", ",
        crate::sql_status!(InProgress),
        ")
         GROUP BY p.slug ORDER BY queued DESC, p.slug LIMIT 100"
    ))
    .fetch_all(pool)
    .await?)
}

pg_row! {
    #[derive(Debug, Clone)]
    pub struct RunningExport {
        pub id: Uuid,
        pub slug: String,
        pub format: String,
        pub scope: String,
        pub rows_written: i64,
        pub rows_total: Option<i64>,
        pub started_at: Option<DateTime<Utc>>,
        pub worker_id: Option<String>,
        pub attempts: i32,
    }
}

pub async fn running(pool: &PgPool) -> Result<Vec<RunningExport>> {
    Ok(sqlx::query_as(concat!(
        "SELECT e.id, p.slug, e.format, e.scope, e.rows_written, e.rows_total, e.started_at,
             j.worker_id, j.attempts
         FROM exports e JOIN jobs j ON j.id = e.id JOIN projects p ON p.id = e.project_id
         WHERE e.status = ",
        crate::sql_status!(InProgress),
        " ORDER BY e.started_at LIMIT 100"
    ))
    .fetch_all(pool)
    .await?)
}

pg_row! {
    #[derive(Debug, Clone)]
    pub struct Failure {
        pub id: Uuid,
        pub slug: String,
        pub format: String,
        pub error_code: Option<FailureCode>,
        pub error_message: Option<String>,
        pub completed_at: Option<DateTime<Utc>>,
    }
}

/// The latest failures of the last day.
pub async fn recent_failures(pool: &PgPool) -> Result<Vec<Failure>> {
    Ok(sqlx::query_as(concat!(
        "SELECT e.id, p.slug, e.format, e.error_code, e.error_message, e.completed_at
         FROM exports e JOIN projects p ON p.id = e.project_id
         WHERE e.completed_at > now() - interval '1 day' AND e.status = ",
        crate::sql_status!(Failed),
        " ORDER BY e.completed_at DESC LIMIT 20"
    ))
    .fetch_all(pool)
    .await?)
}

/// Completed exports per minute over the last hour: 60 counts, oldest first.
pub async fn per_minute(pool: &PgPool) -> Result<Vec<i64>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(concat!(
        "SELECT (extract(epoch FROM now() - completed_at) / 60)::int AS ago, count(*)
         FROM exports
         WHERE completed_at > now() - interval '1 hour' AND status IN (",
        crate::sql_status!(Completed),
        ", ",
        crate::sql_status!(Expired),
        ") GROUP BY ago"
    ))
    .fetch_all(pool)
    .await?;
    let mut minutes = vec![0i64; 60];
    for (ago, n) in rows {
        if (0..60).contains(&ago) {
            minutes[59 - ago as usize] += n;
        }
    }
    Ok(minutes)
}

pg_row! {
    #[derive(Debug, Clone)]
    pub struct LiveWorker {
        pub id: String,
        pub host: String,
        pub concurrency: i32,
        pub running: i32,
        pub started_at: DateTime<Utc>,
        pub last_seen: DateTime<Utc>,
    }
}

/// A worker is live when it was seen within this many seconds.
pub const LIVE_SECS: f64 = 30.0;

pub async fn live_workers(pool: &PgPool) -> Result<Vec<LiveWorker>> {
    Ok(sqlx::query_as(
        "SELECT id, host, concurrency, running, started_at, last_seen FROM workers
         WHERE last_seen > now() - make_interval(secs => $1) ORDER BY started_at LIMIT 200",
    )
    .bind(LIVE_SECS)
    .fetch_all(pool)
    .await?)
}

/// A worker says it is alive (and how busy); rows of workers gone for an hour are removed.
pub async fn worker_seen(
    pool: &PgPool,
    id: &str,
    host: &str,
    concurrency: i32,
    running: i32,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO workers (id, host, concurrency, running) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET running = $4, last_seen = now()",
    )
    .bind(id)
    .bind(host)
    .bind(concurrency)
    .bind(running)
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM workers WHERE last_seen < now() - interval '1 hour'")
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn worker_gone(pool: &PgPool, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM workers WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
