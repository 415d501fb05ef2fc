use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use wharf_shared::Error;
use wharf_shared::auth::Principal;
use wharf_shared::domain::export::ExportRequest;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::{DockStatus, ExportScope, ExportStatus, JobKind};
use wharf_shared::repo::exports::{self, Cancelled, Created, ExportRecord, NewExport};
use wharf_shared::signing::{self, LinkClaims};

use super::workflows::find;
use super::{List, ListQuery};
use crate::auth::{Auth, parse_id};
use crate::error::ApiError;
use crate::request_id;
use crate::state::AppState;

/// 202 body of a create.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportCreated {
    pub export_id: uuid::Uuid,
    /// The same id: the export job.
    pub export_job_id: uuid::Uuid,
    pub dock_status_id: uuid::Uuid,
    pub workflow_id: Option<uuid::Uuid>,
    pub status: ExportStatus,
    pub status_url: String,
    pub download_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressDto {
    pub rows_written: i64,
    pub rows_total: i64,
    pub bytes_written: i64,
    pub percent: f64,
    /// While QUEUED: exports of the same project ahead of it (0 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i64>,
    /// Once rowsTotal is known: seconds left at the recent rows/s of exports of this format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportErrorDto {
    pub code: wharf_shared::domain::states::FailureCode,
    pub message: String,
}

/// The status of an export (API.md, Status).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportDto {
    pub export_id: uuid::Uuid,
    /// Null for a bundle of a whole project.
    pub workflow_id: Option<uuid::Uuid>,
    pub run_id: Option<uuid::Uuid>,
    /// csv, json, ndjson, parquet, or bundle (a ZIP of definitions and Parquet runs).
    pub format: String,
    /// table (one run's rows), or a bundle's: workflow, schema or database.
    pub scope: String,
    pub compression: String,
    pub status: ExportStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// When the exported run was executed.
    pub executed_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub progress: ProgressDto,
    pub row_count: Option<i64>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    /// Signed download link that needs no key (COMPLETED only), freshly signed on each read.
    pub url: Option<String>,
    pub url_expires_at: Option<DateTime<Utc>>,
    /// When the artifact's retention ends.
    pub expires_at: Option<DateTime<Utc>>,
    pub error: Option<ExportErrorDto>,
    pub status_url: String,
    pub download_url: String,
    /// While QUEUED: exports of the same project ahead of it (0 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i64>,
    /// Once rowsTotal is known and the export still runs: seconds left at the recent rows/s of
    /// exports of the same format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

pub fn export_dto(state: &AppState, r: &ExportRecord) -> ExportDto {
    let now = Utc::now();
    let status = r.effective_status(now);
    let total = r.rows_total.unwrap_or(0);
    let percent = match status {
        ExportStatus::Completed | ExportStatus::Expired => 100.0,
        _ if total > 0 => {
            ((r.rows_written as f64 / total as f64) * 1000.0)
                .round()
                .min(1000.0)
                / 10.0
        }
        _ => 0.0,
    };
    let (url, url_expires_at) = if status == ExportStatus::Completed {
        signed_link(state, r).map_or((None, None), |(u, e)| (Some(u), Some(e)))
    } else {
        (None, None)
    };
    let base = &state.settings.public_url;
    ExportDto {
        export_id: r.id,
        workflow_id: r.workflow_id,
        run_id: r.run_id,
        format: r.format.clone(),
        scope: r.scope.as_str().to_string(),
        compression: r.compression.clone(),
        created_at: r.created_at,
        started_at: r.started_at,
        completed_at: r.completed_at,
        executed_at: r.run_executed_at,
        attempts: r.attempts,
        progress: ProgressDto {
            rows_written: r.rows_written,
            rows_total: total,
            bytes_written: r.bytes_written,
            percent,
            queue_position: None,
            eta_seconds: None,
        },
        row_count: r.row_count,
        size_bytes: r.size_bytes,
        sha256: r.sha256.clone(),
        url,
        url_expires_at,
        expires_at: r.expires_at,
        error: r.error_code.map(|code| ExportErrorDto {
            code,
            message: r.error_message.clone().unwrap_or_default(),
        }),
        status_url: format!("{base}/v1/exports/{}", r.id),
        download_url: format!("{base}/v1/exports/{}/download", r.id),
        status,
        queue_position: None,
        eta_seconds: None,
    }
}

