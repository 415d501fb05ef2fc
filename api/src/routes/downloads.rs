//! Getting the bytes of a finished export: 302 to a presigned S3 URL, streamed through the
//! API (with Range, HEAD, ETag), or by a self-authenticating signed link.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, head, web};
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;
use wharf_shared::Error;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::ExportStatus;
use wharf_shared::repo::exports::{self, ExportRecord};
use wharf_shared::signing::{self, LinkClaims};

use crate::app::exports::find_export;
use crate::app::files::{Download, meta_of, stream};
use crate::app::{audit, datasets};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::state::AppState;
use wharf_shared::views::{signed_file_link, signed_link};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// `stream` to receive the bytes through the API instead of a redirect (`redirect`, the
    /// default); for a dataset, `stream` is its manifest with a signed link per file and `zip`
    /// every file as one ZIP.
    #[param(pattern = "^(stream|redirect|zip)$")]
    pub mode: Option<String>,
}

/// 302 to a presigned S3 URL (default), or the bytes with `?mode=stream` (read scope).
#[utoipa::path(get, path = "/v1/exports/{exportId}/download", tag = "downloads",
    operation_id = "download_export",
    params(("exportId" = uuid::Uuid, Path), DownloadQuery),
    responses((status = 302, description = "Location: a presigned S3 GET URL (WHARF_PRESIGN_TTL)"),
        (status = 200, description = "The file (mode=stream), in its format's content type (application/octet-stream stands for any of them)", content((crate::openapi::FileBytes = "application/octet-stream"), (crate::openapi::FileBytes = "text/csv"), (crate::openapi::FileBytes = "text/tab-separated-values"),
            (crate::openapi::FileBytes = "application/json"), (crate::openapi::FileBytes = "application/x-ndjson"),
            (crate::openapi::FileBytes = "application/vnd.apache.parquet"), (crate::openapi::FileBytes = "application/zip"),
            (crate::openapi::FileBytes = "application/gzip"))),
        (status = 206, description = "A byte range", content((crate::openapi::FileBytes = "application/octet-stream"), (crate::openapi::FileBytes = "text/csv"), (crate::openapi::FileBytes = "text/tab-separated-values"),
            (crate::openapi::FileBytes = "application/json"), (crate::openapi::FileBytes = "application/x-ndjson"),
            (crate::openapi::FileBytes = "application/vnd.apache.parquet"), (crate::openapi::FileBytes = "application/zip"),
            (crate::openapi::FileBytes = "application/gzip"))),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 412, description = "If-Match did not match the ETag", body = crate::error::ErrorEnvelope),
        (status = 429, body = crate::error::ErrorEnvelope),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 401, body = crate::error::ErrorEnvelope),
        (status = 403, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "EXPORT_NOT_READY, EXPORT_FAILED or EXPORT_CANCELLED", body = crate::error::ErrorEnvelope),
        (status = 410, description = "EXPORT_EXPIRED", body = crate::error::ErrorEnvelope),
        (status = 416, body = crate::error::ErrorEnvelope)))]
#[get("/v1/exports/{exportId}/download")]
pub async fn download(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    redirect_or_stream(auth, req, state, path, query).await
}

/// The headers `GET` would send (the redirect, or the file's with `?mode=stream`), no body.
#[utoipa::path(head, path = "/v1/exports/{exportId}/download", tag = "downloads",
    operation_id = "download_export_headers",
    params(("exportId" = uuid::Uuid, Path), DownloadQuery),
    responses((status = 302, description = "Location: a presigned S3 GET URL"),
        (status = 200, description = "The file's headers (mode=stream)"),
        (status = 404, description = "No such export in this project"),
        (status = 409, description = "EXPORT_NOT_READY, EXPORT_FAILED or EXPORT_CANCELLED"),
        (status = 410, description = "EXPORT_EXPIRED")))]
#[head("/v1/exports/{exportId}/download")]
pub async fn download_headers(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    redirect_or_stream(auth, req, state, path, query).await
}

