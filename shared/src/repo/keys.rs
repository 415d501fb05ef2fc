use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::ids::new_id;
use crate::domain::scopes::Scope;
use crate::error::Result;

/// A key as stored: its hash, never its secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub project_id: Uuid,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    project_id: Uuid,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        ApiKey {
            id: r.id,
            project_id: r.project_id,
            scopes: r.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            created_at: r.created_at,
        }
    }
}

pub async fn create(
    conn: &mut PgConnection,
    project_id: Uuid,
    key_hash: &[u8],
    prefix: &str,
    scopes: &[Scope],
) -> Result<ApiKey> {
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let row = sqlx::query_as::<_, KeyRow>(
        "INSERT INTO api_keys (id, project_id, key_hash, prefix, scopes) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, project_id, scopes, created_at",
    )
    .bind(new_id())
    .bind(project_id)
    .bind(key_hash)
    .bind(prefix)
    .bind(&names)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// The live (not revoked) key with this hash.
pub async fn find_active(pool: &PgPool, key_hash: &[u8]) -> Result<Option<ApiKey>> {
    let row = sqlx::query_as::<_, KeyRow>(
        "SELECT id, project_id, scopes, created_at FROM api_keys
         WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// Revokes a key of the project; false when the project has no such live key.
pub async fn revoke(pool: &PgPool, project_id: Uuid, key_id: Uuid) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now()
         WHERE id = $1 AND project_id = $2 AND revoked_at IS NULL",
    )
    .bind(key_id)
    .bind(project_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
