use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{Page, paginate};
use crate::domain::ids::new_id;
use crate::domain::schema::Field;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Workflow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub fields: Vec<Field>,
    /// Generated from the id (`rows_<hex>`), never from client input.
    pub table_name: String,
    pub created_at: DateTime<Utc>,
}

pg_row! {
    struct WorkflowRow {
        id: Uuid,
        project_id: Uuid,
        name: String,
        schema: Json<Vec<Field>>,
        table_name: String,
        created_at: DateTime<Utc>,
    }
}

impl From<WorkflowRow> for Workflow {
    fn from(r: WorkflowRow) -> Self {
        Workflow {
            id: r.id,
            project_id: r.project_id,
            name: r.name,
            fields: r.schema.0,
            table_name: r.table_name,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str = "id, project_id, name, schema, table_name, created_at";

/// The workflow a claim returned beside its export (`wf_`-prefixed columns; NULL when there is
/// none). Only in this module does a row become a `Workflow`.
pub(crate) fn from_claim_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Option<Workflow>> {
    use sqlx::Row;
    let Some(id) = row.try_get::<Option<Uuid>, _>("wf_id")? else {
        return Ok(None);
    };
    Ok(Some(Workflow {
        id,
        project_id: row.try_get("wf_project_id")?,
        name: row.try_get("wf_name")?,
        fields: row.try_get::<Json<Vec<Field>>, _>("wf_schema")?.0,
        table_name: row.try_get("wf_table_name")?,
        created_at: row.try_get("wf_created_at")?,
    }))
}

/// Records the workflow and creates its typed rows table, in one transaction.
pub async fn create(
    pool: &PgPool,
    project_id: Uuid,
    name: &str,
    fields: &[Field],
) -> Result<Workflow> {
    let mut tx = pool.begin().await?;
    let wf = create_in(&mut tx, project_id, name, fields).await?;
    tx.commit().await?;
    Ok(wf)
}

/// `create` inside the caller's transaction (an import creates all its workflows in one).
pub async fn create_in(
    tx: &mut sqlx::PgConnection,
    project_id: Uuid,
    name: &str,
    fields: &[Field],
) -> Result<Workflow> {
    let id = new_id();
    let table_name = format!("rows_{}", id.simple());
    let row = sqlx::query_as::<_, WorkflowRow>(AssertSqlSafe(format!(
        "INSERT INTO workflows (id, project_id, name, schema, table_name) VALUES ($1, $2, $3, $4, $5)
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(project_id)
    .bind(name)
    .bind(Json(fields))
    .bind(&table_name)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(AssertSqlSafe(rows_table_ddl(&table_name, fields)))
        .execute(&mut *tx)
        .await?;
    Ok(row.into())
}

/// DDL from generated names and a closed set of types only: nothing here comes from a client.
fn rows_table_ddl(table: &str, fields: &[Field]) -> String {
    let mut ddl = format!("CREATE TABLE {table} (_id bigint NOT NULL, run_id uuid NOT NULL");
    for (i, f) in fields.iter().enumerate() {
        ddl.push_str(&format!(
            ", {} {}",
            Field::column(i),
            f.field_type.sql_type()
        ));
        if !f.nullable {
            ddl.push_str(" NOT NULL");
        }
    }
    ddl.push_str(", PRIMARY KEY (run_id, _id))");
    ddl
}

pub async fn get(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<Workflow>> {
    let row = sqlx::query_as::<_, WorkflowRow>(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflows WHERE id = $1 AND project_id = $2"
    )))
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    page: Page,
) -> Result<(Vec<Workflow>, Option<Uuid>)> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {COLUMNS} FROM workflows WHERE project_id = "
    ));
    q.push_bind(project_id);
    if let Some(before) = page.before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit + 1);
    let rows: Vec<WorkflowRow> = q.build_query_as().fetch_all(pool).await?;
    let (rows, next) = paginate(rows, page, |r| r.id);
    Ok((rows.into_iter().map(Into::into).collect(), next))
}

/// A workflow with the figures of its runs (Kadoa's workflow shape).
#[derive(Debug, Clone)]
pub struct WorkflowSummary {
    pub workflow: Workflow,
    /// Rows over all runs.
    pub total_records: i64,
    /// The latest run's executedAt.
    pub finished_at: Option<DateTime<Utc>>,
}

pg_row! {
    struct SummaryRow {
        id: Uuid,
        project_id: Uuid,
        name: String,
        schema: Json<Vec<Field>>,
        table_name: String,
        created_at: DateTime<Utc>,
        total_records: i64,
        finished_at: Option<DateTime<Utc>>,
    }
}

const SUMMARY: &str = "SELECT w.id, w.project_id, w.name, w.schema, w.table_name, w.created_at,
        COALESCE((SELECT sum(r.row_count) FROM runs r WHERE r.workflow_id = w.id), 0)::bigint
            AS total_records,
        (SELECT max(r.executed_at) FROM runs r WHERE r.workflow_id = w.id) AS finished_at
    FROM workflows w";

impl From<SummaryRow> for WorkflowSummary {
    fn from(r: SummaryRow) -> Self {
        WorkflowSummary {
            workflow: Workflow {
                id: r.id,
                project_id: r.project_id,
                name: r.name,
                fields: r.schema.0,
                table_name: r.table_name,
                created_at: r.created_at,
            },
            total_records: r.total_records,
            finished_at: r.finished_at,
        }
    }
}

/// The project's workflows whose name contains `search` (case-insensitive), newest first,
/// `skip` then `limit` of them, and how many match in all.
pub async fn search(
    pool: &PgPool,
    project_id: Uuid,
    search: Option<&str>,
    skip: i64,
    limit: i64,
) -> Result<(Vec<WorkflowSummary>, i64)> {
    let rows = sqlx::query_as::<_, SummaryRow>(AssertSqlSafe(format!(
        "{SUMMARY} WHERE w.project_id = $1 AND ($2::text IS NULL OR strpos(lower(w.name), lower($2)) > 0)
         ORDER BY w.id DESC OFFSET $3 LIMIT $4"
    )))
    .bind(project_id)
    .bind(search)
    .bind(skip)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflows w
         WHERE w.project_id = $1 AND ($2::text IS NULL OR strpos(lower(w.name), lower($2)) > 0)",
    )
    .bind(project_id)
    .bind(search)
    .fetch_one(pool)
    .await?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}

