//! Kadoa's export routes (API.md, "Kadoa"): an export created and waited for in one GET, and
//! its file downloaded.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use wharf_shared::Error;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::ExportStatus;
use wharf_shared::repo::exports::{Created, ExportRecord};

use crate::app::audit::By;
use crate::app::exports::{create_export, find_export, wait_final};
use crate::app::files::{Download, stream};
use crate::app::views::{ExportDto, export_dto};
use crate::auth::{Auth, parse_id};
use crate::compat::kadoa::{KadoaQuery, MAX_WAIT_SECS};
use crate::error::ApiError;
use crate::state::AppState;
use wharf_shared::views::signed_link;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KadoaExport {
    pub export_id: uuid::Uuid,
    pub workflow_id: uuid::Uuid,
    pub run_id: Option<uuid::Uuid>,
    pub executed_at: Option<chrono::DateTime<Utc>>,
    pub format: String,
    pub row_count: i64,
    /// Signed, self-authenticating download URL, valid until `expiresAt`.
    pub url: String,
    pub expires_at: chrono::DateTime<Utc>,
}

/// Kadoa: creates the export and waits for it (up to `wait` seconds); 202 with the status
/// body if it is not done in time (read scope).
#[utoipa::path(get, path = "/v4/workflows/{workflowId}/data/export", tag = "compat",
    params(("workflowId" = String, Path), KadoaQuery),
    responses((status = 200, body = KadoaExport), (status = 202, body = ExportDto),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 401, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "EXPORT_FAILED or EXPORT_CANCELLED", body = crate::error::ErrorEnvelope),
        (status = 410, description = "EXPORT_EXPIRED", body = crate::error::ErrorEnvelope)))]
#[get("/v4/workflows/{workflowId}/data/export")]
pub async fn kadoa_create(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<KadoaQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let wait = query.wait.unwrap_or(25);
    if wait > MAX_WAIT_SECS {
        return Err(Error::invalid(format!("wait: at most {MAX_WAIT_SECS} seconds")).into());
    }
    let (request, canonical) = query.to_request()?;
    let rec = match create_export(
        &state,
        &By::key(&req, principal),
        &path,
        &request,
        &canonical,
        None,
    )
    .await?
    {
        Created::New(r) | Created::Existing(r) => r,
    };
    // Waits on the process's one listener for finished exports, not by polling.
    let rec = if wait > 0 && rec.status.is_active() {
        wait_final(&state, *rec, Duration::from_secs(wait)).await?
    } else {
        *rec
    };
    answer(&state.settings, &rec)
}

/// 202 with the status while the export runs; 200 with Kadoa's export and a signed link once
/// completed; the export's own error when it failed, was cancelled or expired.
fn answer(
    settings: &wharf_shared::config::Settings,
    rec: &ExportRecord,
) -> Result<HttpResponse, ApiError> {
    match rec.effective_status(Utc::now()) {
        ExportStatus::Queued | ExportStatus::InProgress => {
            Ok(HttpResponse::Accepted().json(export_dto(settings, rec)))
        }
        ExportStatus::Completed => {
            let (url, expires_at) = signed_link(settings, rec)
                .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("no signing key")))?;
            Ok(HttpResponse::Ok().json(KadoaExport {
                export_id: rec.id,
                workflow_id: rec.link_workflow(),
                run_id: rec.run_id,
                executed_at: rec.run_executed_at,
                format: rec.format.clone(),
                row_count: rec.row_count.unwrap_or(0),
                url,
                expires_at,
            }))
        }
        _ => Err(rec
            .downloadable(Utc::now())
            .err()
            .unwrap_or(Error::ExportNotReady)
            .into()),
    }
}

/// Kadoa: the bytes of an export of this workflow, as an attachment (read scope).
#[utoipa::path(get, path = "/v4/workflows/{workflowId}/data/exports/{exportId}", tag = "compat",
    params(("workflowId" = String, Path), ("exportId" = String, Path)),
    responses((status = 200, description = "The file"), (status = 206, description = "A byte range"),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "EXPORT_NOT_READY, EXPORT_FAILED or EXPORT_CANCELLED", body = crate::error::ErrorEnvelope),
        (status = 410, description = "EXPORT_EXPIRED", body = crate::error::ErrorEnvelope),
        (status = 412, description = "If-Match did not match the ETag", body = crate::error::ErrorEnvelope),
        (status = 416, description = "Range not satisfiable", body = crate::error::ErrorEnvelope)))]
#[get("/v4/workflows/{workflowId}/data/exports/{exportId}")]
pub async fn kadoa_download(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let workflow_id = parse_id("workflowId", &path.0)?;
    let rec = find_export(&state, principal, &path.1).await?;
    if rec.workflow_id != Some(workflow_id) {
        return Err(Error::NotFound("export").into());
    }
    stream(&state, &req, &rec, Download::streamed_by(principal)).await
}
