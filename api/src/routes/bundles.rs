//! Bundles and imports (API.md, "Bundles (definition + data) and imports"), and the seed routes
//! built on them: Kore.ai's workflow export, dock status, upload and import, and Zangtable's
//! project-level exports. Bundles and imports are jobs of the export ledger; these handlers
//! only validate, record and enqueue.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use wharf_shared::Error;
use wharf_shared::auth::Principal;
use wharf_shared::domain::export::ExportRequest;
use wharf_shared::domain::schema::{printable, validate_workflow_name};
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::{DockStatus, ExportScope, ExportStatus, JobKind};
use wharf_shared::files::{self, UploadLimits};
use wharf_shared::repo::exports::{self, Created, ExportRecord, NewJob};
use wharf_shared::repo::imports::StoredFile;
use wharf_shared::repo::{imports, projects, workflows};

use super::ListQuery;
use crate::app::exports::{create_export, require_for, signed_link};
use crate::app::views::{ExportErrorDto, ProgressDto, dock_dto, export_dto, imported_workflows};
use crate::app::workflows::find;
use crate::auth::{Auth, parse_id};
use crate::compat::zangtable as compat;
use crate::error::ApiError;
use crate::request_id;
use crate::state::AppState;

/// Largest JSON body of these routes (a create or an import request).
const MAX_SMALL_BODY: usize = 64 << 10;

/// Pushes a recorded job to the queue; if the queue is down the reconciler pushes it later.
pub async fn enqueue(state: &AppState, id: uuid::Uuid) {
    let request_id = Some(request_id::current());
    wharf_shared::queue::wake_for(state.queue.as_ref(), &state.pool, id, request_id).await;
}

/// Records a bundle (or import) job and enqueues it.
async fn create_job(state: &AppState, new: NewJob<'_>) -> Result<ExportRecord, ApiError> {
    let rec = exports::create_job(&state.pool, new).await?;
    enqueue(state, rec.id).await;
    tracing::info!(job_id = %rec.id, kind = rec.kind.as_str(), scope = rec.scope.as_str(), "job created");
    Ok(rec)
}

fn new_job<'a>(
    state: &'a AppState,
    principal: &Principal,
    kind: JobKind,
    scope: ExportScope,
    workflow_id: Option<uuid::Uuid>,
    job_type: &'a str,
    request_id: &'a str,
) -> NewJob<'a> {
    NewJob {
        project_id: principal.project_id,
        kind,
        scope,
        workflow_id,
        file_id: None,
        import_name: None,
        job_type,
        request_id,
        max_attempts: state.settings.max_attempts,
        queue_max: state.settings.project_queue_max,
    }
}

/// A JSON object body of at most MAX_SMALL_BODY bytes (415 unless application/json).
async fn small_json(
    req: &HttpRequest,
    state: &AppState,
    body: web::Payload,
) -> Result<Value, ApiError> {
    crate::json::require_json(req)?;
    let bytes =
        crate::json::read_limited(body, MAX_SMALL_BODY, state.settings.body_timeout).await?;
    let value = wharf_shared::json::parse(&bytes)
        .map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid("the body must be a JSON object").into());
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Kore.ai

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
    let url = signed_link(&state, &rec).map(|(u, _)| u);
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
        signed_link(&state, &rec).map(|(u, _)| u)
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

fn upload_limits(state: &AppState) -> UploadLimits {
    UploadLimits {
        max_bytes: state.settings.max_run_bytes,
        stall: state.settings.body_timeout,
    }
}