/// Where a waiting export stands: its place in its project's queue, and once its row count is
/// known, the seconds left at the recent pace of its format. Finished exports cost nothing.
pub async fn standing(
    state: &AppState,
    r: &ExportRecord,
) -> Result<(Option<i64>, Option<f64>), ApiError> {
    let status = r.effective_status(Utc::now());
    let position = if status == ExportStatus::Queued {
        Some(exports::queue_position(&state.pool, r.project_id, r.id).await?)
    } else {
        None
    };
    let eta = match (status.is_active(), r.rows_total) {
        (true, Some(total)) => exports::recent_rows_per_second(&state.pool, &r.format)
            .await?
            .filter(|rate| *rate > 0.0)
            .map(|rate| ((total - r.rows_written).max(0) as f64 / rate * 10.0).round() / 10.0),
        _ => None,
    };
    Ok((position, eta))
}

/// Long poll: the export as soon as it reaches a final status, or as it is after `within`.
pub(crate) async fn wait_final(
    state: &AppState,
    rec: ExportRecord,
    within: std::time::Duration,
) -> Result<ExportRecord, ApiError> {
    // A project's open long polls are capped (each holds a socket and a waiter).
    let _slot = state.long_polls.acquire(rec.project_id)?;
    let deadline = tokio::time::Instant::now() + within;
    let watch = state.waiters.watch(rec.id);
    loop {
        let notified = watch.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read after registering: a finish between the two is never missed.
        let cur = exports::get(&state.pool, rec.project_id, rec.id)
            .await?
            .ok_or(Error::NotFound("export"))?;
        let now = tokio::time::Instant::now();
        if !cur.effective_status(Utc::now()).is_active() || now >= deadline {
            return Ok(cur);
        }
        let left = deadline - now;
        let tick = if state.waiters.is_live() {
            left
        } else {
            left.min(crate::waiters::FALLBACK_POLL)
        };
        tokio::time::timeout(tick, notified).await.ok();
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Long poll: answer as soon as the export reaches a final status (COMPLETED, FAILED,
    /// CANCELLED, EXPIRED), or after this many seconds, 1 to 60.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 60)]
    pub wait: Option<String>,
}

/// The export's signed, keyless file link (`WHARF_LINK_TTL` from now) and when it expires.
pub fn signed_link(state: &AppState, r: &ExportRecord) -> Option<(String, DateTime<Utc>)> {
    let expires = Utc::now().timestamp() + state.settings.link_ttl.as_secs() as i64;
    let claims = LinkClaims {
        export_id: r.id,
        workflow_id: r.link_workflow(),
        format: &r.format,
        expires,
    };
    signing::signed_url(
        &state.settings.public_url,
        &state.settings.signing_keys,
        &claims,
    )
}

fn created_dto(state: &AppState, r: &ExportRecord) -> ExportCreated {
    let base = &state.settings.public_url;
    ExportCreated {
        export_id: r.id,
        export_job_id: r.id,
        dock_status_id: r.dock_status_id,
        workflow_id: r.workflow_id,
        status: r.effective_status(Utc::now()),
        status_url: format!("{base}/v1/exports/{}", r.id),
        download_url: format!("{base}/v1/exports/{}/download", r.id),
    }
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

/// Creates the export job and a hash that identifies its parameters.
pub async fn create_export(
    state: &AppState,
    project_id: uuid::Uuid,
    workflow_raw: &str,
    request: &ExportRequest,
    canonical: &serde_json::Value,
    idempotency_key: Option<&str>,
) -> Result<Created, ApiError> {
    let wf = find(state, project_id, workflow_raw).await?;
    let spec = request.validate(&wf.fields)?;
    let run_id = match request.run_id {
        Some(id) if exports::run_exists(&state.pool, wf.id, id).await? => id,
        Some(_) => return Err(Error::NotFound("run").into()),
        None => exports::latest_run(&state.pool, wf.id)
            .await?
            .ok_or(Error::NotFound("run (the workflow has no runs yet)"))?,
    };
    let hash = hex::encode(Sha256::digest(format!("{}\n{canonical}", wf.id).as_bytes()));
    let request_id = request_id::current();
    let new = NewExport {
        project_id,
        workflow_id: wf.id,
        run_id,
        spec: &spec,
        idempotency_key,
        request_hash: &hash,
        request_id: &request_id,
        max_attempts: state.settings.max_attempts,
        queue_max: state.settings.project_queue_max,
    };
    let created = exports::create(&state.pool, new).await?;
    if let Created::New(rec) = &created {
        wharf_shared::queue::wake_for(
            state.queue.as_ref(),
            &state.pool,
            rec.id,
            Some(request_id.clone()),
        )
        .await;
        tracing::info!(export_id = %rec.id, workflow_id = %wf.id, run_id = %run_id, format = spec.format.as_str(), "export created");
    }
    Ok(created)
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
        principal.project_id,
        &path,
        &request,
        &canonical,
        key.as_deref(),
    )
    .await?
    {
        Created::New(rec) => Ok(HttpResponse::Accepted().json(created_dto(&state, &rec))),
        Created::Existing(rec) => Ok(HttpResponse::Ok().json(created_dto(&state, &rec))),
    }
}

/// An export of the principal's project; a bundle of the whole project (scope schema or
/// database) needs the admin scope.
pub async fn find_export(
    state: &AppState,
    principal: &Principal,
    raw: &str,
) -> Result<ExportRecord, ApiError> {
    let id = parse_id("exportId", raw)?;
    // A finished export changes only by a status change, which the process hears of at once:
    // polls of it are answered from memory (status polling's hot path: no query).
    let rec = match state.waiters.finished(id) {
        Some(rec) if rec.project_id == principal.project_id => rec,
        Some(_) => return Err(Error::NotFound("export").into()),
        None => {
            let rec = exports::get(&state.pool, principal.project_id, id)
                .await?
                .ok_or(Error::NotFound("export"))?;
            state.waiters.remember(&rec);
            rec
        }
    };
    require_for(principal, &rec)?;
    Ok(rec)
}

/// A project-level bundle (schema or database scope) is the admin's.
pub fn require_for(principal: &Principal, rec: &ExportRecord) -> Result<(), ApiError> {
    if matches!(rec.scope, ExportScope::Schema | ExportScope::Database) {
        principal.require(Scope::Admin)?;
    }
    Ok(())
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
        return Ok(HttpResponse::Ok().json(status_dto(&state, &hit.rec, hit.position, hit.eta)));
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
    Ok(HttpResponse::Ok().json(status_dto(&state, &rec, position, eta)))
}

/// The status body: the export with its queue position and ETA.
fn status_dto(
    state: &AppState,
    rec: &ExportRecord,
    position: Option<i64>,
    eta: Option<f64>,
) -> ExportDto {
    let mut dto = export_dto(state, rec);
    (dto.queue_position, dto.eta_seconds) = (position, eta);
    (dto.progress.queue_position, dto.progress.eta_seconds) = (position, eta);
    dto
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
        rows.iter().map(|r| export_dto(&state, r)).collect(),
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
            Ok(HttpResponse::Accepted().json(export_dto(&state, &rec)))
        }
        Some(Cancelled::Finished(status)) => Err(Error::Conflict(format!(
            "export is {status} and can no longer be cancelled"
        ))
        .into()),
    }
}

