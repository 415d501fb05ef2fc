//! The audit log's table (`audit_events`): batches written by the API's writer, pages read by
//! admins, the janitor's retention pass.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

/// Every event type the log holds.
pub const TYPES: [&str; 8] = [
    "export.created",
    "export.cancelled",
    "export.downloaded",
    "import.created",
    "key.created",
    "key.revoked",
    "webhook.created",
    "webhook.deleted",
];

pg_row! {
    /// One event: who (`actor`: the key's prefix `wk_…`, or "signed link") did what (`type`),
    /// when, and for downloads how (`route`: stream, redirect or signed link; the `bytes`
    /// sent; the `range` served, `bytes=FIRST-LAST`; the `client`'s address). As stored, and
    /// as `GET /v1/audit` shows it.
    #[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
    pub struct AuditEvent {
        pub id: Uuid,
        #[serde(skip)]
        #[schema(ignore)]
        pub project_id: Uuid,
        pub at: DateTime<Utc>,
        #[serde(rename = "type")]
        #[schema(rename = "type")]
        pub kind: String,
        pub actor: String,
        #[serde(rename = "exportId", skip_serializing_if = "Option::is_none")]
        #[schema(rename = "exportId")]
        pub export_id: Option<Uuid>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub route: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub bytes: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub range: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub client: Option<String>,
        /// What else the event names (a key's or webhook's id, an export's format).
        #[serde(skip_serializing_if = "is_empty")]
        #[schema(value_type = Option<Object>)]
        pub detail: sqlx::types::Json<serde_json::Value>,
    }
}

fn is_empty(d: &sqlx::types::Json<serde_json::Value>) -> bool {
    d.0.as_object().is_none_or(|o| o.is_empty())
}

const COLUMNS: &str =
    "id, project_id, at, type AS kind, actor, export_id, route, bytes, range, client, detail";

/// Writes a batch in one statement.
pub async fn insert(pool: &PgPool, events: &[AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&AuditEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO audit_events (id, project_id, at, type, actor, export_id, route, bytes,
             range, client, detail)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[],
             $6::uuid[], $7::text[], $8::bigint[], $9::text[], $10::text[], $11::jsonb[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.project_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
    .bind(col(|e| e.kind.clone()))
    .bind(col(|e| e.actor.clone()))
    .bind(events.iter().map(|e| e.export_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.route.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.bytes).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.range.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.client.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.detail.clone()).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

/// What a read of the log selects.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub kind: Option<String>,
    /// Events older than this one (the previous page's last).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// A project's events, newest first.
pub async fn page(pool: &PgPool, project_id: Uuid, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_events
         WHERE project_id = $1 AND ($2::uuid IS NULL OR id < $2)
           AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4)
           AND ($5::text IS NULL OR type = $5)
         ORDER BY id DESC LIMIT $6"
    )))
    .bind(project_id)
    .bind(q.before)
    .bind(q.since)
    .bind(q.until)
    .bind(q.kind.as_deref())
    .bind(q.limit)
    .fetch_all(pool)
    .await?)
}

/// Removes events older than `ttl` (at most `limit` a call); how many went.
pub async fn expire(pool: &PgPool, ttl: std::time::Duration, limit: i64) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM audit_events WHERE id IN (
             SELECT id FROM audit_events WHERE at < now() - make_interval(secs => $1) LIMIT $2)",
    )
    .bind(ttl.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}
