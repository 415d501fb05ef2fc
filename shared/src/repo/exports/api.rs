//! What the API reads and writes: creation (with the dock status, idempotency and the
//! per-project queue cap), lookups, lists and cancellation.

use chrono::Utc;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{ExportRecord, SELECT};
use crate::domain::export::ExportSpec;
use crate::domain::ids::new_id;
use crate::domain::states::{ExportScope, ExportStatus, JobKind};
use crate::error::{Error, Result};
use crate::repo::{Page, paginate};

pub struct NewExport<'a> {
    pub project_id: Uuid,
    pub workflow_id: Uuid,
    pub run_id: Uuid,
    pub spec: &'a ExportSpec,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a str,
    pub request_id: &'a str,
    pub max_attempts: i32,
    /// Exports QUEUED in the project at most (`WHARF_PROJECT_QUEUE_MAX`).
    pub queue_max: i64,
}

pub enum Created {
    New(Box<ExportRecord>),
    /// The same idempotency key and body within 24 h: the export made the first time.
    Existing(Box<ExportRecord>),
}

pub const IDEMPOTENCY_WINDOW_HOURS: i32 = 24;

/// Writes the export and its dock status (status QUEUED): one statement without an idempotency
/// key; with one, that statement inside a transaction that first serializes creators of the
/// key and answers a repeat with the export made the first time.
pub async fn create(pool: &PgPool, new: NewExport<'_>) -> Result<Created> {
    let Some(key) = new.idempotency_key else {
        let id = insert_export(pool, &new).await?;
        return created(pool, &new, id).await;
    };
    let mut tx = pool.begin().await?;
    // Serialize creators of the same key; a key older than the window is free again.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2::text, 0))")
        .bind(key)
        .bind(new.project_id)
        .execute(&mut *tx)
        .await?;
    let existing: Option<(Uuid, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, request_hash, created_at > now() - make_interval(hours => $3)
         FROM exports WHERE project_id = $1 AND idempotency_key = $2",
    )
    .bind(new.project_id)
    .bind(key)
    .bind(IDEMPOTENCY_WINDOW_HOURS)
    .fetch_optional(&mut *tx)
    .await?;
    match existing {
        Some((id, hash, true)) => {
            tx.commit().await?;
            if hash.as_deref() != Some(new.request_hash) {
                return Err(Error::Conflict(
                    "Idempotency-Key was already used with different parameters".into(),
                ));
            }
            let rec = get(pool, new.project_id, id)
                .await?
                .ok_or(Error::NotFound("export"))?;
            return Ok(Created::Existing(Box::new(rec)));
        }
        Some((id, _, false)) => {
            sqlx::query("UPDATE exports SET idempotency_key = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        None => {}
    }
    let id = insert_export(&mut *tx, &new).await?;
    tx.commit().await?;
    created(pool, &new, id).await
}

async fn created(pool: &PgPool, new: &NewExport<'_>, id: Uuid) -> Result<Created> {
    let rec = get(pool, new.project_id, id)
        .await?
        .ok_or(Error::NotFound("export"))?;
    Ok(Created::New(Box::new(rec)))
}

/// The queue cap, the export and its dock status in one statement (four round trips fewer
/// than BEGIN, count, insert, insert, COMMIT: small exports are mostly round trips on a 2-core
/// machine). Over the cap nothing is written and the 429 says how many wait.
async fn insert_export(conn: impl sqlx::PgExecutor<'_>, new: &NewExport<'_>) -> Result<Uuid> {
    let id = new_id();
    let queued: i64 = sqlx::query_scalar(concat!(
        "WITH cap AS (
             SELECT count(*) AS queued FROM exports WHERE project_id = $2 AND status = ",
        crate::sql_status!(Queued),
        "
         ), job AS (
             INSERT INTO jobs (id, kind, project_id, payload, max_attempts, enqueued_at)
             SELECT $1, 'export', $2, jsonb_build_object('exportId', $1::uuid), $10, now()
             FROM cap WHERE queued < $11
             RETURNING id
         ), export AS (
             INSERT INTO exports (id, project_id, workflow_id, run_id, format, compression, params,
                 idempotency_key, request_hash, request_id)
             SELECT id, $2, $3, $4, $5, $6, $7, $13, $8, $9 FROM job
             RETURNING id
         ), dock AS (
             INSERT INTO dock_statuses (id, project_id, job_type, action, workflow_id, export_id)
             SELECT $12, $2, 'EXPORT', 'EXPORT', $3, id FROM export
         )
         SELECT queued FROM cap"
    ))
    .bind(id)
    .bind(new.project_id)
    .bind(new.workflow_id)
    .bind(new.run_id)
    .bind(new.spec.format.as_str())
    .bind(new.spec.compression.as_str())
    .bind(Json(new.spec))
    .bind(new.request_hash)
    .bind(new.request_id)
    .bind(new.max_attempts)
    .bind(new.queue_max)
    .bind(new_id())
    .bind(new.idempotency_key)
    .fetch_one(conn)
    .await?;
    if queued >= new.queue_max {
        return Err(queue_full(queued));
    }
    Ok(id)
}

fn queue_full(queued: i64) -> Error {
    Error::RateLimited {
        message: format!(
            "this project already has {queued} jobs waiting in the queue \
             (WHARF_PROJECT_QUEUE_MAX); retry once some have started"
        ),
        retry_after: 10,
    }
}

async fn check_queue_cap(
    tx: &mut sqlx::PgConnection,
    project_id: Uuid,
    queue_max: i64,
) -> Result<()> {
    let queued: i64 = sqlx::query_scalar(concat!(
        "SELECT count(*) FROM exports WHERE project_id = $1 AND status = ",
        crate::sql_status!(Queued)
    ))
    .bind(project_id)
    .fetch_one(&mut *tx)
    .await?;
    if queued >= queue_max {
        return Err(queue_full(queued));
    }
    Ok(())
}

async fn insert_dock_status(
    tx: &mut sqlx::PgConnection,
    project_id: Uuid,
    job_type: &str,
    action: &str,
    workflow_id: Option<Uuid>,
    job_id: Uuid,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dock_statuses (id, project_id, job_type, action, workflow_id, export_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(project_id)
    .bind(job_type)
    .bind(action)
    .bind(workflow_id)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A bundle to build, or a bundle to import: jobs of the same ledger as exports.
pub struct NewJob<'a> {
    pub project_id: Uuid,
    pub kind: JobKind,
    pub scope: ExportScope,
    /// The bundled workflow (scope workflow), or the workflow an import adds runs to.
    pub workflow_id: Option<Uuid>,
    /// An import's bundle.
    pub file_id: Option<Uuid>,
    /// An import's name for the workflow it creates.
    pub import_name: Option<&'a str>,
    /// The dock status's `jobType`: `EXPORT`, `WORKFLOWS` (Kore.ai's routes) or `IMPORT`.
    pub job_type: &'a str,
    pub request_id: &'a str,
    pub max_attempts: i32,
    pub queue_max: i64,
}

/// Writes a bundle or import job and its dock status in one transaction (status QUEUED).
pub async fn create_job(pool: &PgPool, new: NewJob<'_>) -> Result<ExportRecord> {
    let mut tx = pool.begin().await?;
    check_queue_cap(&mut tx, new.project_id, new.queue_max).await?;
    let id = new_id();
    // A bundle's runs are Parquet (zstd), as a Parquet export of each run would be.
    let spec = ExportSpec::bundle_runs();
    sqlx::query(
        "WITH job AS (
             INSERT INTO jobs (id, kind, project_id, payload, max_attempts, enqueued_at)
             VALUES ($1, CASE WHEN $5 = 'import' THEN 'import' ELSE 'bundle' END, $2,
                 jsonb_build_object('exportId', $1::uuid), $10, now())
             RETURNING id)
         INSERT INTO exports (id, project_id, workflow_id, format, compression, params, kind,
             scope, file_id, import_name, request_id)
         SELECT id, $2, $3, 'bundle', 'zstd', $4, $5, $6, $7, $8, $9 FROM job",
    )
    .bind(id)
    .bind(new.project_id)
    .bind(new.workflow_id)
    .bind(Json(&spec))
    .bind(new.kind)
    .bind(new.scope)
    .bind(new.file_id)
    .bind(new.import_name)
    .bind(new.request_id)
    .bind(new.max_attempts)
    .execute(&mut *tx)
    .await?;
    let action = match new.kind {
        JobKind::Export => "EXPORT",
        JobKind::Import => "IMPORT",
    };
    insert_dock_status(
        &mut tx,
        new.project_id,
        new.job_type,
        action,
        new.workflow_id,
        id,
    )
    .await?;
    tx.commit().await?;
    get_job(pool, new.project_id, id)
        .await?
        .ok_or(Error::NotFound("job"))
}

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
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE e.id = $1 AND e.project_id = $2 AND e.kind = 'export'"
    )))
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?)
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
               AND status IN ('QUEUED', 'RUNNING') RETURNING id)
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