fn content_length_over(req: &HttpRequest, limit: u64) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
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
    if content_length_over(&req, limits.max_bytes) {
        return Err(Error::PayloadTooLarge {
            limit: limits.max_bytes,
        }
        .into());
    }
    if !crate::json::media_type(&req).eq_ignore_ascii_case("multipart/form-data") {
        return Err(Error::UnsupportedMediaType(
            "Content-Type must be multipart/form-data with a part named file".into(),
        )
        .into());
    }
    // An upload counts against WHARF_PROJECT_INGESTS like a run's: no tenant holds every slot.
    let _slot = state.ingest_slots.acquire(principal.project_id)?;
    let mut form = actix_multipart::Multipart::new(req.headers(), payload.into_inner());
    let stall = state.settings.body_timeout;
    loop {
        let next = tokio::time::timeout(stall, form.next())
            .await
            .map_err(|_| {
                Error::RequestTimeout(format!(
                    "the request body sent nothing for {} s (WHARF_BODY_TIMEOUT)",
                    stall.as_secs_f64()
                ))
            })?;
        let Some(field) = next else {
            return Err(Error::invalid("file: the form has no part named file").into());
        };
        let field =
            field.map_err(|e| Error::invalid(format!("the multipart form is malformed: {e}")))?;
        if field.name() != Some("file") {
            continue;
        }
        let name = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(|n| {
                n.chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "upload.zip".to_string());
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
        return Ok(HttpResponse::Ok().json(UploadedFile {
            file_id: stored.id,
            hash: stored.sha256,
            file_name: stored.file_name,
        }));
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KoreImportRequest {
    /// The `fileId` of an uploaded bundle.
    pub workflow_data_file_id: String,
    /// The new workflow's name (default: the bundle's); 1-200 characters.
    pub workflow_name: Option<String>,
}

async fn uploaded_file(
    state: &AppState,
    principal: &Principal,
    raw: &str,
) -> Result<StoredFile, ApiError> {
    let id = parse_id("workflowDataFileId", raw)?;
    Ok(imports::get_file(&state.pool, principal.project_id, id)
        .await?
        .ok_or(Error::NotFound("file (uploaded files live 24 hours)"))?)
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
    let rec = create_job(state, new).await?;
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

// ---------------------------------------------------------------------------------------------
// Native imports

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
    let e = export_dto(state, rec);
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
    let essence = crate::json::media_type(&req);
    if !essence.eq_ignore_ascii_case("application/zip")
        && !essence.eq_ignore_ascii_case("application/octet-stream")
    {
        return Err(Error::UnsupportedMediaType(format!(
            "Content-Type \"{}\" is not accepted for an import: send the bundle as application/zip",
            printable(essence)
        ))
        .into());
    }
    let limits = upload_limits(&state);
    if content_length_over(&req, limits.max_bytes) {
        return Err(Error::PayloadTooLarge {
            limit: limits.max_bytes,
        }
        .into());
    }
    let _slot = state.ingest_slots.acquire(principal.project_id)?;
    let file = files::upload(
        &state.pool,
        &state.store,
        principal.project_id,
        "bundle.wharf.zip",
        body,
        limits,
    )
    .await?;
    let rid = request_id::current();
    let mut new = new_job(
        &state,
        principal,
        JobKind::Import,
        ExportScope::Database,
        target,
        "IMPORT",
        &rid,
    );
    new.file_id = Some(file.id);
    let rec = create_job(&state, new).await?;
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

// ---------------------------------------------------------------------------------------------
// Zangtable: project-level exports, in the project envelope

fn exp_id(id: uuid::Uuid) -> String {
    format!("exp_{}", id.simple())
}

fn envelope(status: actix_web::http::StatusCode, data: Value) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "ok": true,
        "data": data,
        "error": null,
        "request_id": request_id::current(),
        "meta": {"generated_at": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)},
    }))
}

fn zang_status(s: ExportStatus) -> &'static str {
    match s {
        ExportStatus::Queued => "queued",
        ExportStatus::InProgress => "running",
        ExportStatus::Completed => "completed",
        ExportStatus::Failed => "failed",
        ExportStatus::Cancelled => "cancelled",
        ExportStatus::Expired => "expired",
    }
}

