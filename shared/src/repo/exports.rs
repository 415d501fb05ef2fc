//! Export jobs and their dock statuses: creation, claims fenced by a lease token, progress,
//! completion, failure and cancellation. Every state change is a conditional update.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{Page, paginate};
use crate::domain::export::ExportSpec;
use crate::domain::ids::new_id;
use crate::domain::states::{ExportStatus, UploadState};
use crate::error::{Error, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub workflow_id: Uuid,
    pub run_id: Option<Uuid>,
    pub format: String,
    pub compression: String,
    pub params: Json<ExportSpec>,
    pub status: ExportStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_token: Option<Uuid>,
    pub rows_written: i64,
    pub rows_total: Option<i64>,
    pub bytes_written: i64,
    pub row_count: Option<i64>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub object_key: Option<String>,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_hash: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub dock_status_id: Uuid,
    pub run_executed_at: Option<DateTime<Utc>>,
}

impl ExportRecord {
    /// The object to download, or the error that says why there is none.
    pub fn downloadable(&self, now: DateTime<Utc>) -> Result<&str> {
        match self.effective_status(now) {
            ExportStatus::Completed => self.object_key.as_deref().ok_or(Error::ExportNotReady),
            ExportStatus::Queued | ExportStatus::InProgress => Err(Error::ExportNotReady),
            ExportStatus::Failed => Err(Error::ExportFailed(
                self.error_message.clone().unwrap_or_default(),
            )),
            ExportStatus::Cancelled => Err(Error::ExportCancelled),
            ExportStatus::Expired => Err(Error::ExportExpired),
        }
    }

    /// The status a client sees: a completed export past its retention reads EXPIRED at once,
    /// before the janitor has removed the object.
    pub fn effective_status(&self, now: DateTime<Utc>) -> ExportStatus {
        match (self.status, self.expires_at) {
            (ExportStatus::Completed, Some(exp)) if exp <= now => ExportStatus::Expired,
            (s, _) => s,
        }
    }
}

const SELECT: &str = "SELECT e.*, d.id AS dock_status_id, r.executed_at AS run_executed_at
    FROM exports e JOIN dock_statuses d ON d.export_id = e.id LEFT JOIN runs r ON r.id = e.run_id";

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

/// Writes the export and its dock status in one transaction (status QUEUED).
pub async fn create(pool: &PgPool, new: NewExport<'_>) -> Result<Created> {
    let mut tx = pool.begin().await?;
    if let Some(key) = new.idempotency_key {
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
    }
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM exports WHERE project_id = $1 AND status = 'QUEUED'",
    )
    .bind(new.project_id)
    .fetch_one(&mut *tx)
    .await?;
    if queued >= new.queue_max {
        return Err(Error::RateLimited {
            message: format!(
                "this project already has {queued} exports waiting in the queue \
                 (WHARF_PROJECT_QUEUE_MAX); retry once some have started"
            ),
            retry_after: 10,
        });
    }
    let id = new_id();
    sqlx::query(
        "INSERT INTO exports (id, project_id, workflow_id, run_id, format, compression, params,
             idempotency_key, request_hash, request_id, max_attempts, enqueued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())",
    )
    .bind(id)
    .bind(new.project_id)
    .bind(new.workflow_id)
    .bind(new.run_id)
    .bind(new.spec.format.as_str())
    .bind(new.spec.compression.as_str())
    .bind(Json(new.spec))
    .bind(new.idempotency_key)
    .bind(new.request_hash)
    .bind(new.request_id)
    .bind(new.max_attempts)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO dock_statuses (id, project_id, job_type, action, workflow_id, export_id)
         VALUES ($1, $2, 'EXPORT', 'EXPORT', $3, $4)",
    )
    .bind(new_id())
    .bind(new.project_id)
    .bind(new.workflow_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let rec = get(pool, new.project_id, id)
        .await?
        .ok_or(Error::NotFound("export"))?;
    Ok(Created::New(Box::new(rec)))
}

pub async fn get(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<ExportRecord>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE e.id = $1 AND e.project_id = $2"
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

/// A claim on an export: the attempt it is and the token that fences every later write.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub export_id: Uuid,
    pub token: Uuid,
    pub attempt: i32,
}