async fn redirect_or_stream(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let rec = find_export(&state, principal, &path).await?;
    if rec.is_dataset() {
        return dataset_download(&state, &req, principal, &rec, query.mode.as_deref()).await;
    }
    match query.mode.as_deref() {
        Some("stream") => stream(&state, &req, &rec, Download::streamed_by(principal)).await,
        None | Some("redirect") => {
            let key = rec.downloadable(Utc::now())?;
            let presigned = state
                .store
                .presign_get(key, state.settings.presign_ttl, &meta_of(&rec))
                .await?;
            // A store without download URLs (a local directory): the API's own signed link.
            let url = match presigned {
                Some(url) => url,
                None => signed_link(&state.settings, &rec)
                    .map(|(url, _)| url)
                    .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("no signing key")))?,
            };
            if req.method() == actix_web::http::Method::GET {
                let mut event = audit::by_key(&req, principal, "export.downloaded");
                event.export_id = Some(rec.id);
                event.route = Some("redirect".into());
                state.audit.record(event).await;
            }
            Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, url))
                .finish())
        }
        Some(other) => Err(Error::invalid(format!(
            "mode: \"{}\" is not a download mode (stream or redirect)",
            wharf_shared::domain::schema::printable(other)
        ))
        .into()),
    }
}

/// A dataset's download: 302 to its manifest's signed link (default), the manifest itself
/// (`stream`), or every file as one ZIP (`zip`).
async fn dataset_download(
    state: &AppState,
    req: &HttpRequest,
    principal: &wharf_shared::auth::Principal,
    rec: &ExportRecord,
    mode: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let answer = match mode {
        Some("stream") => datasets::manifest(state, rec).await?,
        Some("zip") => datasets::zip(state, rec).await?,
        None | Some("redirect") => {
            rec.downloadable(Utc::now())?;
            let url = signed_link(&state.settings, rec)
                .map(|(url, _)| url)
                .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("no signing key")))?;
            HttpResponse::Found()
                .insert_header((header::LOCATION, url))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "mode: \"{}\" is not a download mode of a dataset (redirect, stream or zip)",
                wharf_shared::domain::schema::printable(other)
            ))
            .into());
        }
    };
    if req.method() == actix_web::http::Method::GET {
        let mut event = audit::by_key(req, principal, "export.downloaded");
        event.export_id = Some(rec.id);
        event.route = Some(format!("dataset {}", mode.unwrap_or("redirect")));
        state.audit.record(event).await;
    }
    Ok(answer)
}

/// One file of a dataset by its manifest path: 302 to a presigned URL (or its signed link),
/// or the bytes with `?mode=stream`, with Range, HEAD and ETag as any download (read scope).
#[utoipa::path(get, path = "/v1/exports/{exportId}/files/{path}", tag = "downloads",
    operation_id = "download_dataset_file",
    params(("exportId" = uuid::Uuid, Path), ("path" = String, Path, description = "The file's path in the manifest"), DownloadQuery),
    responses((status = 302, description = "Location: a presigned S3 GET URL, or the file's signed link"),
        (status = 200, description = "The file (mode=stream)", content((crate::openapi::FileBytes = "application/octet-stream"))),
        (status = 206, description = "A byte range", content((crate::openapi::FileBytes = "application/octet-stream"))),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 401, body = crate::error::ErrorEnvelope),
        (status = 403, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "EXPORT_NOT_READY, EXPORT_FAILED or EXPORT_CANCELLED", body = crate::error::ErrorEnvelope),
        (status = 410, description = "EXPORT_EXPIRED", body = crate::error::ErrorEnvelope),
        (status = 416, body = crate::error::ErrorEnvelope)))]
#[get("/v1/exports/{exportId}/files/{path:.*}")]
pub async fn dataset_file(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    dataset_file_answer(auth, req, state, path, query).await
}

