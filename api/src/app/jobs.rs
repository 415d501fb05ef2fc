//! Bundle and import jobs: recording one (with the project's queue cap) and enqueueing it, and
//! what their routes share (the small JSON bodies, the upload limits, the uploaded file).

use actix_web::{HttpRequest, web};
use serde_json::Value;
use wharf_shared::Error;
use wharf_shared::auth::Principal;
use wharf_shared::domain::states::{ExportScope, JobKind};
use wharf_shared::files::UploadLimits;
use wharf_shared::repo::exports::{self, ExportRecord, NewJob};
use wharf_shared::repo::imports;
use wharf_shared::repo::imports::StoredFile;

use crate::auth::parse_id;
use crate::error::ApiError;
use crate::request_id;
use crate::state::AppState;

/// Largest JSON body of these routes (a create or an import request).
pub const MAX_SMALL_BODY: usize = 64 << 10;

/// Pushes a recorded job to the queue; if the queue is down the reconciler pushes it later.
pub async fn enqueue(state: &AppState, id: uuid::Uuid) {
    let request_id = Some(request_id::current());
    wharf_shared::queue::wake_for(state.queue.as_ref(), &state.pool, id, request_id).await;
}

/// Records a bundle (or import) job and enqueues it.
pub async fn create_job(
    state: &AppState,
    by: &crate::app::audit::By,
    new: NewJob<'_>,
) -> Result<ExportRecord, ApiError> {
    let rec = exports::create_job(&state.pool, new).await?;
    crate::app::audit::created(&state.audit, by, &rec).await;
    enqueue(state, rec.id).await;
    tracing::info!(job_id = %rec.id, kind = rec.kind.as_str(), scope = rec.scope.as_str(), "job created");
    Ok(rec)
}

pub fn new_job<'a>(
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
pub async fn small_json(
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

pub fn upload_limits(state: &AppState) -> UploadLimits {
    UploadLimits {
        max_bytes: state.settings.max_run_bytes,
        stall: state.settings.body_timeout,
    }
}

pub fn content_length_over(req: &HttpRequest, limit: u64) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
}

pub async fn uploaded_file(
    state: &AppState,
    principal: &Principal,
    raw: &str,
) -> Result<StoredFile, ApiError> {
    let id = parse_id("workflowDataFileId", raw)?;
    Ok(imports::get_file(&state.pool, principal.project_id, id)
        .await?
        .ok_or(Error::NotFound("file (uploaded files live 24 hours)"))?)
}

/// A native import: the body (a ZIP, within the upload limits and the project's ingest slots)
/// stored as an uploaded file, then the import job that reads it recorded and enqueued.
pub async fn import_upload(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    target: Option<uuid::Uuid>,
    body: web::Payload,
) -> Result<ExportRecord, ApiError> {
    let essence = crate::json::media_type(req);
    if !essence.eq_ignore_ascii_case("application/zip")
        && !essence.eq_ignore_ascii_case("application/octet-stream")
    {
        return Err(Error::UnsupportedMediaType(format!(
            "Content-Type \"{}\" is not accepted for an import: send the bundle as application/zip",
            wharf_shared::domain::schema::printable(essence)
        ))
        .into());
    }
    let limits = upload_limits(state);
    if content_length_over(req, limits.max_bytes) {
        return Err(Error::PayloadTooLarge {
            limit: limits.max_bytes,
        }
        .into());
    }
    let _slot = state.ingest_slots.acquire(principal.project_id)?;
    let file = wharf_shared::files::upload(
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
        state,
        principal,
        JobKind::Import,
        ExportScope::Database,
        target,
        "IMPORT",
        &rid,
    );
    new.file_id = Some(file.id);
    create_job(state, &crate::app::audit::By::key(req, principal), new).await
}