/// Claims the next export fairly: the oldest QUEUED export of the project with the fewest
/// running, among projects below their cap (`project_cap`). A queue message only says "there
/// is work"; which export runs is decided here, so a burst of one project's exports cannot
/// keep another project's export waiting behind it. Claims take turns (a few milliseconds
/// each), so a cap is never overshot by a race.
pub async fn claim_next(
    pool: &PgPool,
    worker_id: &str,
    lease: Duration,
    project_cap: i64,
) -> Result<Option<Claim>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7)")
        .execute(&mut *tx)
        .await?;
    let picked: Option<Uuid> = sqlx::query_scalar(
        "WITH running AS (
             SELECT project_id, count(*) AS n FROM exports
             WHERE status = 'IN_PROGRESS' AND lease_expires_at > now() GROUP BY project_id)
         SELECT e.id FROM exports e LEFT JOIN running r ON r.project_id = e.project_id
         WHERE e.status = 'QUEUED' AND e.attempts < e.max_attempts
             AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
             AND coalesce(r.n, 0) < $1
         ORDER BY coalesce(r.n, 0), e.created_at
         LIMIT 1 FOR UPDATE OF e SKIP LOCKED",
    )
    .bind(project_cap)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = picked else {
        tx.commit().await?;
        return Ok(None);
    };
    let token = Uuid::new_v4();
    let attempt: i32 = sqlx::query_scalar(
        "UPDATE exports SET status = 'IN_PROGRESS', attempts = attempts + 1, lease_token = $2,
             lease_expires_at = now() + make_interval(secs => $3), worker_id = $4,
             started_at = coalesce(started_at, now()), updated_at = now(),
             rows_written = 0, bytes_written = 0, next_attempt_at = NULL
         WHERE id = $1 RETURNING attempts",
    )
    .bind(id)
    .bind(token)
    .bind(lease.as_secs_f64())
    .bind(worker_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Claim {
        export_id: id,
        token,
        attempt,
    }))
}

/// Gives a claimed export back (worker shutting down, or a transient failure): QUEUED again,
/// due after `delay`, to be enqueued at once by the caller or by the reconciler.
pub async fn release(pool: &PgPool, claim: &Claim, delay: Duration) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE exports SET status = 'QUEUED', lease_token = NULL, lease_expires_at = NULL,
             worker_id = NULL, enqueued_at = NULL, updated_at = now(),
             next_attempt_at = now() + make_interval(secs => $3)
         WHERE id = $1 AND lease_token = $2 AND status = 'IN_PROGRESS'",
    )
    .bind(claim.export_id)
    .bind(claim.token)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether another attempt is allowed after this one.
pub fn has_attempts_left(claim: &Claim, max_attempts: i32) -> bool {
    claim.attempt < max_attempts
}

