use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;
use wharf_shared::Error;
use wharf_shared::domain::export::ExportRequest;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::ExportStatus;
use wharf_shared::repo::exports::{self, Cancelled, Created};

use super::{List, ListQuery};
use crate::app::audit::By;
use crate::app::exports::{create_export, find_export, require_for, standing, wait_final};
use crate::app::views::{
    DockStatusDto, ExportCreated, ExportDto, created_dto, dock_dto, export_dto, status_dto,
};
use crate::app::workflows::find;
use crate::auth::{Auth, parse_id};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Long poll: answer as soon as the export reaches a final status (COMPLETED, FAILED,
    /// CANCELLED, EXPIRED), or after this many seconds, 1 to 60.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 60)]
    pub wait: Option<String>,
}

/// Largest create body (a 100,000-id `rowIds` list fits).
pub const MAX_CREATE_BYTES: usize = 2 << 20;

fn parse_body(
    req: &HttpRequest,
    body: &[u8],
) -> Result<(ExportRequest, serde_json::Value), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((ExportRequest::default(), serde_json::json!({})));
    }
    crate::json::require_json(req)?;
    let value = wharf_shared::json::parse(body)
        .map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))?;
    let parsed = crate::json::from_value(value.clone())?;
    Ok((parsed, value))
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255);
    key.map(|k| Some(k.to_string())).ok_or_else(|| {
        Error::invalid("Idempotency-Key: must be 1-255 visible ASCII characters").into()
    })
}

/// Creates an export and returns at once (read scope). With an `Idempotency-Key` seen in the
/// last 24 h: the same body returns the same export (200), another body 409.
#[utoipa::path(post, path = "/v1/workflows/{workflowId}/exports", tag = "exports",
    params(("workflowId" = uuid::Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Option<ExportRequest>, content_type = "application/json"),
    responses((status = 202, body = ExportCreated), (status = 200, description = "Idempotent replay", body = ExportCreated),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 401, body = crate::error::ErrorEnvelope),
        (status = 403, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, body = crate::error::ErrorEnvelope), (status = 413, body = crate::error::ErrorEnvelope),
        (status = 415, body = crate::error::ErrorEnvelope),
        (status = 429, description = "WHARF_RATE_LIMIT, or WHARF_PROJECT_QUEUE_MAX exports already queued (Retry-After)", body = crate::error::ErrorEnvelope)))]
#[post("/v1/workflows/{workflowId}/exports")]
pub async fn post_export(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let bytes =
        crate::json::read_limited(body, MAX_CREATE_BYTES, state.settings.body_timeout).await?;
    let (request, canonical) = parse_body(&req, &bytes)?;
    let key = idempotency_key(&req)?;
    match create_export(
        &state,
        &By::key(&req, principal),
        &path,
        &request,
        &canonical,
        key.as_deref(),
    )
    .await?
    {
        Created::New(rec) => Ok(HttpResponse::Accepted().json(created_dto(&state.settings, &rec))),
        Created::Existing(rec) => Ok(HttpResponse::Ok().json(created_dto(&state.settings, &rec))),
    }
}

/// An export's status, progress and, once completed, its signed download link (read scope).
#[utoipa::path(get, path = "/v1/exports/{exportId}", tag = "exports", params(("exportId" = uuid::Uuid, Path), StatusQuery),
    responses((status = 200, body = ExportDto), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/v1/exports/{exportId}")]
pub async fn get_export(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    // A running export polled again within RUNNING_TTL: its status as just read, from memory.
    if query.wait.is_none()
        && let Some(hit) = state.waiters.running(parse_id("exportId", &path)?)
    {
        if hit.rec.project_id != principal.project_id {
            return Err(Error::NotFound("export").into());
        }
        require_for(principal, &hit.rec)?;
        return Ok(HttpResponse::Ok().json(status_dto(
            &state.settings,
            &hit.rec,
            hit.position,
            hit.eta,
        )));
    }
    let mut rec = find_export(&state, principal, &path).await?;
    if let Some(raw) = &query.wait {
        let secs = raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=60).contains(s))
            .ok_or_else(|| Error::invalid("wait: expected 1 to 60 seconds"))?;
        if rec.effective_status(Utc::now()).is_active() {
            rec = wait_final(&state, rec, std::time::Duration::from_secs(secs)).await?;
        }
    }
    let (position, eta) = standing(&state, &rec).await?;
    state.waiters.remember_running(&rec, position, eta);
    let mut dto = status_dto(&state.settings, &rec, position, eta);
    crate::app::datasets::add_files(&state, &rec, &mut dto).await?;
    Ok(HttpResponse::Ok().json(dto))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportListQuery {
    /// QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or EXPIRED (any case).
    #[param(
        pattern = "^(QUEUED|IN_PROGRESS|COMPLETED|FAILED|CANCELLED|EXPIRED|queued|in_progress|completed|failed|cancelled|expired)$"
    )]
    pub status: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    pub cursor: Option<String>,
}

