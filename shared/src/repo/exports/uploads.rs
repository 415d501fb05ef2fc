//! Object writes begun by attempts, recorded before they start, so the janitor can remove what
//! a dead attempt left (S3 servers differ in ListMultipartUploads support; a crashed process
//! cannot clean up after itself).

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::Claim;
use crate::domain::states::{ExportStatus, UploadState};
use crate::error::Result;

pg_row! {
    /// A write whose attempt is over without completing it.
    #[derive(Debug)]
    pub struct OrphanWrite {
        pub export_id: Uuid,
        /// The job whose attempt wrote it: the export's own, or one of its parts.
        pub job_id: Uuid,
        pub attempt: i32,
        pub object_key: String,
        pub write_token: Option<String>,
        /// A later attempt writes the same key (a dataset's file is named by its path, not its
        /// attempt): only this write's partial state goes, never the object.
        pub superseded: bool,
    }
}

/// Writes left OPEN by attempts that are over (a killed worker), older than `age`.
pub async fn orphan_writes(pool: &PgPool, age: Duration) -> Result<Vec<OrphanWrite>> {
    Ok(sqlx::query_as(
        "SELECT u.export_id, u.job_id, u.attempt, u.object_key, u.write_token,
             EXISTS (SELECT 1 FROM export_uploads n WHERE n.export_id = u.export_id
                     AND n.object_key = u.object_key AND n.created_at > u.created_at) AS superseded
         FROM export_uploads u JOIN exports e ON e.id = u.export_id JOIN jobs j ON j.id = u.job_id
         WHERE u.state = $2 AND u.created_at < now() - make_interval(secs => $1)
             AND (e.status <> $3 OR j.attempts > u.attempt OR j.lease_expires_at < now()
                  OR j.status <> 'RUNNING')
         LIMIT 100",
    )
    .bind(age.as_secs_f64())
    .bind(UploadState::Open)
    .bind(ExportStatus::InProgress)
    .fetch_all(pool)
    .await?)
}

/// The attempt is about to write `key`.
pub async fn record_write(pool: &PgPool, claim: &Claim, key: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO export_uploads (export_id, job_id, attempt, object_key)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(claim.export_id)
    .bind(claim.job_id)
    .bind(claim.attempt)
    .bind(key)
    .execute(pool)
    .await?;
    Ok(())
}

/// The store announced partial state for the attempt's write.
pub async fn note_write_token(pool: &PgPool, claim: &Claim, key: &str, token: &str) -> Result<()> {
    sqlx::query(
        "UPDATE export_uploads SET write_token = $3, updated_at = now()
         WHERE job_id = $1 AND attempt = $2 AND object_key = $4",
    )
    .bind(claim.job_id)
    .bind(claim.attempt)
    .bind(token)
    .bind(key)
    .execute(pool)
    .await?;
    Ok(())
}

/// The write of `key` by the job's attempt is over (`state`: its outcome).
pub async fn finish_write(
    pool: &PgPool,
    job_id: Uuid,
    attempt: i32,
    key: &str,
    state: UploadState,
) -> Result<()> {
    sqlx::query(
        "UPDATE export_uploads SET state = $3, updated_at = now()
         WHERE job_id = $1 AND attempt = $2 AND object_key = $4",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(state)
    .bind(key)
    .execute(pool)
    .await?;
    Ok(())
}
