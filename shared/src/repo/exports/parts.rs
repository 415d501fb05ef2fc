//! The parts of a dataset on the ledger (migration 20261206000001): the plan that puts them in
//! (the export's job then WAITING), a part's fenced completion with its files (the last one
//! takes the export's job to write the manifest), the files as downloads read them, and the
//! janitor's list of ended datasets whose files are still stored.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::Claim;
use crate::domain::dataset::PartPlan;
use crate::error::Result;

/// Puts the parts in the ledger, QUEUED under the export's job, and leaves that job WAITING,
/// fenced on its claim; the export shows `parts.total` and the rows it will hold. None: the
/// claim was lost meanwhile (cancelled), and nothing was written.
pub async fn plan(
    pool: &PgPool,
    claim: &Claim,
    parts: &[PartPlan],
    rows_total: i64,
) -> Result<Option<Vec<Uuid>>> {
    let mut tx = pool.begin().await?;
    let waiting = sqlx::query(
        "UPDATE jobs SET status = 'WAITING', lease_token = NULL, lease_expires_at = NULL,
             updated_at = now()
         WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING'",
    )
    .bind(claim.job_id)
    .bind(claim.token)
    .execute(&mut *tx)
    .await?;
    if waiting.rows_affected() != 1 {
        return Ok(None);
    }
    let ids: Vec<Uuid> = parts.iter().map(|_| Uuid::now_v7()).collect();
    let payloads: Vec<Json<&PartPlan>> = parts.iter().map(Json).collect();
    // The parts inherit the export's project (the fair claim counts them against its cap) and
    // its attempts; `created_at` in manifest order, so the claim takes them first to last.
    sqlx::query(
        "INSERT INTO jobs (id, kind, project_id, parent_id, payload, max_attempts, created_at)
         SELECT p.id, 'part', j.project_id, j.id, p.payload, j.max_attempts,
                now() + make_interval(secs => p.n / 1e6)
         FROM jobs j, unnest($2::uuid[], $3::jsonb[]) WITH ORDINALITY AS p (id, payload, n)
         WHERE j.id = $1",
    )
    .bind(claim.job_id)
    .bind(&ids)
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE exports SET parts_total = $2, parts_completed = 0, rows_total = $3,
             rows_written = 0, bytes_written = 0, updated_at = now()
         WHERE id = $1",
    )
    .bind(claim.export_id)
    .bind(parts.len() as i32)
    .bind(rows_total)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(ids))
}

/// A file a part wrote, as it is recorded.
pub struct NewFile<'a> {
    pub seq: i32,
    pub path: &'a str,
    pub object_key: &'a str,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: &'a str,
    pub partition: Option<serde_json::Value>,
}

/// How a part's completion went.
#[derive(Debug)]
pub enum PartDone {
    /// Its claim was lost (cancelled, failed by another part, taken over): nothing recorded.
    Lost,
    /// Recorded; other parts are still to finish.
    Recorded,
    /// Recorded, and it was the last: the export's job is leased to this claim, to write the
    /// manifest and complete the export.
    Last(Claim),
}