/// A workflow's exports, newest first (read scope).
#[utoipa::path(get, path = "/v1/workflows/{workflowId}/exports", tag = "exports",
    params(("workflowId" = uuid::Uuid, Path), ExportListQuery),
    responses((status = 200, body = List<ExportDto>), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/v1/workflows/{workflowId}/exports")]
pub async fn list_exports(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ExportListQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let wf = find(&state, principal.project_id, &path).await?;
    let status = match query.status.as_deref() {
        None => None,
        Some(raw) => Some(ExportStatus::parse(raw).ok_or_else(|| {
            let all: Vec<&str> = ExportStatus::ALL.iter().map(|s| s.as_str()).collect();
            Error::invalid(format!("status: expected one of {}", all.join(", ")))
        })?),
    };
    let page = ListQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .page()?;
    let (rows, next) =
        exports::list(&state.pool, principal.project_id, wf.id, status, page).await?;
    Ok(HttpResponse::Ok().json(List::new(
        rows.iter()
            .map(|r| export_dto(&state.settings, r))
            .collect(),
        next,
    )))
}

/// Cancels a queued or running export (read scope); a running job stops within seconds and
/// leaves no object. A completed or failed export: 409.
#[utoipa::path(post, path = "/v1/exports/{exportId}/cancel", tag = "exports", params(("exportId" = uuid::Uuid, Path)),
    responses((status = 202, body = ExportDto), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, body = crate::error::ErrorEnvelope)))]
#[post("/v1/exports/{exportId}/cancel")]
pub async fn cancel_export(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let id = find_export(&state, principal, &path).await?.id;
    let cancelled = exports::cancel(&state.pool, principal.project_id, id).await;
    // Whatever came of it, this process's memory of the export is stale now.
    state.waiters.forget(id);
    match cancelled? {
        None => Err(Error::NotFound("export").into()),
        Some(Cancelled::Done(rec)) => {
            tracing::info!(export_id = %id, "export cancelled");
            crate::app::datasets::remove_files_soon(&state, &rec);
            let mut event = crate::app::audit::by_key(&req, principal, "export.cancelled");
            event.export_id = Some(id);
            state.audit.record(event).await;
            Ok(HttpResponse::Accepted().json(export_dto(&state.settings, &rec)))
        }
        Some(Cancelled::Finished(status)) => Err(Error::Conflict(format!(
            "export is {status} and can no longer be cancelled"
        ))
        .into()),
    }
}

#[utoipa::path(get, path = "/v1/dock-status/{dockStatusId}", tag = "exports", params(("dockStatusId" = uuid::Uuid, Path)),
    responses((status = 200, body = DockStatusDto), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/v1/dock-status/{dockStatusId}")]
pub async fn get_dock_status(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let id = parse_id("dockStatusId", &path)?;
    let rec = exports::get_by_dock_status(&state.pool, principal.project_id, id)
        .await?
        .ok_or(Error::NotFound("dock status"))?;
    require_for(principal, &rec)?;
    let mut dock = dock_dto(&state, &rec);
    let (position, eta) = standing(&state, &rec).await?;
    (dock.progress.queue_position, dock.progress.eta_seconds) = (position, eta);
    Ok(HttpResponse::Ok().json(dock))
}
