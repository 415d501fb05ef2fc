//! Kore.ai's routes (API.md, "Kore.ai"): a workflow's bundle export, its dock status, the upload
//! of a bundle and its import, in Kore's shapes and ids.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wharf_shared::Error;
use wharf_shared::auth::Principal;
use wharf_shared::domain::schema::validate_workflow_name;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::{DockStatus, ExportScope, JobKind};
use wharf_shared::files;
use wharf_shared::repo::exports;

use crate::app::audit::By;
use crate::app::exports::require_for;
use crate::app::jobs::{
    content_length_over, create_job, new_job, small_json, upload_limits, uploaded_file,
};
use crate::app::views::{ExportErrorDto, ProgressDto, dock_dto};
use crate::app::workflows::find;
use crate::auth::{Auth, parse_id};
use crate::error::ApiError;
use crate::request_id;
use crate::state::AppState;
use wharf_shared::views::signed_link;

/// A Kore id: `PREFIX<uuid>` or the bare UUID; anything else is 400 naming the parameter.
fn kore_id(name: &str, prefix: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    parse_id(name, raw.strip_prefix(prefix).unwrap_or(raw))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KoreExportQuery {
    /// Kore's flow id: accepted and ignored.
    pub flow_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KoreResponse {
    /// The signed, keyless link to the bundle (409 until it is ready).
    #[serde(rename = "downloadUrl", skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
}

/// Kore.ai's answer to an export or import request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KoreJob {
    /// `ds-` + the dock status id.
    pub dock_status_id: String,
    pub workflow_id: Option<uuid::Uuid>,
    /// WORKFLOWS.
    pub job_type: String,
    /// EXPORT or IMPORT.
    pub action: String,
    /// IN_PROGRESS, SUCCESS, FAILED (or CANCELLED, EXPIRED).
    pub status: DockStatus,
    /// `workflow-ej-` + the export id (exports only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<KoreResponse>,
}

/// Kore.ai: exports a workflow (its definition and every run) as a bundle (read scope).
#[utoipa::path(post, path = "/api/public/workflows/{workflowId}/export", tag = "compat",
    params(("workflowId" = String, Path, description = "A workflow id, bare or as Kore prints it"), KoreExportQuery),
    responses((status = 200, body = KoreJob), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope),
        (status = 429, description = "WHARF_RATE_LIMIT, or WHARF_PROJECT_QUEUE_MAX jobs already queued", body = crate::error::ErrorEnvelope)))]
#[post("/api/public/workflows/{workflowId}/export")]
pub async fn kore_export(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    _query: web::Query<KoreExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let id = kore_id("workflowId", "workflow-", &path)?;
    let wf = find(&state, principal.project_id, &id.to_string()).await?;
    let rid = request_id::current();
    let rec = create_job(
        &state,
        &By::key(&req, principal),
        new_job(
            &state,
            principal,
            JobKind::Export,
            ExportScope::Workflow,
            Some(wf.id),
            "WORKFLOWS",
            &rid,
        ),
    )
    .await?;
    let url = signed_link(&state.settings, &rec).map(|(u, _)| u);
    Ok(no_store(HttpResponse::Ok()).json(KoreJob {
        dock_status_id: format!("ds-{}", rec.dock_status_id),
        workflow_id: Some(wf.id),
        job_type: "WORKFLOWS".into(),
        action: "EXPORT".into(),
        status: DockStatus::InProgress,
        export_job_id: Some(format!("workflow-ej-{}", rec.id)),
        response: Some(KoreResponse { download_url: url }),
    }))
}

fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    b
}

/// Kore.ai's dock status of an export or import.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KoreDockStatus {
    /// `ds-` + the dock status id.
    #[serde(rename = "_id")]
    pub id: String,
    pub workflow_id: Option<uuid::Uuid>,
    pub job_type: String,
    pub action: String,
    pub status: DockStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<KoreResponse>,
    pub progress: ProgressDto,
    pub error: Option<ExportErrorDto>,
}

/// Kore.ai: the dock status of a workflow export or import (read scope).
#[utoipa::path(get, path = "/api/public/dock-status/{dockStatusId}", tag = "compat",
    params(("dockStatusId" = String, Path, description = "ds-<uuid> or the bare UUID")),
    responses((status = 200, body = KoreDockStatus), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/api/public/dock-status/{dockStatusId}")]
pub async fn kore_dock_status(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let id = kore_id("dockStatusId", "ds-", &path)?;
    let rec = exports::get_by_dock_status(&state.pool, principal.project_id, id)
        .await?
        .ok_or(Error::NotFound("dock status"))?;
    require_for(principal, &rec)?;
    let dock = dock_dto(&state, &rec);
    let export = rec.kind == JobKind::Export;
    let url = if export {
        signed_link(&state.settings, &rec).map(|(u, _)| u)
    } else {
        None
    };
    Ok(no_store(HttpResponse::Ok()).json(KoreDockStatus {
        id: format!("ds-{}", rec.dock_status_id),
        workflow_id: dock.workflow_id,
        job_type: dock.job_type,
        action: dock.action,
        status: dock.status,
        export_job_id: export.then(|| format!("workflow-ej-{}", rec.id)),
        response: export.then_some(KoreResponse { download_url: url }),
        progress: dock.progress,
        error: dock.error,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    pub file_id: uuid::Uuid,
    /// sha256 of the file, lowercase hex.
    pub hash: String,
    pub file_name: String,
}

/// Kore.ai: uploads a file (a bundle to import) as the `file` part of a multipart form (write
/// scope); it lives 24 hours. Bodies up to WHARF_MAX_RUN_BYTES, streamed to the object store.
#[utoipa::path(post, path = "/api/public/uploadfile", tag = "compat",
    request_body(content = String, content_type = "multipart/form-data", description = "A form with a part named file"),
    responses((status = 200, body = UploadedFile), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 408, body = crate::error::ErrorEnvelope), (status = 413, body = crate::error::ErrorEnvelope),
        (status = 415, body = crate::error::ErrorEnvelope)))]
#[post("/api/public/uploadfile")]
pub async fn kore_upload(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Write)?;
    let limits = upload_limits(&state);
    check_form(&req, limits.max_bytes)?;
    // An upload counts against WHARF_PROJECT_INGESTS like a run's: no tenant holds every slot.
    let _slot = state.ingest_slots.acquire(principal.project_id)?;
    let mut form = actix_multipart::Multipart::new(req.headers(), payload.into_inner());
    let field = file_part(&mut form, state.settings.body_timeout).await?;
    let name = part_file_name(&field);
    let stored = files::upload(
        &state.pool,
        &state.store,
        principal.project_id,
        &name,
        field,
        limits,
    )
    .await?;
    tracing::info!(file_id = %stored.id, bytes = stored.size_bytes, "file uploaded");
    Ok(HttpResponse::Ok().json(UploadedFile {
        file_id: stored.id,
        hash: stored.sha256,
        file_name: stored.file_name,
    }))
}