/// The reconciler's pass: lapsed leases go back to QUEUED (or FAILED once out of attempts, a
/// crash counting as an attempt); due QUEUED exports not handed out for `stale` are returned
/// to be pushed to the queue again. Safe in every worker at once (SKIP LOCKED; a duplicate
/// push only finds the export already claimed).
pub async fn reconcile(
    pool: &PgPool,
    stale: Duration,
    limit: i64,
) -> Result<Vec<(Uuid, Option<String>)>> {
    sqlx::query(
        "UPDATE exports SET lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
             enqueued_at = NULL, updated_at = now(),
             status = CASE WHEN attempts >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END,
             completed_at = CASE WHEN attempts >= max_attempts THEN now() END,
             error_code = CASE WHEN attempts >= max_attempts THEN 'WORKER_LOST' END,
             error_message = CASE WHEN attempts >= max_attempts
                 THEN 'the export was interrupted on every attempt; create it again' END
         WHERE status = 'IN_PROGRESS' AND lease_expires_at < now()",
    )
    .execute(pool)
    .await?;
    Ok(sqlx::query_as(
        "UPDATE exports SET enqueued_at = now() WHERE id IN (
             SELECT id FROM exports WHERE status = 'QUEUED'
                 AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                 AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => $1))
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, request_id",
    )
    .bind(stale.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The API could not push the job: the reconciler's next pass will.
pub async fn mark_unqueued(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE exports SET enqueued_at = NULL WHERE id = $1 AND status = 'QUEUED'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Multipart uploads left OPEN by attempts that are over (a killed worker), older than `age`.
pub async fn orphan_uploads(pool: &PgPool, age: Duration) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT u.upload_id, u.object_key FROM export_uploads u JOIN exports e ON e.id = u.export_id
         WHERE u.state = 'OPEN' AND u.created_at < now() - make_interval(secs => $1)
             AND (e.status <> 'IN_PROGRESS' OR e.attempts > u.attempt OR e.lease_expires_at < now())
         LIMIT 100",
    )
    .bind(age.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// Renews the lease and records progress. False: the claim is lost (cancelled, taken over).
pub async fn heartbeat(
    pool: &PgPool,
    claim: &Claim,
    rows: i64,
    bytes: i64,
    lease: Duration,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE exports SET lease_expires_at = now() + make_interval(secs => $3),
             rows_written = $4, bytes_written = $5, updated_at = now()
         WHERE id = $1 AND lease_token = $2 AND status = 'IN_PROGRESS'",
    )
    .bind(claim.export_id)
    .bind(claim.token)
    .bind(lease.as_secs_f64())
    .bind(rows)
    .bind(bytes)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_total(pool: &PgPool, claim: &Claim, total: i64) -> Result<()> {
    sqlx::query("UPDATE exports SET rows_total = $3 WHERE id = $1 AND lease_token = $2")
        .bind(claim.export_id)
        .bind(claim.token)
        .bind(total)
        .execute(pool)
        .await?;
    Ok(())
}

pub struct Completion<'a> {
    pub row_count: i64,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub object_key: &'a str,
    pub content_type: &'a str,
    pub file_name: &'a str,
    pub ttl: Duration,
}

/// Marks the export COMPLETED, fenced on the claim, and its attempt's upload record with it.
/// False: the claim was lost meanwhile, and the caller must delete the object it wrote.
pub async fn complete(pool: &PgPool, claim: &Claim, c: &Completion<'_>) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE exports SET status = 'COMPLETED', completed_at = now(), updated_at = now(),
             expires_at = now() + make_interval(secs => $9), row_count = $3, rows_written = $3,
             rows_total = $3, size_bytes = $4, bytes_written = $4, sha256 = $5, object_key = $6,
             content_type = $7, file_name = $8, lease_token = NULL, lease_expires_at = NULL,
             error_code = NULL, error_message = NULL
         WHERE id = $1 AND lease_token = $2 AND status = 'IN_PROGRESS'",
    )
    .bind(claim.export_id)
    .bind(claim.token)
    .bind(c.row_count)
    .bind(c.size_bytes)
    .bind(c.sha256)
    .bind(c.object_key)
    .bind(c.content_type)
    .bind(c.file_name)
    .bind(c.ttl.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE export_uploads SET state = 'COMPLETED', updated_at = now()
         WHERE export_id = $1 AND attempt = $2 AND state = 'OPEN'",
    )
    .bind(claim.export_id)
    .bind(claim.attempt)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends the export FAILED with a stable code and a message a user can act on.
pub async fn fail(pool: &PgPool, claim: &Claim, code: &str, message: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE exports SET status = 'FAILED', completed_at = now(), updated_at = now(),
             error_code = $3, error_message = $4, lease_token = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease_token = $2 AND status = 'IN_PROGRESS'",
    )
    .bind(claim.export_id)
    .bind(claim.token)
    .bind(code)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub enum Cancelled {
    Done(Box<ExportRecord>),
    /// Already COMPLETED, FAILED or EXPIRED.
    Finished(ExportStatus),
}

/// Cancels a QUEUED or IN_PROGRESS export at once; a worker running it notices at its next
/// heartbeat and aborts its upload. Cancelling a cancelled export is a no-op.
pub async fn cancel(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<Cancelled>> {
    let changed: Option<Uuid> = sqlx::query_scalar(
        "UPDATE exports SET status = 'CANCELLED', cancel_requested = true, completed_at = now(),
             updated_at = now(), lease_token = NULL, lease_expires_at = NULL
         WHERE id = $1 AND project_id = $2 AND status IN ('QUEUED', 'IN_PROGRESS') RETURNING id",
    )
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

/// A multipart upload begun for an attempt, so orphans can be aborted later.
pub async fn record_upload(pool: &PgPool, claim: &Claim, upload_id: &str, key: &str) -> Result<()> {
    sqlx::query("INSERT INTO export_uploads (upload_id, export_id, attempt, object_key) VALUES ($1, $2, $3, $4)")
        .bind(upload_id)
        .bind(claim.export_id)
        .bind(claim.attempt)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn finish_upload(pool: &PgPool, upload_id: &str, state: UploadState) -> Result<()> {
    sqlx::query("UPDATE export_uploads SET state = $2, updated_at = now() WHERE upload_id = $1")
        .bind(upload_id)
        .bind(state)
        .execute(pool)
        .await?;
    Ok(())
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

/// Retention: marks due exports EXPIRED (downloads answer 410 from then on), then returns
/// expired exports whose object still exists. Safe in many processes: each step is idempotent.
pub async fn expire_due(pool: &PgPool, limit: i64) -> Result<Vec<(Uuid, String)>> {
    sqlx::query(
        "UPDATE exports SET status = 'EXPIRED', updated_at = now()
         WHERE status = 'COMPLETED' AND expires_at <= now()",
    )
    .execute(pool)
    .await?;
    Ok(sqlx::query_as(
        "SELECT id, object_key FROM exports WHERE status = 'EXPIRED' AND object_key IS NOT NULL
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Records that an expired export's object is gone.
pub async fn forget_object(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE exports SET object_key = NULL WHERE id = $1 AND status = 'EXPIRED'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