fn zang_export(state: &AppState, slug: &str, rec: &ExportRecord) -> Value {
    let e = export_dto(state, rec);
    let base = &state.settings.public_url;
    json!({
        "export_id": exp_id(rec.id),
        "scope": rec.scope.as_str(),
        "format": rec.format,
        "status": zang_status(e.status),
        "row_count": rec.row_count,
        "size_bytes": rec.size_bytes,
        "sha256": rec.sha256,
        "created_at": rec.created_at,
        "completed_at": rec.completed_at,
        "expires_at": rec.expires_at,
        "status_url": format!("{base}/projects/{slug}/exports/{}", exp_id(rec.id)),
        "download_url": format!("{base}/projects/{slug}/export/download/{}", exp_id(rec.id)),
        "error": e.error.map(|x| json!({"code": x.code.as_str().to_ascii_lowercase(), "message": x.message})),
    })
}

/// The principal of a project-scoped request whose key belongs to the project `slug`.
async fn project_principal(
    req: &HttpRequest,
    state: &AppState,
    slug: &str,
) -> Result<Principal, ApiError> {
    let principal = compat::project_principal(req, state).await?;
    if slug.contains('\0') {
        return Err(
            Error::invalid("project: text may not contain the NUL character (U+0000)").into(),
        );
    }
    let owner = projects::get_by_slug(&state.pool, slug).await?;
    if owner.map(|p| p.id) != Some(principal.project_id) {
        return Err(Error::NotFound("project").into());
    }
    Ok(principal)
}

/// Zangtable: a table export (read), or a schema or database bundle of the project (admin).
#[utoipa::path(post, path = "/projects/{project}/export", tag = "compat",
    params(("project" = String, Path, description = "Project slug")),
    request_body(content = Value, content_type = "application/json",
        description = "{\"scope\": \"table\", \"table\": WORKFLOW_ID_OR_NAME, \"format\", ...export parameters} | {\"scope\": \"schema\"} | {\"scope\": \"database\"}"),
    responses((status = 202, description = "The export, in the envelope"),
        (status = 400, body = compat::ProjectErrorEnvelope), (status = 401, body = compat::ProjectErrorEnvelope),
        (status = 403, body = compat::ProjectErrorEnvelope), (status = 404, body = compat::ProjectErrorEnvelope),
        (status = 408, body = compat::ProjectErrorEnvelope), (status = 413, body = compat::ProjectErrorEnvelope),
        (status = 415, body = compat::ProjectErrorEnvelope), (status = 429, body = compat::ProjectErrorEnvelope)))]
#[post("/projects/{project}/export")]
pub async fn zang_create(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Payload,
) -> HttpResponse {
    compat::in_envelope(&req, zang_create_inner(&req, &state, &path, body).await)
}

async fn zang_create_inner(
    req: &HttpRequest,
    state: &AppState,
    slug: &str,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = project_principal(req, state, slug).await?;
    principal.require(Scope::Read)?;
    let mut value = small_json(req, state, body).await?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| Error::invalid("the body must be a JSON object"))?;
    let scope_raw = match obj.remove("scope") {
        None => "table".to_string(),
        Some(Value::String(s)) => s,
        Some(_) => return Err(Error::invalid("scope: expected a string").into()),
    };
    let scope = match ExportScope::parse(&scope_raw) {
        Some(s @ (ExportScope::Table | ExportScope::Schema | ExportScope::Database)) => s,
        _ => {
            return Err(Error::invalid(format!(
                "scope: \"{}\" is not a scope (table, schema or database)",
                printable(&scope_raw)
            ))
            .into());
        }
    };
    let rec = if scope == ExportScope::Table {
        let table = match obj.remove("table") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(Error::invalid("table: expected a string").into()),
            None => return Err(Error::invalid("table: required for a table export").into()),
        };
        let wf = match uuid::Uuid::parse_str(&table) {
            Ok(_) => find(state, principal.project_id, &table).await?,
            Err(_) => workflows::get_by_name(&state.pool, principal.project_id, &table)
                .await?
                .ok_or(Error::NotFound("table"))?,
        };
        let request: ExportRequest = crate::json::from_value(value.clone())?;
        match create_export(
            state,
            principal.project_id,
            &wf.id.to_string(),
            &request,
            &value,
            None,
        )
        .await?
        {
            Created::New(r) | Created::Existing(r) => *r,
        }
    } else {
        principal.require(Scope::Admin)?;
        if let Some(k) = obj.keys().next() {
            return Err(Error::invalid(format!(
                "{}: not a parameter of a {scope_raw} export",
                printable(k)
            ))
            .into());
        }
        let rid = request_id::current();
        create_job(
            state,
            new_job(
                state,
                &principal,
                JobKind::Export,
                scope,
                None,
                "EXPORT",
                &rid,
            ),
        )
        .await?
    };
    let z = zang_export(state, slug, &rec);
    Ok(envelope(
        actix_web::http::StatusCode::ACCEPTED,
        json!({
            "export_id": z["export_id"],
            "scope": z["scope"],
            "status": z["status"],
            "status_url": z["status_url"],
            "download_url": z["download_url"],
        }),
    ))
}

