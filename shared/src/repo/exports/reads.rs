//! What the API reads: lookups, lists, queue positions and pace; and cancellation.

use chrono::Utc;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{ExportRecord, SELECT};
use crate::domain::states::{ExportStatus, JobKind};
use crate::error::Result;
use crate::repo::{Page, paginate};

/// Any job of the project (an export, a bundle or an import) by its id.
pub async fn get_job(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<ExportRecord>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE e.id = $1 AND e.project_id = $2"
    )))
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?)
}

/// The project's exports of every scope (bundles included, imports not), newest first.
pub async fn list_project(
    pool: &PgPool,
    project_id: Uuid,
    page: Page,
) -> Result<(Vec<ExportRecord>, Option<Uuid>)> {
    let mut q = QueryBuilder::<Postgres>::new(SELECT);
    q.push(" WHERE e.project_id = ").push_bind(project_id);
    q.push(" AND e.kind = 'export'");
    if let Some(before) = page.before {
        q.push(" AND e.id < ").push_bind(before);
    }
    q.push(" ORDER BY e.id DESC LIMIT ")
        .push_bind(page.limit + 1);
    let rows: Vec<ExportRecord> = q.build_query_as().fetch_all(pool).await?;
    Ok(paginate(rows, page, |r| r.id))
}

/// An export (of any scope; not an import) of the project.
pub async fn get(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<ExportRecord>> {
    let job = get_job(pool, project_id, id).await?;
    Ok(job.filter(|r| r.kind == JobKind::Export))
}

/// For workers, which act on any project's export.
pub async fn get_any(pool: &PgPool, id: Uuid) -> Result<Option<ExportRecord>> {
    Ok(
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE e.id = $1")))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn get_by_dock_status(
    pool: &PgPool,
    project_id: Uuid,
    dock_id: Uuid,
) -> Result<Option<ExportRecord>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.id = $1 AND e.project_id = $2"
    )))
    .bind(dock_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?)
}

/// Newest first; `status` filters on the stored status (EXPIRED also matches completed
/// exports whose retention has ended).
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    workflow_id: Uuid,
    status: Option<ExportStatus>,
    page: Page,
) -> Result<(Vec<ExportRecord>, Option<Uuid>)> {
    let mut q = QueryBuilder::<Postgres>::new(SELECT);
    q.push(" WHERE e.project_id = ").push_bind(project_id);
    q.push(" AND e.workflow_id = ").push_bind(workflow_id);
    q.push(" AND e.kind = 'export'");
    // As a client sees them: a COMPLETED export past its retention is EXPIRED already.
    match status {
        Some(ExportStatus::Expired) => {
            q.push(" AND (e.status = ")
                .push_bind(ExportStatus::Expired)
                .push(" OR (e.status = ")
                .push_bind(ExportStatus::Completed)
                .push(" AND e.expires_at <= now()))");
        }
        Some(ExportStatus::Completed) => {
            q.push(" AND e.status = ")
                .push_bind(ExportStatus::Completed)
                .push(" AND (e.expires_at IS NULL OR e.expires_at > now())");
        }
        Some(s) => {
            q.push(" AND e.status = ").push_bind(s);
        }
        None => {}
    }
    if let Some(before) = page.before {
        q.push(" AND e.id < ").push_bind(before);
    }
    q.push(" ORDER BY e.id DESC LIMIT ")
        .push_bind(page.limit + 1);
    let rows: Vec<ExportRecord> = q.build_query_as().fetch_all(pool).await?;
    Ok(paginate(rows, page, |r| r.id))
}

pub enum Cancelled {
    Done(Box<ExportRecord>),
    /// Already COMPLETED, FAILED or EXPIRED.
    Finished(ExportStatus),
}

/// Cancels a QUEUED or IN_PROGRESS export at once; a worker running it notices at its next
/// heartbeat and aborts its upload. Cancelling a cancelled export is a no-op.
pub async fn cancel(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<Cancelled>> {
    // The job first, as the claim locks it first: the two never wait on each other crosswise.
    let changed: Option<Uuid> = sqlx::query_scalar(concat!(
        "WITH job AS (
           UPDATE jobs SET status = 'CANCELLED', lease_token = NULL, lease_expires_at = NULL,
               updated_at = now()
           WHERE id = $1 AND project_id = $2 AND kind IN ('export', 'bundle')
               AND status IN ('QUEUED', 'RUNNING', 'WAITING') RETURNING id),
         parts AS (
           UPDATE jobs SET status = 'CANCELLED', lease_token = NULL, lease_expires_at = NULL,
               updated_at = now()
           WHERE parent_id IN (SELECT id FROM job) AND status IN ('QUEUED', 'RUNNING'))
         UPDATE exports SET status = ",
        crate::sql_status!(Cancelled),
        ", cancel_requested = true, completed_at = now(), updated_at = now()
         WHERE id IN (SELECT id FROM job) AND status IN (",
        crate::sql_status!(Queued),
        ", ",
        crate::sql_status!(InProgress),
        ") RETURNING id"
    ))
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?;
    let Some(rec) = get(pool, project_id, id).await? else {
        return Ok(None);
    };
    let status = rec.effective_status(Utc::now());
    if changed.is_some() || status == ExportStatus::Cancelled {
        Ok(Some(Cancelled::Done(Box::new(rec))))
    } else {
        Ok(Some(Cancelled::Finished(status)))
    }
}

/// The run an export reads by default: the workflow's latest.
pub async fn latest_run(pool: &PgPool, workflow_id: Uuid) -> Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM runs WHERE workflow_id = $1 ORDER BY id DESC LIMIT 1")
            .bind(workflow_id)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn run_exists(pool: &PgPool, workflow_id: Uuid, run_id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE workflow_id = $1 AND id = $2)")
            .bind(workflow_id)
            .bind(run_id)
            .fetch_one(pool)
            .await?,
    )
}

/// QUEUED exports of the same project created before this one (0: it is next).
pub async fn queue_position(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT count(*) FROM exports WHERE project_id = $1 AND id < $2 AND status = ",
        crate::sql_status!(Queued)
    ))
    .bind(project_id)
    .bind(id)
    .fetch_one(pool)
    .await?)
}

/// Rows per second of the latest completed exports of `format` (the last 20 of the last day),
/// or None when there are none to go by.
pub async fn recent_rows_per_second(pool: &PgPool, format: &str) -> Result<Option<f64>> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT sum(row_count)::float8 / NULLIF(sum(extract(epoch FROM completed_at - started_at)), 0)
         FROM (SELECT row_count, completed_at, started_at FROM exports
               WHERE completed_at > now() - interval '1 day' AND format = $1
                 AND started_at IS NOT NULL AND status IN (",
        crate::sql_status!(Completed),
        ", ",
        crate::sql_status!(Expired),
        ") ORDER BY completed_at DESC LIMIT 20) recent"
    ))
    .bind(format)
    .fetch_one(pool)
    .await?)
}