/// A multipart form within the size limit, refused before any of it is read.
fn check_form(req: &HttpRequest, max_bytes: u64) -> Result<(), Error> {
    if content_length_over(req, max_bytes) {
        return Err(Error::PayloadTooLarge { limit: max_bytes });
    }
    if !crate::json::media_type(req).eq_ignore_ascii_case("multipart/form-data") {
        return Err(Error::UnsupportedMediaType(
            "Content-Type must be multipart/form-data with a part named file".into(),
        ));
    }
    Ok(())
}

/// The form's part named `file` (parts before it are skipped; each must arrive in `stall`).
async fn file_part(
    form: &mut actix_multipart::Multipart,
    stall: std::time::Duration,
) -> Result<actix_multipart::Field, Error> {
    loop {
        let Some(field) = files::next_within(stall, form).await? else {
            return Err(Error::invalid("file: the form has no part named file"));
        };
        let field =
            field.map_err(|e| Error::invalid(format!("the multipart form is malformed: {e}")))?;
        if field.name() == Some("file") {
            return Ok(field);
        }
    }
}

/// The part's file name without control characters, at most 200 of them (`upload.zip` if none).
fn part_file_name(field: &actix_multipart::Field) -> String {
    field
        .content_disposition()
        .and_then(|cd| cd.get_filename())
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "upload.zip".to_string())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KoreImportRequest {
    /// The `fileId` of an uploaded bundle.
    pub workflow_data_file_id: String,
    /// The new workflow's name (default: the bundle's); 1-200 characters.
    pub workflow_name: Option<String>,
}

async fn kore_import_inner(
    req: &HttpRequest,
    state: &AppState,
    principal: &Principal,
    body: web::Payload,
    target: Option<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    let value = small_json(req, state, body).await?;
    let request: KoreImportRequest = crate::json::from_value(value)?;
    if let Some(name) = &request.workflow_name {
        validate_workflow_name(name).map_err(|e| Error::invalid(format!("workflowName: {e}")))?;
    }
    let file = uploaded_file(state, principal, &request.workflow_data_file_id).await?;
    let rid = request_id::current();
    let mut new = new_job(
        state,
        principal,
        JobKind::Import,
        ExportScope::Workflow,
        target,
        "WORKFLOWS",
        &rid,
    );
    new.file_id = Some(file.id);
    new.import_name = request.workflow_name.as_deref();
    let rec = create_job(state, &By::key(req, principal), new).await?;
    Ok(HttpResponse::Ok().json(KoreJob {
        dock_status_id: format!("ds-{}", rec.dock_status_id),
        workflow_id: target,
        job_type: "WORKFLOWS".into(),
        action: "IMPORT".into(),
        status: DockStatus::InProgress,
        export_job_id: None,
        response: None,
    }))
}

/// Kore.ai: imports an uploaded bundle of one workflow as a new workflow (write scope).
#[utoipa::path(post, path = "/api/public/workflows/import", tag = "compat",
    request_body(content = KoreImportRequest, content_type = "application/json"),
    responses((status = 200, body = KoreJob), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope), (status = 413, body = crate::error::ErrorEnvelope),
        (status = 415, body = crate::error::ErrorEnvelope)))]
#[post("/api/public/workflows/import")]
pub async fn kore_import(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Write)?;
    kore_import_inner(&req, &state, principal, body, None).await
}

/// Kore.ai: adds an uploaded bundle's runs to an existing workflow of the same schema (write
/// scope). A schema that differs fails the import with SCHEMA_MISMATCH naming the difference.
#[utoipa::path(post, path = "/api/public/workflows/{workflowId}/import", tag = "compat",
    params(("workflowId" = String, Path)),
    request_body(content = KoreImportRequest, content_type = "application/json"),
    responses((status = 200, body = KoreJob), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope), (status = 413, body = crate::error::ErrorEnvelope),
        (status = 415, body = crate::error::ErrorEnvelope)))]
#[post("/api/public/workflows/{workflowId}/import")]
pub async fn kore_import_into(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Write)?;
    let id = kore_id("workflowId", "workflow-", &path)?;
    let wf = find(&state, principal.project_id, &id.to_string()).await?;
    kore_import_inner(&req, &state, principal, body, Some(wf.id)).await
}