/// The headers `GET` of a dataset's file would send, no body.
#[utoipa::path(head, path = "/v1/exports/{exportId}/files/{path}", tag = "downloads",
    operation_id = "download_dataset_file_headers",
    params(("exportId" = uuid::Uuid, Path), ("path" = String, Path, description = "The file's path in the manifest"), DownloadQuery),
    responses((status = 302, description = "Location: a presigned S3 GET URL"),
        (status = 200, description = "The file's headers (mode=stream)"),
        (status = 404, description = "No such export or file"),
        (status = 409, description = "EXPORT_NOT_READY, EXPORT_FAILED or EXPORT_CANCELLED"),
        (status = 410, description = "EXPORT_EXPIRED")))]
#[head("/v1/exports/{exportId}/files/{path:.*}")]
pub async fn dataset_file_headers(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    dataset_file_answer(auth, req, state, path, query).await
}

async fn dataset_file_answer(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let (id, file_path) = path.into_inner();
    let rec = find_export(&state, principal, &id).await?;
    let file = datasets::one_file(&state, &rec, &file_path).await?;
    let by = Download {
        actor: &principal.key_prefix,
        route: "file of a dataset",
    };
    match query.mode.as_deref() {
        Some("stream") => stream(&state, &req, &file, by).await,
        None | Some("redirect") => {
            let key = file.downloadable(Utc::now())?;
            let presigned = state
                .store
                .presign_get(key, state.settings.presign_ttl, &meta_of(&file))
                .await?;
            let url = match presigned {
                Some(url) => url,
                None => signed_file_link(&state.settings, &rec, Some(&file_path))
                    .map(|(url, _)| url)
                    .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("no signing key")))?,
            };
            Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, url))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish())
        }
        Some(other) => Err(Error::invalid(format!(
            "mode: \"{}\" is not a download mode of a file (stream or redirect)",
            wharf_shared::domain::schema::printable(other)
        ))
        .into()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// One file of a dataset, by its path in the manifest (signed with the rest).
    pub path: Option<String>,
    /// Unix seconds, plain decimal digits, at most `WHARF_LINK_TTL` ahead.
    #[param(pattern = "^(0|[1-9][0-9]{0,18})$")]
    pub expires: Option<String>,
    /// The id of the signing key.
    pub kid: Option<String>,
    /// HMAC-SHA256, 64 lowercase hex digits.
    #[param(pattern = "^[0-9a-f]{64}$")]
    pub sig: Option<String>,
}

/// The self-authenticating link (no key): HMAC over export, workflow, format and expiry.
#[utoipa::path(get, path = "/v1/exports/{exportId}/file", tag = "downloads", security(()),
    operation_id = "download_signed_file",
    params(("exportId" = uuid::Uuid, Path), FileQuery),
    responses((status = 200, description = "The file, in its format's content type (application/octet-stream stands for any of them)", content((crate::openapi::FileBytes = "application/octet-stream"), (crate::openapi::FileBytes = "text/csv"), (crate::openapi::FileBytes = "text/tab-separated-values"),
            (crate::openapi::FileBytes = "application/json"), (crate::openapi::FileBytes = "application/x-ndjson"),
            (crate::openapi::FileBytes = "application/vnd.apache.parquet"), (crate::openapi::FileBytes = "application/zip"),
            (crate::openapi::FileBytes = "application/gzip"))),
        (status = 206, description = "A byte range", content((crate::openapi::FileBytes = "application/octet-stream"), (crate::openapi::FileBytes = "text/csv"), (crate::openapi::FileBytes = "text/tab-separated-values"),
            (crate::openapi::FileBytes = "application/json"), (crate::openapi::FileBytes = "application/x-ndjson"),
            (crate::openapi::FileBytes = "application/vnd.apache.parquet"), (crate::openapi::FileBytes = "application/zip"),
            (crate::openapi::FileBytes = "application/gzip"))),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 403, description = "Bad, non-canonical or expired signature", body = crate::error::ErrorEnvelope),
        (status = 409, description = "EXPORT_NOT_READY, EXPORT_FAILED or EXPORT_CANCELLED", body = crate::error::ErrorEnvelope),
        (status = 410, description = "The artifact itself expired", body = crate::error::ErrorEnvelope),
        (status = 412, description = "If-Match did not match the ETag", body = crate::error::ErrorEnvelope),
        (status = 416, description = "Range not satisfiable", body = crate::error::ErrorEnvelope)))]
