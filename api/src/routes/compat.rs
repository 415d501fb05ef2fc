//! Seed-compatible routes: the documented behaviour of the export APIs Wharf stands in for.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use wharf_shared::domain::export::ExportRequest;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::ExportStatus;
use wharf_shared::repo::exports::{self, Created};
use wharf_shared::repo::projects;
use wharf_shared::{Error, auth};

use super::downloads::stream;
use super::exports::{create_export, export_dto, find_export};
use crate::auth::{Auth, parse_id, presented_key};
use crate::error::{ApiError, Enveloped, status_of};
use crate::request_id;
use crate::state::AppState;

pub const MAX_WAIT_SECS: u64 = 60;

/// The parameters of every `/v4` route: Kadoa's, accepted on each route even where it ignores
/// them (its SDK sends them everywhere); any other parameter is a 400. `format` and `order` are
/// case-insensitive.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KadoaQuery {
    /// csv, json (the data route's default), ndjson or parquet, in any case.
    pub format: Option<String>,
    #[param(value_type = Option<uuid::Uuid>)]
    pub run_id: Option<String>,
    /// The filters array of the native API, as URL-encoded JSON.
    pub filters: Option<String>,
    pub sort_by: Option<String>,
    /// asc (default) or desc, in any case.
    pub order: Option<String>,
    /// Comma-separated row ids.
    #[param(pattern = "^-?[0-9]+(,-?[0-9]+)*$")]
    pub row_ids: Option<String>,
    /// Seconds to wait for the file (0-60, default 25; the export route).
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u64>,
    /// Page number, from 1 (the data route).
    #[param(minimum = 1)]
    pub page: Option<String>,
    /// Rows per page (data route: default 100, at most 10,000; 0 streams every selected row)
    /// or workflows per page (list: default 25, at most 100).
    #[param(minimum = 0, maximum = 10000)]
    pub limit: Option<String>,
    /// true: the body is gzip (`Content-Encoding: gzip`).
    pub gzip: Option<String>,
    /// Accepted and ignored.
    pub include_anomalies: Option<String>,
    /// Workflows whose name contains this text (list).
    pub search: Option<String>,
    /// Workflows to skip (list).
    #[param(minimum = 0)]
    pub skip: Option<String>,
}

impl KadoaQuery {
    /// The native request these parameters mean, and its canonical JSON (for hashing).
    pub(crate) fn to_request(&self) -> Result<(ExportRequest, Value), ApiError> {
        let mut body = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(k.to_string(), v);
            }
        };
        put(
            "format",
            self.format
                .as_ref()
                .map(|f| Value::String(f.to_ascii_lowercase())),
        );
        put("runId", self.run_id.clone().map(Value::String));
        put("sortBy", self.sort_by.clone().map(Value::String));
        put(
            "order",
            self.order
                .as_ref()
                .map(|o| Value::String(o.to_ascii_lowercase())),
        );
        if let Some(f) = &self.filters {
            let v: Value = wharf_shared::json::parse(f.as_bytes())
                .map_err(|e| Error::invalid(format!("filters: not a JSON array: {e}")))?;
            put("filters", Some(v));
        }
        if let Some(ids) = &self.row_ids {
            let parsed: Result<Vec<i64>, _> =
                ids.split(',').map(|s| s.trim().parse::<i64>()).collect();
            let parsed =
                parsed.map_err(|_| Error::invalid("rowIds: expected comma-separated integers"))?;
            put("rowIds", Some(json!(parsed)));
        }
        let value = Value::Object(body);
        Ok((crate::json::from_value(value.clone())?, value))
    }
}

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
    responses((status = 200, body = KadoaExport), (status = 202, body = super::exports::ExportDto),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 401, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "EXPORT_FAILED or EXPORT_CANCELLED", body = crate::error::ErrorEnvelope),
        (status = 410, description = "EXPORT_EXPIRED", body = crate::error::ErrorEnvelope)))]
#[get("/v4/workflows/{workflowId}/data/export")]
pub async fn kadoa_create(
    auth: Auth,
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
        principal.project_id,
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
        super::exports::wait_final(&state, *rec, Duration::from_secs(wait)).await?
    } else {
        *rec
    };
    match rec.effective_status(Utc::now()) {
        ExportStatus::Queued | ExportStatus::InProgress => {
            Ok(HttpResponse::Accepted().json(export_dto(&state, &rec)))
        }
        ExportStatus::Completed => {
            let (url, expires_at) = super::exports::signed_link(&state, &rec)
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
    stream(&state, &req, &rec).await
}

/// `exp_` + 32 hex digits, or a bare UUID.
pub(crate) fn project_export_id(raw: &str) -> Option<uuid::Uuid> {
    match raw.strip_prefix("exp_") {
        Some(hex) if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            uuid::Uuid::parse_str(hex).ok()
        }
        Some(_) => None,
        None => uuid::Uuid::parse_str(raw).ok(),
    }
}

