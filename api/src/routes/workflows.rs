use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_shared::domain::schema::{Field, parse_schema, validate_workflow_name};
use wharf_shared::domain::scopes::Scope;
use wharf_shared::repo::workflows::{self, Workflow};

use super::{List, ListQuery};
use crate::app::workflows::find;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// 1-200 characters of any text.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Ordered fields: 1 to 500, names of `[A-Za-z0-9_]` (1-64, not starting with `_`), unique.
    #[schema(value_type = Vec<Field>, min_items = 1, max_items = 500)]
    pub schema: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowDto {
    pub id: uuid::Uuid,
    pub name: String,
    pub schema: Vec<Field>,
    pub created_at: DateTime<Utc>,
}

impl From<Workflow> for WorkflowDto {
    fn from(w: Workflow) -> Self {
        WorkflowDto {
            id: w.id,
            name: w.name,
            schema: w.fields,
            created_at: w.created_at,
        }
    }
}

/// Creates a workflow: a dataset with a declared, typed schema (write scope).
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = CreateWorkflow,
    responses((status = 201, body = WorkflowDto), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope),
        (status = 413, body = crate::error::ErrorEnvelope), (status = 415, body = crate::error::ErrorEnvelope)))]
#[post("/v1/workflows")]
pub async fn create_workflow(
    auth: Auth,
    state: web::Data<AppState>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Write)?;
    let body: CreateWorkflow = body.parse()?;
    validate_workflow_name(&body.name)?;
    let fields = parse_schema(&body.schema)?;
    let wf = workflows::create(&state.pool, principal.project_id, &body.name, &fields).await?;
    tracing::info!(workflow_id = %wf.id, fields = fields.len(), "workflow created");
    Ok(HttpResponse::Created().json(WorkflowDto::from(wf)))
}

/// Lists the project's workflows, newest first (read scope).
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(ListQuery),
    responses((status = 200, body = List<WorkflowDto>), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope)))]
#[get("/v1/workflows")]
pub async fn list_workflows(
    auth: Auth,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let (rows, next) = workflows::list(&state.pool, principal.project_id, query.page()?).await?;
    Ok(HttpResponse::Ok().json(List::new(
        rows.into_iter().map(WorkflowDto::from).collect(),
        next,
    )))
}

/// One workflow with its schema (read scope).
#[utoipa::path(get, path = "/v1/workflows/{workflowId}", tag = "workflows",
    params(("workflowId" = uuid::Uuid, Path)),
    responses((status = 200, body = WorkflowDto), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/v1/workflows/{workflowId}")]
pub async fn get_workflow(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let wf = find(&state, principal.project_id, &path).await?;
    Ok(HttpResponse::Ok().json(WorkflowDto::from(wf)))
}