/// Records a part's files and its success, fenced on its claim; the last part of its export
/// also takes the export's job (RUNNING again, leased for `lease`). Parts finishing at the same
/// moment take turns on the export's job row, so exactly one of them is the last.
pub async fn complete_part(
    pool: &PgPool,
    claim: &Claim,
    files: &[NewFile<'_>],
    worker_id: &str,
    lease: Duration,
) -> Result<PartDone> {
    let mut tx = pool.begin().await?;
    let parent: Option<String> = sqlx::query_scalar(
        "SELECT status FROM jobs WHERE id = $1 AND status = 'WAITING' FOR UPDATE",
    )
    .bind(claim.export_id)
    .fetch_optional(&mut *tx)
    .await?;
    if parent.is_none() {
        return Ok(PartDone::Lost);
    }
    let done = sqlx::query(
        "UPDATE jobs SET status = 'SUCCEEDED', lease_token = NULL, lease_expires_at = NULL,
             updated_at = now()
         WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING'",
    )
    .bind(claim.job_id)
    .bind(claim.token)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(PartDone::Lost);
    }
    let (mut rows, mut bytes) = (0i64, 0i64);
    for f in files {
        sqlx::query(
            "INSERT INTO export_files (export_id, seq, path, part_id, object_key, row_count,
                 size_bytes, sha256, partition)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(claim.export_id)
        .bind(f.seq)
        .bind(f.path)
        .bind(claim.job_id)
        .bind(f.object_key)
        .bind(f.rows)
        .bind(f.bytes)
        .bind(f.sha256)
        .bind(f.partition.as_ref().map(Json))
        .execute(&mut *tx)
        .await?;
        rows += f.rows;
        bytes += f.bytes;
    }
    sqlx::query(concat!(
        "UPDATE export_uploads SET state = ",
        crate::sql_upload_state!(Completed),
        ", updated_at = now() WHERE job_id = $1 AND attempt = $2"
    ))
    .bind(claim.job_id)
    .bind(claim.attempt)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE exports SET parts_completed = parts_completed + 1,
             rows_written = rows_written + $2, bytes_written = bytes_written + $3,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(claim.export_id)
    .bind(rows)
    .bind(bytes)
    .execute(&mut *tx)
    .await?;
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE parent_id = $1 AND status <> 'SUCCEEDED'",
    )
    .bind(claim.export_id)
    .fetch_one(&mut *tx)
    .await?;
    let outcome = if left > 0 {
        PartDone::Recorded
    } else {
        let token = Uuid::new_v4();
        let attempt: i32 = sqlx::query_scalar(
            "UPDATE jobs SET status = 'RUNNING', lease_token = $2, worker_id = $3,
                 lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
             WHERE id = $1 RETURNING attempts",
        )
        .bind(claim.export_id)
        .bind(token)
        .bind(worker_id)
        .bind(lease.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
        PartDone::Last(Claim {
            job_id: claim.export_id,
            export_id: claim.export_id,
            token,
            attempt,
        })
    };
    tx.commit().await?;
    Ok(outcome)
}

pg_row! {
    /// One file of a completed dataset.
    #[derive(Debug, Clone)]
    pub struct DatasetFile {
        pub seq: i32,
        pub path: String,
        pub object_key: String,
        pub row_count: i64,
        pub size_bytes: i64,
        pub sha256: String,
        pub partition: Option<Json<serde_json::Value>>,
    }
}

const FILE_COLUMNS: &str =
    "SELECT seq, path, object_key, row_count, size_bytes, sha256, partition FROM export_files";

/// A dataset's files in manifest order.
pub async fn files(pool: &PgPool, export_id: Uuid) -> Result<Vec<DatasetFile>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{FILE_COLUMNS} WHERE export_id = $1 ORDER BY seq"
    )))
    .bind(export_id)
    .fetch_all(pool)
    .await?)
}

/// One file of a dataset by its path.
pub async fn file(pool: &PgPool, export_id: Uuid, path: &str) -> Result<Option<DatasetFile>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{FILE_COLUMNS} WHERE export_id = $1 AND path = $2"
    )))
    .bind(export_id)
    .bind(path)
    .fetch_optional(pool)
    .await?)
}

/// Whether every part of the export succeeded (its job taken again to write the manifest).
pub async fn parts_left(pool: &PgPool, export_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE parent_id = $1 AND status <> 'SUCCEEDED'",
    )
    .bind(export_id)
    .fetch_one(pool)
    .await?)
}

/// Datasets that ended without their files being of use (FAILED, CANCELLED, EXPIRED) and whose
/// files may still be stored.
pub async fn ended_datasets(pool: &PgPool, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT id FROM exports WHERE parts_total IS NOT NULL AND files_removed_at IS NULL
             AND status IN (",
        crate::sql_status!(Failed),
        ", ",
        crate::sql_status!(Cancelled),
        ", ",
        crate::sql_status!(Expired),
        ") ORDER BY id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The dataset's files are gone from the store.
pub async fn files_removed(pool: &PgPool, export_id: Uuid) -> Result<()> {
    sqlx::query("UPDATE exports SET files_removed_at = now() WHERE id = $1")
        .bind(export_id)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM export_files WHERE export_id = $1")
        .bind(export_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The free job slots of the live workers (a worker's row is renewed every few seconds).
pub async fn free_slots(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(greatest(concurrency - running, 0)), 0)::bigint FROM workers
         WHERE last_seen > now() - interval '30 seconds'",
    )
    .fetch_one(pool)
    .await?)
}