/// Project-scoped download: the bytes, or an error in this route's own envelope with
/// snake_case codes. `X-Operation-Key` and `X-Operation-Run-Id` are echoed.
#[utoipa::path(get, path = "/projects/{project}/export/download/{exportId}", tag = "compat",
    params(("project" = String, Path, description = "Project slug"), ("exportId" = String, Path, description = "exp_<32 hex> or a UUID")),
    responses((status = 200, description = "The file"), (status = 206, description = "A byte range"),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 401, body = ProjectErrorEnvelope), (status = 403, body = ProjectErrorEnvelope),
        (status = 404, description = "Unknown project or export (not_found)", body = ProjectErrorEnvelope),
        (status = 409, description = "export_not_ready, export_failed or export_cancelled", body = ProjectErrorEnvelope),
        (status = 410, description = "export_expired", body = ProjectErrorEnvelope),
        (status = 412, description = "If-Match did not match the ETag", body = crate::error::ErrorEnvelope),
        (status = 416, description = "Range not satisfiable", body = crate::error::ErrorEnvelope)))]
#[get("/projects/{project}/export/download/{exportId}")]
pub async fn project_download(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    in_envelope(
        &req,
        project_download_inner(&req, &state, &path.0, &path.1).await,
    )
}

/// A project-scoped route's answer: errors in its envelope, and `X-Operation-Key` and
/// `X-Operation-Run-Id` echoed either way.
pub(crate) fn in_envelope(
    req: &HttpRequest,
    result: Result<HttpResponse, ApiError>,
) -> HttpResponse {
    let mut res = match result {
        Ok(res) => res,
        Err(e) => project_error(&e.0),
    };
    for name in ["x-operation-key", "x-operation-run-id"] {
        if let Some(v) = req.headers().get(name) {
            res.headers_mut()
                .insert(HeaderName::from_static(name), v.clone());
        }
    }
    res
}

/// The key of a project-scoped request (these routes answer errors in their own envelope, so
/// they authenticate here rather than through the `Auth` extractor).
pub(crate) async fn project_principal(
    req: &HttpRequest,
    state: &AppState,
) -> Result<auth::Principal, ApiError> {
    let key = presented_key(req)
        .filter(|k| !k.is_empty())
        .ok_or(Error::Unauthorized)?;
    let principal = auth::authenticate(&state.pool, &state.keys, &key).await?;
    state.limiter.check(principal.key_id)?;
    Ok(principal)
}

async fn project_download_inner(
    req: &HttpRequest,
    state: &AppState,
    project: &str,
    raw: &str,
) -> Result<HttpResponse, ApiError> {
    let principal = project_principal(req, state).await?;
    principal.require(Scope::Read)?;
    if project.contains('\0') {
        return Err(
            Error::invalid("project: text may not contain the NUL character (U+0000)").into(),
        );
    }
    let owner = projects::get_by_slug(&state.pool, project).await?;
    if owner.map(|p| p.id) != Some(principal.project_id) {
        return Err(Error::NotFound("project").into());
    }
    let id = project_export_id(raw).ok_or(Error::NotFound("export"))?;
    let rec = exports::get(&state.pool, principal.project_id, id)
        .await?
        .ok_or(Error::NotFound("export"))?;
    super::exports::require_for(&principal, &rec)?;
    stream(state, req, &rec).await
}

/// The project-scoped routes' error envelope (codes in snake_case).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectErrorEnvelope {
    /// Always false.
    pub ok: bool,
    /// Always null.
    #[schema(value_type = Option<String>)]
    pub data: Option<()>,
    pub error: crate::error::ErrorBody,
    pub request_id: String,
    pub meta: ProjectMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectMeta {
    pub generated_at: String,
}

fn project_error(e: &Error) -> HttpResponse {
    let code = e.code();
    let body = json!({
        "ok": false,
        "data": null,
        "error": {"code": code.as_str().to_ascii_lowercase(), "message": e.public_message()},
        "request_id": request_id::current(),
        "meta": {"generated_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
    });
    let mut res = HttpResponse::build(status_of(code)).json(body);
    res.extensions_mut().insert(Enveloped);
    if let Ok(v) = HeaderValue::from_str("no-store") {
        res.headers_mut()
            .insert(actix_web::http::header::CACHE_CONTROL, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_export_ids() {
        let u = uuid::Uuid::now_v7();
        assert_eq!(project_export_id(&u.to_string()), Some(u));
        assert_eq!(project_export_id(&format!("exp_{}", u.simple())), Some(u));
        assert_eq!(project_export_id("exp_123"), None);
        assert_eq!(project_export_id("exp_zz"), None);
        assert_eq!(project_export_id("nope"), None);
    }
}