/// The generic job record (read scope).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockStatusDto {
    pub dock_status_id: uuid::Uuid,
    pub job_type: String,
    pub action: String,
    /// IN_PROGRESS (queued or running), SUCCESS, FAILED, CANCELLED or EXPIRED.
    pub status: DockStatus,
    pub workflow_id: Option<uuid::Uuid>,
    pub export_job_id: uuid::Uuid,
    pub progress: ProgressDto,
    pub response: DockResponse,
    pub error: Option<ExportErrorDto>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockResponse {
    pub download_url: Option<String>,
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

/// The generic job record of an export, a bundle or an import.
pub fn dock_dto(state: &AppState, rec: &ExportRecord) -> DockStatusDto {
    let dto = export_dto(state, rec);
    let status = dto.status.dock();
    let (action, download_url, workflow_id) = match rec.kind {
        JobKind::Export => (
            "EXPORT",
            (status == DockStatus::Success).then(|| dto.download_url.clone()),
            rec.workflow_id,
        ),
        // An import names the workflow it made once it has made it.
        JobKind::Import => (
            "IMPORT",
            None,
            imported_workflows(rec)
                .first()
                .and_then(|w| w.get("workflowId"))
                .and_then(|v| v.as_str())
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .or(rec.workflow_id),
        ),
    };
    DockStatusDto {
        dock_status_id: rec.dock_status_id,
        job_type: rec.job_type.clone(),
        action: action.into(),
        status,
        workflow_id,
        export_job_id: rec.id,
        response: DockResponse { download_url },
        error: dto.error,
        progress: dto.progress,
    }
}

/// What an import created: `[{"sourceId", "workflowId", "name", "runs", "rows"}]`.
pub fn imported_workflows(rec: &ExportRecord) -> Vec<serde_json::Value> {
    rec.result
        .as_ref()
        .and_then(|r| r.0.get("workflows"))
        .and_then(|w| w.as_array())
        .cloned()
        .unwrap_or_default()
}
