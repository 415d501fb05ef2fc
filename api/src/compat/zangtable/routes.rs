//! Zangtable's project-level exports (API.md, "Zangtable"), in the project envelope: a table
//! export or a schema or database bundle, their list, status and download.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use wharf_shared::Error;
use wharf_shared::auth::Principal;
use wharf_shared::domain::export::ExportRequest;
use wharf_shared::domain::schema::printable;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::{ExportScope, ExportStatus, JobKind};
use wharf_shared::repo::exports::{self, Created, ExportRecord};
use wharf_shared::repo::{projects, workflows};

use crate::app::audit::By;
use crate::app::exports::{create_export, require_for};
use crate::app::files::{Download, stream};
use crate::app::jobs::{create_job, new_job, small_json};
use crate::app::views::export_dto;
use crate::app::workflows::find;
use crate::compat::zangtable as compat;
use crate::compat::zangtable::{ProjectErrorEnvelope, in_envelope, project_export_id};
use crate::error::ApiError;
use crate::request_id;
use crate::routes::ListQuery;
use crate::state::AppState;

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
    let e = export_dto(&state.settings, rec);
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
async fn member_of(req: &HttpRequest, state: &AppState, slug: &str) -> Result<Principal, ApiError> {
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
    let principal = member_of(req, state, slug).await?;
    principal.require(Scope::Read)?;
    let mut value = small_json(req, state, body).await?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| Error::invalid("the body must be a JSON object"))?;
    let (scope_raw, scope) = scope_of(obj)?;
    let rec = if scope == ExportScope::Table {
        table_export(req, state, &principal, value).await?
    } else {
        bundle_job(req, state, &principal, &scope_raw, scope, obj).await?
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

/// A bundle of the whole project (scope schema or database; admin), which takes no parameters.
async fn bundle_job(
    req: &HttpRequest,
    state: &AppState,
    principal: &Principal,
    scope_raw: &str,
    scope: ExportScope,
    rest: &serde_json::Map<String, Value>,
) -> Result<ExportRecord, ApiError> {
    principal.require(Scope::Admin)?;
    if let Some(k) = rest.keys().next() {
        return Err(Error::invalid(format!(
            "{}: not a parameter of a {scope_raw} export",
            printable(k)
        ))
        .into());
    }
    let rid = request_id::current();
    let new = new_job(
        state,
        principal,
        JobKind::Export,
        scope,
        None,
        "EXPORT",
        &rid,
    );
    create_job(state, &By::key(req, principal), new).await
}

/// `scope` taken out of the body: table (the default), schema or database.
fn scope_of(obj: &mut serde_json::Map<String, Value>) -> Result<(String, ExportScope), ApiError> {
    let scope_raw = match obj.remove("scope") {
        None => "table".to_string(),
        Some(Value::String(s)) => s,
        Some(_) => return Err(Error::invalid("scope: expected a string").into()),
    };
    match ExportScope::parse(&scope_raw) {
        Some(s @ (ExportScope::Table | ExportScope::Schema | ExportScope::Database)) => {
            Ok((scope_raw, s))
        }
        _ => Err(Error::invalid(format!(
            "scope: \"{}\" is not a scope (table, schema or database)",
            printable(&scope_raw)
        ))
        .into()),
    }
}

/// A table export: `table` (a workflow's id or name) and the export's own parameters.
async fn table_export(
    req: &HttpRequest,
    state: &AppState,
    principal: &Principal,
    mut value: Value,
) -> Result<ExportRecord, ApiError> {
    let table = match value.as_object_mut().and_then(|o| o.remove("table")) {
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
    let created = create_export(
        state,
        &By::key(req, principal),
        &wf.id.to_string(),
        &request,
        &value,
        None,
    )
    .await?;
    Ok(match created {
        Created::New(r) | Created::Existing(r) => *r,
    })
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
    let principal = member_of(req, state, slug).await?;
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
    let principal = member_of(req, state, slug).await?;
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

async fn project_download_inner(
    req: &HttpRequest,
    state: &AppState,
    project: &str,
    raw: &str,
) -> Result<HttpResponse, ApiError> {
    let principal = compat::project_principal(req, state).await?;
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
    require_for(&principal, &rec)?;
    stream(state, req, &rec, Download::streamed_by(&principal)).await
}
