//! Uploaded files (the bundles imports read) and what an import writes: workflows and runs in
//! the import's one transaction, and its completion, fenced on its claim, in the same
//! transaction (so a lost claim or a crash leaves nothing, and a retry starts clean).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use super::exports::Claim;
use super::runs::copy_statement;
use super::workflows::Workflow;
use crate::error::Result;

pg_row! {
    #[derive(Debug, Clone)]
    pub struct StoredFile {
        pub id: Uuid,
        pub project_id: Uuid,
        pub object_key: String,
        pub file_name: String,
        pub size_bytes: i64,
        pub sha256: String,
        pub created_at: DateTime<Utc>,
        pub expires_at: DateTime<Utc>,
    }
}

const FILE_COLUMNS: &str =
    "id, project_id, object_key, file_name, size_bytes, sha256, created_at, expires_at";

pub struct NewFile<'a> {
    pub id: Uuid,
    pub project_id: Uuid,
    pub object_key: &'a str,
    pub file_name: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub ttl: std::time::Duration,
}

pub async fn create_file(pool: &PgPool, f: NewFile<'_>) -> Result<StoredFile> {
    Ok(sqlx::query_as::<_, StoredFile>(AssertSqlSafe(format!(
        "INSERT INTO files (id, project_id, object_key, file_name, size_bytes, sha256, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
         RETURNING {FILE_COLUMNS}"
    )))
    .bind(f.id)
    .bind(f.project_id)
    .bind(f.object_key)
    .bind(f.file_name)
    .bind(f.size_bytes)
    .bind(f.sha256)
    .bind(f.ttl.as_secs_f64())
    .fetch_one(pool)
    .await?)
}

/// A file of the project that has not expired.
pub async fn get_file(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<StoredFile>> {
    Ok(sqlx::query_as::<_, StoredFile>(AssertSqlSafe(format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND project_id = $2 AND expires_at > now()"
    )))
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?)
}

/// Files past their lifetime, for the janitor to delete (object first, then the record).
pub async fn expired_files(pool: &PgPool, limit: i64) -> Result<Vec<StoredFile>> {
    Ok(sqlx::query_as::<_, StoredFile>(AssertSqlSafe(format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE expires_at <= now() ORDER BY expires_at LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn delete_file(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM files WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Locks the workflow for a run's rows (runs into one workflow take turns) and returns the
/// `_id` its first row gets.
pub async fn next_row_id(tx: &mut PgConnection, workflow_id: Uuid) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT next_row_id FROM workflows WHERE id = $1 FOR UPDATE")
            .bind(workflow_id)
            .fetch_one(&mut *tx)
            .await?,
    )
}

/// The COPY statement a run's tuples go into: `_id, run_id, c1..cn` in binary.
pub fn run_copy_statement(wf: &Workflow) -> String {
    copy_statement(wf)
}

/// Records run `id`, whose `rows` rows were copied in from `first_row_id` on.
pub async fn add_run_with_id(
    tx: &mut PgConnection,
    workflow_id: Uuid,
    id: Uuid,
    first_row_id: i64,
    rows: i64,
    executed_at: DateTime<Utc>,
) -> Result<Uuid> {
    sqlx::query("UPDATE workflows SET next_row_id = next_row_id + $2 WHERE id = $1")
        .bind(workflow_id)
        .bind(rows)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO runs (id, workflow_id, row_count, first_row_id, executed_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(workflow_id)
    .bind(rows)
    .bind(first_row_id)
    .bind(executed_at)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Completes the import in its own transaction, fenced on the claim: false (and the caller
/// rolls back everything it wrote) when the claim was lost or the import cancelled.
pub async fn complete_import(
    tx: &mut PgConnection,
    claim: &Claim,
    rows: i64,
    result: &serde_json::Value,
) -> Result<bool> {
    let done = sqlx::query(concat!(
        "WITH job AS (
           UPDATE jobs SET status = 'SUCCEEDED', lease_token = NULL, lease_expires_at = NULL,
               updated_at = now()
           WHERE id = $1 AND lease_token = $2 AND kind = 'import' AND status = 'RUNNING'
           RETURNING id)
         UPDATE exports SET status = ",
        crate::sql_status!(Completed),
        ", completed_at = now(), updated_at = now(), row_count = $3, rows_written = $3,
             rows_total = $3, result = $4, error_code = NULL, error_message = NULL
         WHERE id IN (SELECT id FROM job) AND status = ",
        crate::sql_status!(InProgress)
    ))
    .bind(claim.export_id)
    .bind(claim.token)
    .bind(rows)
    .bind(Json(result))
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
