//! The job ledger: fair claims with a lease token, heartbeats with progress, release with
//! backoff, fenced completion and failure, and the reconciler's pass over lapsed leases and
//! unqueued exports.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::ExportRecord;
use crate::domain::states::FailureCode;
use crate::error::Result;
use crate::repo::workflows::Workflow;

/// A claim on a job: the attempt it is and the token that fences every later write. The job is
/// the export's own (`job_id == export_id`) or one part of a dataset (`export_id` its parent).
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub job_id: Uuid,
    pub export_id: Uuid,
    pub token: Uuid,
    pub attempt: i32,
}

/// Claims the next export fairly: the oldest QUEUED export of the project with the fewest
/// running, among projects below their cap (`project_cap`). A queue message only says "there
/// is work"; which export runs is decided here, so a burst of one project's exports cannot
/// keep another project's export waiting behind it. Claims take turns on one advisory lock, so
/// a cap is never overshot by a race; the claim is one call of the `wharf_claim` function
/// (migrations 20261125000001 and 20261130000001), so the lock is held for the server's work
/// and the commit, not across round trips, and its cost grows with the projects waiting, not
/// with the exports waiting.
pub async fn claim_next(
    pool: &PgPool,
    worker_id: &str,
    lease: Duration,
    project_cap: i64,
) -> Result<Option<Claimed>> {
    let token = Uuid::new_v4();
    // One round trip: the claim, and the claimed export's record and workflow, read after it.
    let claimed: Option<ClaimedRow> = sqlx::query_as(
        "SELECT c.job_kind, c.attempt AS claimed_attempt, c.attempt AS attempts, c.max_attempts,
             $4 AS lease_token, (c.export).*, c.dock_status_id, c.job_type,
             c.run_executed_at, c.run_row_count, (c.workflow).id AS wf_id,
             (c.workflow).project_id AS wf_project_id, (c.workflow).name AS wf_name,
             (c.workflow).schema AS wf_schema, (c.workflow).table_name AS wf_table_name,
             (c.workflow).created_at AS wf_created_at, c.job_id, c.job_parent, c.job_payload,
             c.run_commit_lsn
         FROM wharf_claim($1, $2, $3, $4) c",
    )
    .bind(worker_id)
    .bind(lease.as_secs_f64())
    .bind(project_cap)
    .bind(token)
    .fetch_optional(pool)
    .await?;
    Ok(claimed.map(|ClaimedRow(c)| Claimed {
        claim: Claim { token, ..c.claim },
        ..c
    }))
}

/// What a claim returns: the claim, the export's record as claimed, and its workflow (None for
/// a project's bundle, an import, or a workflow deleted since).
#[derive(Debug)]
pub struct Claimed {
    /// The ledger's kind of the job: which `Job` runs it.
    pub kind: crate::jobs::Kind,
    pub claim: Claim,
    pub rec: ExportRecord,
    pub workflow: Option<Workflow>,
    /// A part's work (`Kind::Part`): the files it writes.
    pub part: Option<crate::domain::dataset::PartPlan>,
}

struct ClaimedRow(Claimed);

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ClaimedRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> std::result::Result<Self, sqlx::Error> {
        use sqlx::Row;
        let rec = ExportRecord::from_row(row)?;
        let kind: String = row.try_get("job_kind")?;
        let kind = crate::jobs::Kind::parse(&kind).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "job_kind".into(),
            source: format!("no job kind \"{kind}\"").into(),
        })?;
        let payload: Json<serde_json::Value> = row.try_get("job_payload")?;
        let part = match kind {
            crate::jobs::Kind::Part => {
                Some(
                    serde_json::from_value(payload.0).map_err(|e| sqlx::Error::ColumnDecode {
                        index: "job_payload".into(),
                        source: Box::new(e),
                    })?,
                )
            }
            _ => None,
        };
        Ok(ClaimedRow(Claimed {
            kind,
            claim: Claim {
                job_id: row.try_get("job_id")?,
                export_id: rec.id,
                token: Uuid::nil(),
                attempt: row.try_get("claimed_attempt")?,
            },
            workflow: crate::repo::workflows::from_claim_row(row)?,
            part,
            rec,
        }))
    }
}

