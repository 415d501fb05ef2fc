use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::ids::new_id;
use crate::error::{Error, Result};

pg_row! {
    #[derive(Debug, Clone)]
    pub struct Project {
        pub id: Uuid,
        pub slug: String,
        pub name: String,
        pub created_at: DateTime<Utc>,
    }
}

/// A project and its first key, in one transaction (both or neither).
pub async fn create_with_key(
    pool: &PgPool,
    slug: &str,
    name: &str,
    key: &crate::auth::NewKey,
    scopes: &[crate::domain::scopes::Scope],
) -> Result<(Project, super::keys::ApiKey)> {
    let mut tx = pool.begin().await?;
    let project = create(&mut tx, slug, name).await?;
    let api_key = super::keys::create(&mut tx, project.id, &key.hash, &key.prefix, scopes).await?;
    tx.commit().await?;
    Ok((project, api_key))
}

async fn create(conn: &mut PgConnection, slug: &str, name: &str) -> Result<Project> {
    let res = sqlx::query_as::<_, Project>(
        "INSERT INTO projects (id, slug, name) VALUES ($1, $2, $3) RETURNING id, slug, name, created_at",
    )
    .bind(new_id())
    .bind(slug)
    .bind(name)
    .fetch_one(conn)
    .await;
    match res {
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(Error::Conflict(
            format!("slug: a project with slug \"{slug}\" already exists"),
        )),
        other => Ok(other?),
    }
}

pub async fn get_by_slug(pool: &PgPool, slug: &str) -> Result<Option<Project>> {
    Ok(sqlx::query_as::<_, Project>(
        "SELECT id, slug, name, created_at FROM projects WHERE slug = $1",
    )
    .bind(slug)
    .fetch_optional(pool)
    .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Project>> {
    Ok(sqlx::query_as::<_, Project>(
        "SELECT id, slug, name, created_at FROM projects WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}