/// Zangtable: the project's exports, newest first (read; schema and database exports are
/// listed for admin keys only). `data` is the list; `meta.next_cursor` the next page's cursor.
#[utoipa::path(get, path = "/projects/{project}/exports", tag = "compat",
    params(("project" = String, Path, description = "Project slug"), ListQuery),
    responses((status = 200, description = "The exports, in the envelope"),
        (status = 400, body = compat::ProjectErrorEnvelope), (status = 401, body = compat::ProjectErrorEnvelope),
        (status = 403, body = compat::ProjectErrorEnvelope), (status = 404, body = compat::ProjectErrorEnvelope),
        (status = 429, body = compat::ProjectErrorEnvelope)))]
#[get("/projects/{project}/exports")]
pub async fn zang_list(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    compat::in_envelope(&req, zang_list_inner(&req, &state, &path).await)
}

async fn zang_list_inner(
    req: &HttpRequest,
    state: &AppState,
    slug: &str,
) -> Result<HttpResponse, ApiError> {
    let principal = project_principal(req, state, slug).await?;
    principal.require(Scope::Read)?;
    // Parsed here, not by an extractor, so a bad query is answered in this route's envelope.
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| Error::invalid(format!("invalid query string: {e}")))?;
    let page = query.page()?;
    let (rows, next) = exports::list_project(&state.pool, principal.project_id, page).await?;
    let admin = principal.require(Scope::Admin).is_ok();
    let data: Vec<Value> = rows
        .iter()
        .filter(|r| admin || !matches!(r.scope, ExportScope::Schema | ExportScope::Database))
        .map(|r| zang_export(state, slug, r))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "ok": true,
        "data": data,
        "error": null,
        "request_id": request_id::current(),
        "meta": {
            "generated_at": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "next_cursor": next,
        },
    })))
}

/// Zangtable: one export's status (read; schema and database exports admin).
#[utoipa::path(get, path = "/projects/{project}/exports/{exportId}", tag = "compat",
    params(("project" = String, Path, description = "Project slug"), ("exportId" = String, Path, description = "exp_<32 hex> or a UUID")),
    responses((status = 200, description = "The export, in the envelope"),
        (status = 401, body = compat::ProjectErrorEnvelope),
        (status = 403, body = compat::ProjectErrorEnvelope), (status = 404, body = compat::ProjectErrorEnvelope),
        (status = 429, body = compat::ProjectErrorEnvelope)))]
#[get("/projects/{project}/exports/{exportId}")]
pub async fn zang_get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    compat::in_envelope(&req, zang_get_inner(&req, &state, &path.0, &path.1).await)
}

async fn zang_get_inner(
    req: &HttpRequest,
    state: &AppState,
    slug: &str,
    raw: &str,
) -> Result<HttpResponse, ApiError> {
    let principal = project_principal(req, state, slug).await?;
    principal.require(Scope::Read)?;
    let id = compat::project_export_id(raw).ok_or(Error::NotFound("export"))?;
    let rec = exports::get(&state.pool, principal.project_id, id)
        .await?
        .ok_or(Error::NotFound("export"))?;
    require_for(&principal, &rec)?;
    Ok(envelope(
        actix_web::http::StatusCode::OK,
        zang_export(state, slug, &rec),
    ))
}
