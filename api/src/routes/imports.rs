//! Native imports (API.md, "Bundles (definition + data) and imports"): an uploaded bundle made
//! into a project's workflows by a job of the ledger.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use wharf_shared::Error;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::{ExportStatus, JobKind};
use wharf_shared::repo::exports::{self, ExportRecord};

use crate::app::jobs::import_upload;
use crate::app::views::{ExportErrorDto, ProgressDto, export_dto, imported_workflows};
use crate::app::workflows::find;
use crate::auth::{Auth, parse_id};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Add a one-workflow bundle's runs to this workflow (same schema) instead of creating one.
    #[param(value_type = Option<uuid::Uuid>)]
    pub workflow_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportCreated {
    pub import_id: uuid::Uuid,
    pub dock_status_id: uuid::Uuid,
    pub status: ExportStatus,
    pub status_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedWorkflow {
    /// The workflow's id in the bundle.
    pub source_id: Option<uuid::Uuid>,
    pub workflow_id: Option<uuid::Uuid>,
    pub name: Option<String>,
    pub runs: i64,
    pub rows: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportDto {
    pub import_id: uuid::Uuid,
    pub dock_status_id: uuid::Uuid,
    /// QUEUED, IN_PROGRESS, COMPLETED or FAILED.
    pub status: ExportStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub progress: ProgressDto,
    /// What the import created (once COMPLETED).
    pub workflows: Vec<ImportedWorkflow>,
    pub error: Option<ExportErrorDto>,
    pub status_url: String,
}

fn import_dto(state: &AppState, rec: &ExportRecord) -> ImportDto {
    let e = export_dto(&state.settings, rec);
    let workflows = imported_workflows(rec)
        .iter()
        .map(|w| ImportedWorkflow {
            source_id: w
                .get("sourceId")
                .and_then(Value::as_str)
                .and_then(|s| uuid::Uuid::parse_str(s).ok()),
            workflow_id: w
                .get("workflowId")
                .and_then(Value::as_str)
                .and_then(|s| uuid::Uuid::parse_str(s).ok()),
            name: w.get("name").and_then(Value::as_str).map(str::to_string),
            runs: w.get("runs").and_then(Value::as_i64).unwrap_or(0),
            rows: w.get("rows").and_then(Value::as_i64).unwrap_or(0),
        })
        .collect();
    ImportDto {
        import_id: rec.id,
        dock_status_id: rec.dock_status_id,
        status: e.status,
        created_at: rec.created_at,
        started_at: rec.started_at,
        completed_at: rec.completed_at,
        attempts: rec.attempts,
        progress: e.progress,
        workflows,
        error: e.error,
        status_url: format!("{}/v1/imports/{}", state.settings.public_url, rec.id),
    }
}

/// Imports a bundle (admin scope): the body, a ZIP, is streamed to the object store and a worker
/// checks every file, checksum and schema before it writes all of it or none of it.
#[utoipa::path(post, path = "/v1/imports", tag = "imports", params(ImportQuery),
    request_body(description = "A Wharf bundle (a ZIP file)",
        content((Vec<u8> = "application/zip"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 202, body = ImportCreated), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope),
        (status = 408, body = crate::error::ErrorEnvelope), (status = 413, body = crate::error::ErrorEnvelope),
        (status = 415, body = crate::error::ErrorEnvelope)))]
#[post("/v1/imports")]
pub async fn create_import(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ImportQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let target = match &query.workflow_id {
        Some(raw) => Some(find(&state, principal.project_id, raw).await?.id),
        None => None,
    };
    let rec = import_upload(&state, &req, principal, target, body).await?;
    Ok(HttpResponse::Accepted().json(ImportCreated {
        import_id: rec.id,
        dock_status_id: rec.dock_status_id,
        status: rec.status,
        status_url: format!("{}/v1/imports/{}", state.settings.public_url, rec.id),
    }))
}

/// An import's status and, once completed, what it created (admin scope).
#[utoipa::path(get, path = "/v1/imports/{importId}", tag = "imports", params(("importId" = uuid::Uuid, Path)),
    responses((status = 200, body = ImportDto), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/v1/imports/{importId}")]
pub async fn get_import(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let id = parse_id("importId", &path)?;
    let rec = exports::get_job(&state.pool, principal.project_id, id)
        .await?
        .filter(|r| r.kind == JobKind::Import)
        .ok_or(Error::NotFound("import"))?;
    Ok(HttpResponse::Ok().json(import_dto(&state, &rec)))
}
