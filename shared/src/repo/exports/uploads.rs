//! Uploads begun by attempts, tracked so the janitor can abort and delete what a dead attempt
//! left (S3 servers differ in ListMultipartUploads support).

use std::time::Duration;

use sqlx::PgPool;

use super::Claim;
use crate::domain::states::UploadState;
use crate::error::Result;

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
