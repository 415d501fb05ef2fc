use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::ids::new_id;
use crate::domain::scopes::Scope;
use crate::error::{Error, Result};
use crate::repo::{Page, paginate};

/// A key as stored: its hash, never its secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub project_id: Uuid,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub prefix: String,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pg_row! {
    struct KeyRow {
        id: Uuid,
        project_id: Uuid,
        scopes: Vec<String>,
        created_at: DateTime<Utc>,
        prefix: String,
        last_used_at: Option<DateTime<Utc>>,
        revoked_at: Option<DateTime<Utc>>,
    }
}

const COLUMNS: &str = "id, project_id, scopes, created_at, prefix, last_used_at, revoked_at";

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        ApiKey {
            id: r.id,
            project_id: r.project_id,
            scopes: r.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            created_at: r.created_at,
            prefix: r.prefix,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
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
    let row = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, project_id, key_hash, prefix, scopes) VALUES ($1, $2, $3, $4, $5)
         RETURNING {COLUMNS}"
    )))
    .bind(new_id())
    .bind(project_id)
    .bind(key_hash)
    .bind(prefix)
    .bind(&names)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// Live (unrevoked) keys one project may hold.
pub const MAX_LIVE_KEYS: i64 = 1_000;

/// A new key for a project that holds fewer than `MAX_LIVE_KEYS` live keys (else 409). The
/// project's row is locked first, so concurrent creates count each other.
pub async fn create_capped(
    pool: &PgPool,
    project_id: Uuid,
    key_hash: &[u8],
    prefix: &str,
    scopes: &[Scope],
) -> Result<ApiKey> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM projects WHERE id = $1 FOR UPDATE")
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE project_id = $1 AND revoked_at IS NULL",
    )
    .bind(project_id)
    .fetch_one(&mut *tx)
    .await?;
    if live >= MAX_LIVE_KEYS {
        return Err(Error::Conflict(format!(
            "this project already has {MAX_LIVE_KEYS} live API keys, the most it may hold; \
             revoke one first"
        )));
    }
    let key = create(&mut tx, project_id, key_hash, prefix, scopes).await?;
    tx.commit().await?;
    Ok(key)
}

/// The live (not revoked) key with this hash.
pub async fn find_active(pool: &PgPool, key_hash: &[u8]) -> Result<Option<ApiKey>> {
    let row = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
    )))
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// The project's keys, newest first (revoked ones too), a page at a time.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    page: Page,
) -> Result<(Vec<ApiKey>, Option<Uuid>)> {
    let rows = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE project_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    )))
    .bind(project_id)
    .bind(page.before)
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    let keys: Vec<ApiKey> = rows.into_iter().map(Into::into).collect();
    Ok(paginate(keys, page, |k| k.id))
}

/// Records that a key was used (at most about once a minute per key: callers check first).
pub async fn touch(pool: &PgPool, key_id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '30 seconds')",
    )
    .bind(key_id)
    .execute(pool)
    .await?;
    Ok(())
}

pub enum Revoked {
    Done,
    /// No live key of the project has this id.
    NotFound,
    /// It is the project's last live admin key: revoking it would lock the project out.
    LastAdmin,
}

/// Revokes a key of the project, unless it is the project's last live admin key.
pub async fn revoke(pool: &PgPool, project_id: Uuid, key_id: Uuid) -> Result<Revoked> {
    let mut tx = pool.begin().await?;
    // The project's live keys, locked: two revokes of its last two admin keys take turns.
    let live: Vec<(Uuid, Vec<String>)> = sqlx::query_as(
        "SELECT id, scopes FROM api_keys WHERE project_id = $1 AND revoked_at IS NULL
         ORDER BY id FOR UPDATE",
    )
    .bind(project_id)
    .fetch_all(&mut *tx)
    .await?;
    let is_admin = |s: &Vec<String>| s.iter().any(|s| s == Scope::Admin.as_str());
    let Some((_, scopes)) = live.iter().find(|(id, _)| *id == key_id) else {
        return Ok(Revoked::NotFound);
    };
    if is_admin(scopes) && live.iter().filter(|(_, s)| is_admin(s)).count() == 1 {
        return Ok(Revoked::LastAdmin);
    }
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
    // Every API process forgets the keys it verified (delivered on commit).
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::auth::KEYS_CHANNEL)
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Revoked::Done)
}