#[get("/v1/exports/{exportId}/file")]
pub async fn signed_file(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<FileQuery>,
) -> Result<HttpResponse, ApiError> {
    let rec = verify_link(&state, &path, &query, req.query_string()).await?;
    signed_answer(&state, &req, &rec, query.path.as_deref()).await
}

/// What a verified link serves: a file of a dataset (its path), a dataset's manifest, or the
/// export's file.
async fn signed_answer(
    state: &AppState,
    req: &HttpRequest,
    rec: &ExportRecord,
    path: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    match path {
        Some(p) => {
            let file = datasets::one_file(state, rec, p).await?;
            stream(state, req, &file, Download::SIGNED_LINK).await
        }
        None if rec.is_dataset() => datasets::manifest(state, rec).await,
        None => stream(state, req, rec, Download::SIGNED_LINK).await,
    }
}

/// The headers `GET` of the signed link would send, no body.
#[utoipa::path(head, path = "/v1/exports/{exportId}/file", tag = "downloads", security(()),
    operation_id = "download_signed_file_headers",
    params(("exportId" = uuid::Uuid, Path), FileQuery),
    responses((status = 200, description = "The file's headers"),
        (status = 403, description = "Bad, non-canonical or expired signature"),
        (status = 409, description = "EXPORT_NOT_READY, EXPORT_FAILED or EXPORT_CANCELLED"),
        (status = 410, description = "The artifact itself expired")))]
#[head("/v1/exports/{exportId}/file")]
pub async fn signed_file_headers(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<FileQuery>,
) -> Result<HttpResponse, ApiError> {
    let rec = verify_link(&state, &path, &query, req.query_string()).await?;
    signed_answer(&state, &req, &rec, query.path.as_deref()).await
}

/// Every failure is the same 403, so a link reveals nothing about other exports. Only the
/// form the API prints verifies: the id hyphenated in lowercase, `expires` as plain decimal
/// digits, `sig` as 64 lowercase hex digits, the three parameters alone and in that order,
/// and an expiry no further ahead than `WHARF_LINK_TTL`.
async fn verify_link(
    state: &AppState,
    raw_id: &str,
    q: &FileQuery,
    raw_query: &str,
) -> Result<ExportRecord, ApiError> {
    let forbidden = || Error::Forbidden("invalid or expired download link".into());
    let id = uuid::Uuid::parse_str(raw_id).map_err(|_| forbidden())?;
    let (Some(expires_raw), Some(kid), Some(sig)) =
        (q.expires.as_deref(), q.kid.as_deref(), q.sig.as_deref())
    else {
        return Err(forbidden().into());
    };
    let path = q.path.as_deref().map_or(String::new(), |p| {
        format!("path={}&", wharf_shared::domain::dataset::percent_encode(p))
    });
    let canonical = id.to_string() == raw_id
        && raw_query == format!("{path}expires={expires_raw}&kid={kid}&sig={sig}")
        && signing::is_canonical(expires_raw, sig);
    if !canonical {
        return Err(forbidden().into());
    }
    let expires: i64 = expires_raw.parse().map_err(|_| forbidden())?;
    let ttl = state.settings.link_ttl.as_secs() as i64;
    if expires > Utc::now().timestamp() + ttl + signing::CLOCK_SKEW_SECS {
        return Err(forbidden().into());
    }
    let rec = exports::get_any(&state.pool, id)
        .await?
        .ok_or_else(forbidden)?;
    let claims = LinkClaims {
        export_id: rec.id,
        workflow_id: rec.link_workflow(),
        format: &rec.format,
        expires,
        path: q.path.as_deref(),
    };
    if !signing::verify(&state.settings.signing_keys, kid, sig, &claims) {
        return Err(forbidden().into());
    }
    let now = Utc::now();
    if rec.effective_status(now) == ExportStatus::Expired {
        return Err(Error::ExportExpired.into());
    }
    if expires < now.timestamp() {
        return Err(forbidden().into());
    }
    Ok(rec)
}