pub async fn summary(pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<WorkflowSummary>> {
    let row = sqlx::query_as::<_, SummaryRow>(AssertSqlSafe(format!(
        "{SUMMARY} WHERE w.id = $1 AND w.project_id = $2"
    )))
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// Every workflow of the project, oldest first (bundles of a whole project; a project has
/// hundreds of workflows at most, so one query).
pub async fn all_of_project(pool: &PgPool, project_id: Uuid) -> Result<Vec<Workflow>> {
    let rows = sqlx::query_as::<_, WorkflowRow>(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflows WHERE project_id = $1 ORDER BY id"
    )))
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The workflow of the project with this exact name, the newest if several share it.
pub async fn get_by_name(pool: &PgPool, project_id: Uuid, name: &str) -> Result<Option<Workflow>> {
    let row = sqlx::query_as::<_, WorkflowRow>(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflows WHERE project_id = $1 AND name = $2
         ORDER BY id DESC LIMIT 1"
    )))
    .bind(project_id)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schema::FieldType;

    #[test]
    fn ddl_uses_generated_names_only() {
        let fields = vec![
            Field {
                name: "x' or '1'='1".into(),
                field_type: FieldType::String,
                nullable: false,
            },
            Field {
                name: "p".into(),
                field_type: FieldType::Number,
                nullable: true,
            },
        ];
        assert_eq!(
            rows_table_ddl("rows_abc", &fields),
            "CREATE TABLE rows_abc (_id bigint NOT NULL, run_id uuid NOT NULL, c1 text NOT NULL, \
             c2 double precision, PRIMARY KEY (run_id, _id))"
        );
    }
}
