//! Creation: the export or job with its dock status, idempotency and the per-project queue
//! cap, in one transaction.

use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{ExportRecord, get, get_job};
use crate::domain::export::ExportSpec;
use crate::domain::ids::new_id;
use crate::domain::states::{ExportScope, JobKind};
use crate::error::{Error, Result};

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
    if let Some(id) = earlier_with(&mut tx, &new, key).await? {
        tx.commit().await?;
        let rec = get(pool, new.project_id, id)
            .await?
            .ok_or(Error::NotFound("export"))?;
        return Ok(Created::Existing(Box::new(rec)));
    }
    let id = insert_export(&mut *tx, &new).await?;
    tx.commit().await?;
    created(pool, &new, id).await
}

/// The export made with `key` within the window, once creators of the key are serialized (the
/// same key with another body: 409). A key older than the window is freed for this export.
async fn earlier_with(
    tx: &mut sqlx::PgConnection,
    new: &NewExport<'_>,
    key: &str,
) -> Result<Option<Uuid>> {
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
        Some((_, hash, true)) if hash.as_deref() != Some(new.request_hash) => Err(Error::Conflict(
            "Idempotency-Key was already used with different parameters".into(),
        )),
        Some((id, _, true)) => Ok(Some(id)),
        Some((id, _, false)) => {
            sqlx::query("UPDATE exports SET idempotency_key = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(None)
        }
        None => Ok(None),
    }
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
    insert_job(&mut tx, id, &new).await?;
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

/// The ledger's job and its exports row; a bundle's runs are Parquet (zstd), as a Parquet
/// export of each run would be.
async fn insert_job(tx: &mut sqlx::PgConnection, id: Uuid, new: &NewJob<'_>) -> Result<()> {
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
    .bind(Json(&ExportSpec::bundle_runs()))
    .bind(new.kind)
    .bind(new.scope)
    .bind(new.file_id)
    .bind(new.import_name)
    .bind(new.request_id)
    .bind(new.max_attempts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