/// Gives a claimed export back (worker shutting down, or a transient failure): QUEUED again,
/// due after `delay`, to be enqueued at once by the caller or by the reconciler.
pub async fn release(pool: &PgPool, claim: &Claim, delay: Duration) -> Result<bool> {
    let done = sqlx::query(concat!(
        "WITH job AS (
           UPDATE jobs SET status = 'QUEUED', lease_token = NULL, lease_expires_at = NULL,
               worker_id = NULL, enqueued_at = NULL, updated_at = now(),
               due_at = now() + make_interval(secs => $3)
           WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING' RETURNING id)
         UPDATE exports SET status = ",
        crate::sql_status!(Queued),
        ", updated_at = now() WHERE id IN (SELECT id FROM job) AND status = ",
        crate::sql_status!(InProgress)
    ))
    .bind(claim.job_id)
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

/// The reconciler's pass: lapsed leases of every kind go back to QUEUED (or FAILED once out of
/// attempts, a crash counting as an attempt); due QUEUED jobs not handed out for `stale` are
/// returned to be pushed to the queue again (webhook deliveries excepted: their claim finds
/// them by endpoint, not by the queue). Safe in every worker at once (SKIP LOCKED; a duplicate
/// push only finds the export already claimed).
pub async fn reconcile(
    pool: &PgPool,
    stale: Duration,
    limit: i64,
) -> Result<Vec<(Uuid, Option<String>)>> {
    sqlx::query(concat!(
        "WITH lapsed AS (
           UPDATE jobs SET lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
               enqueued_at = NULL, updated_at = now(),
               status = CASE WHEN attempts >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END
           WHERE status = 'RUNNING' AND lease_expires_at < now()
           RETURNING id, coalesce(parent_id, id) AS export_id, parent_id IS NOT NULL AS part,
               status = 'FAILED' AS spent),
         parents AS (
           UPDATE jobs SET status = 'FAILED', updated_at = now()
           WHERE id IN (SELECT export_id FROM lapsed WHERE part AND spent)
               AND status IN ('QUEUED', 'RUNNING', 'WAITING')),
         siblings AS (
           UPDATE jobs SET status = 'CANCELLED', lease_token = NULL, lease_expires_at = NULL,
               updated_at = now()
           WHERE parent_id IN (SELECT export_id FROM lapsed WHERE part AND spent)
               AND status IN ('QUEUED', 'RUNNING') AND id NOT IN (SELECT id FROM lapsed))
         UPDATE exports e SET updated_at = now(),
             status = CASE WHEN l.spent THEN ",
        crate::sql_status!(Failed),
        " ELSE ",
        crate::sql_status!(Queued),
        " END,
             completed_at = CASE WHEN l.spent THEN now() END,
             error_code = CASE WHEN l.spent THEN $1 END,
             error_message = CASE WHEN l.spent
                 THEN 'the export was interrupted on every attempt; create it again' END
         FROM lapsed l WHERE e.id = l.export_id AND (l.spent OR NOT l.part) AND e.status = ",
        crate::sql_status!(InProgress)
    ))
    .bind(FailureCode::WorkerLost)
    .execute(pool)
    .await?;
    Ok(sqlx::query_as(
        "UPDATE jobs SET enqueued_at = now() WHERE id IN (
             SELECT id FROM jobs WHERE status = 'QUEUED' AND kind <> 'webhook'
                 AND (due_at IS NULL OR due_at <= now())
                 AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => $1))
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, (SELECT e.request_id FROM exports e
                        WHERE e.id = coalesce(jobs.parent_id, jobs.id))",
    )
    .bind(stale.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The API could not push the job: the reconciler's next pass will.
pub async fn mark_unqueued(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE jobs SET enqueued_at = NULL WHERE id = $1 AND status = 'QUEUED'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Renews the lease and records progress. False: the claim is lost (cancelled, taken over).
/// An attempt's progress: rows and bytes so far, and the rows it will hold once counted.
pub struct Beat {
    pub rows: i64,
    pub bytes: i64,
    pub total: Option<i64>,
}

pub async fn heartbeat(pool: &PgPool, claim: &Claim, beat: &Beat, lease: Duration) -> Result<bool> {
    // The claim holds while its job's lease does (a cancel ends both the job and its export); a
    // part's progress shows in its export as its parts complete (`parts::complete_part`).
    let held: i64 = sqlx::query_scalar(concat!(
        "WITH job AS (
           UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
           WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING' RETURNING id),
         progress AS (
           UPDATE exports SET rows_written = $4, bytes_written = $5,
               rows_total = coalesce($6, rows_total), updated_at = now()
           WHERE id IN (SELECT id FROM job) AND status = ",
        crate::sql_status!(InProgress),
        ")
         SELECT count(*) FROM job"
    ))
    .bind(claim.job_id)
    .bind(claim.token)
    .bind(lease.as_secs_f64())
    .bind(beat.rows)
    .bind(beat.bytes)
    .bind(beat.total)
    .fetch_one(pool)
    .await?;
    Ok(held == 1)
}

pub async fn set_total(pool: &PgPool, claim: &Claim, total: i64) -> Result<()> {
    sqlx::query(
        "UPDATE exports SET rows_total = $3 WHERE id = $1
             AND EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND lease_token = $2)",
    )
    .bind(claim.job_id)
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
    // One statement (one round trip, one commit): the upload record is marked only when the
    // export's fenced update took place.
    let done: i64 = sqlx::query_scalar(concat!(
        "WITH job AS (
           UPDATE jobs SET status = 'SUCCEEDED', lease_token = NULL, lease_expires_at = NULL,
               updated_at = now()
           WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING' RETURNING id),
         done AS (
           UPDATE exports SET status = ",
        crate::sql_status!(Completed),
        ", completed_at = now(), updated_at = now(),
               expires_at = now() + make_interval(secs => $9), row_count = $3, rows_written = $3,
               rows_total = $3, size_bytes = $4, bytes_written = $4, sha256 = $5, object_key = $6,
               content_type = $7, file_name = $8, error_code = NULL, error_message = NULL
           WHERE id IN (SELECT id FROM job) AND status = ",
        crate::sql_status!(InProgress),
        "
           RETURNING id),
         upload AS (
           UPDATE export_uploads SET state = ",
        crate::sql_upload_state!(Completed),
        ", updated_at = now()
           WHERE job_id IN (SELECT id FROM done) AND attempt = $10 AND state = ",
        crate::sql_upload_state!(Open),
        ")
         SELECT count(*) FROM done"
    ))
    .bind(claim.job_id)
    .bind(claim.token)
    .bind(c.row_count)
    .bind(c.size_bytes)
    .bind(c.sha256)
    .bind(c.object_key)
    .bind(c.content_type)
    .bind(c.file_name)
    .bind(c.ttl.as_secs_f64())
    .bind(claim.attempt)
    .fetch_one(pool)
    .await?;
    Ok(done == 1)
}

/// Ends the export FAILED with a stable code and a message a user can act on. A part that
/// fails ends its whole export: the export's job FAILED and every other part CANCELLED in the
/// same statement (their running attempts lose their claim at the next heartbeat; the janitor
/// removes the files of parts that completed).
pub async fn fail(pool: &PgPool, claim: &Claim, code: FailureCode, message: &str) -> Result<bool> {
    let done = sqlx::query(concat!(
        "WITH job AS (
           UPDATE jobs SET status = 'FAILED', lease_token = NULL, lease_expires_at = NULL,
               updated_at = now()
           WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING'
           RETURNING coalesce(parent_id, id) AS export_id),
         parent AS (
           UPDATE jobs SET status = 'FAILED', lease_token = NULL, lease_expires_at = NULL,
               updated_at = now()
           WHERE id IN (SELECT export_id FROM job) AND id <> $1
               AND status IN ('QUEUED', 'RUNNING', 'WAITING')),
         siblings AS (
           UPDATE jobs SET status = 'CANCELLED', lease_token = NULL, lease_expires_at = NULL,
               updated_at = now()
           WHERE parent_id IN (SELECT export_id FROM job) AND id <> $1
               AND status IN ('QUEUED', 'RUNNING'))
         UPDATE exports SET status = ",
        crate::sql_status!(Failed),
        ", completed_at = now(), updated_at = now(), error_code = $3, error_message = $4
         WHERE id IN (SELECT export_id FROM job) AND status = ",
        crate::sql_status!(InProgress)
    ))
    .bind(claim.job_id)
    .bind(claim.token)
    .bind(code)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
