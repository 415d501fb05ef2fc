//! Retention: completed exports past `expiresAt` become EXPIRED and lose their object.

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

/// Retention: marks due exports EXPIRED (downloads answer 410 from then on), then returns
/// expired exports whose object still exists. Safe in many processes: each step is idempotent.
pub async fn expire_due(pool: &PgPool, limit: i64) -> Result<Vec<(Uuid, String)>> {
    sqlx::query(concat!(
        "UPDATE exports SET status = ",
        crate::sql_status!(Expired),
        ", updated_at = now()
         WHERE status = ",
        crate::sql_status!(Completed),
        " AND expires_at <= now()"
    ))
    .execute(pool)
    .await?;
    Ok(sqlx::query_as(concat!(
        "SELECT id, object_key FROM exports WHERE status = ",
        crate::sql_status!(Expired),
        " AND object_key IS NOT NULL
         ORDER BY id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Records that an expired export's object is gone.
pub async fn forget_object(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query(concat!(
        "UPDATE exports SET object_key = NULL WHERE id = $1 AND status = ",
        crate::sql_status!(Expired)
    ))
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
