//! Serving a finished export's bytes through the API: its headers (type, disposition, ETag,
//! length), Range (206/416), HEAD and the conditional requests. Every download route (the
//! stream mode, the signed link, the seed products' download routes) answers with this.

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use wharf_shared::domain::export::content_disposition;
use wharf_shared::repo::exports::ExportRecord;
use wharf_shared::store::ObjectMeta;
use wharf_shared::{Error, ErrorCode};

use crate::error::{ApiError, envelope_response};
use crate::state::AppState;

pub fn meta_of(rec: &ExportRecord) -> ObjectMeta {
    ObjectMeta {
        content_type: rec
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
        content_disposition: content_disposition(rec.file_name.as_deref().unwrap_or("export")),
    }
}

/// One `bytes=` range (first-last, first-, -suffix); anything else serves the whole file.
fn parse_range(value: Option<&str>, size: u64) -> Range {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => Some((first, last.min(size.saturating_sub(1)))),
        (Ok(_), Ok(_)) => return Range::Full,
        (Ok(first), Err(_)) if b.is_empty() => Some((first, size.saturating_sub(1))),
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 {
                return Range::Unsatisfiable;
            }
            Some((size.saturating_sub(n), size.saturating_sub(1)))
        }
        _ => return Range::Full,
    };
    match parsed {
        Some((first, _)) if first >= size => Range::Unsatisfiable,
        Some((first, last)) => Range::Part(first, last),
        None => Range::Full,
    }
}

/// The file through the API: Content-Type/-Length/-Disposition, ETag, Last-Modified (its
/// completion), Accept-Ranges, Range (206/416), HEAD, If-None-Match and If-Modified-Since.
pub async fn stream(
    state: &AppState,
    req: &HttpRequest,
    rec: &ExportRecord,
    by: Download<'_>,
) -> Result<HttpResponse, ApiError> {
    let key = rec.downloadable(Utc::now())?.to_string();
    let size = rec.size_bytes.unwrap_or(0).max(0) as u64;
    let v = Validators::of(rec);
    if let Some(answer) = v.preconditions(req) {
        return Ok(answer);
    }
    let (status, range) = match parse_range(range_asked(req, &v), size) {
        Range::Full => (StatusCode::OK, None),
        Range::Part(a, b) => (StatusCode::PARTIAL_CONTENT, Some((a, b))),
        Range::Unsatisfiable => return unsatisfiable(size),
    };
    let len = range.map_or(size, |(a, b)| b - a + 1);
    let meta = meta_of(rec);
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CONTENT_TYPE, meta.content_type))
        .insert_header((header::CONTENT_DISPOSITION, meta.content_disposition))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "private, max-age=0"));
    v.headers(&mut res);
    if let Some((a, b)) = range {
        res.insert_header((header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}")));
    }
    if req.method() == Method::HEAD || len == 0 {
        return Ok(res.body(SizedStream::new(
            len,
            futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
        )));
    }
    let body = bytes_of(state, req, rec, &key, range, by).await?;
    Ok(res.body(SizedStream::new(len, body)))
}

/// The Range asked for, unless If-Range names anything but the current strong ETag: then the
/// whole file, not a part of a stale one.
fn range_asked<'r>(req: &'r HttpRequest, v: &Validators) -> Option<&'r str> {
    match header_str(req, header::IF_RANGE) {
        Some(tag) if tag.trim() != v.etag => None,
        _ => header_str(req, header::RANGE),
    }
}

/// The stored bytes of `range`, counted into the download's audit event as they go out.
async fn bytes_of(
    state: &AppState,
    req: &HttpRequest,
    rec: &ExportRecord,
    key: &str,
    range: Option<(u64, u64)>,
    by: Download<'_>,
) -> Result<impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + use<>, ApiError> {
    let mut event = crate::app::audit::event(req, rec.project_id, "export.downloaded", by.actor);
    event.export_id = Some(rec.id);
    event.route = Some(by.route.to_string());
    event.range = range.map(|(a, b)| format!("bytes={a}-{b}"));
    let mut sent = crate::app::audit::Sent::new(state.audit.clone(), event);
    Ok(state
        .store
        .get(key, range)
        .await?
        .map(move |chunk| {
            if let Ok(b) = &chunk {
                sent.add(b.len());
            }
            chunk
        })
        .map_err(|e| {
            // actix-http's own log of a failed body is silenced (see telemetry): say it here.
            tracing::warn!(error = %e, "download stream failed midway; the client gets a cut body");
            std::io::Error::other(e)
        }))
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// 416, with the size the range missed.
fn unsatisfiable(size: u64) -> Result<HttpResponse, ApiError> {
    let mut res = envelope_response(
        ErrorCode::InvalidRequest,
        format!("Range not satisfiable: the file has {size} bytes"),
    );
    *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    res.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}"))
            .map_err(|e| Error::Unexpected(e.into()))?,
    );
    Ok(res)
}

/// A file's validators: its strong ETag (the sha256) and Last-Modified (its completion; HTTP
/// dates count whole seconds, so truncated).
struct Validators {
    etag: String,
    modified: Option<header::HttpDate>,
}

impl Validators {
    fn of(rec: &ExportRecord) -> Validators {
        Validators {
            etag: format!("\"{}\"", rec.sha256.as_deref().unwrap_or_default()),
            modified: rec.completed_at.map(|t| {
                let secs = u64::try_from(t.timestamp()).unwrap_or(0);
                header::HttpDate::from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            }),
        }
    }

    fn headers(&self, res: &mut actix_web::HttpResponseBuilder) {
        res.insert_header((header::ETAG, self.etag.clone()));
        if let Some(m) = self.modified {
            res.insert_header((header::LAST_MODIFIED, m));
        }
    }

    /// The answer the conditional headers call for instead of the file: 412 when If-Match
    /// does not match (strong comparison, RFC 9110 13.1.1), 304 when If-None-Match matches
    /// (weak comparison, 13.1.2) or, without it, If-Modified-Since is not before the
    /// completion (13.1.3).
    fn preconditions(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let etag = self.etag.as_str();
        if let Some(v) = header_str(req, header::IF_MATCH)
            && !v.split(',').any(|t| t.trim() == etag || t.trim() == "*")
        {
            let mut res = envelope_response(
                ErrorCode::InvalidRequest,
                format!("If-Match: the file's ETag is {etag}"),
            );
            *res.status_mut() = StatusCode::PRECONDITION_FAILED;
            return Some(res);
        }
        let not_modified = match header_str(req, header::IF_NONE_MATCH) {
            Some(v) => v
                .split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*"),
            None => header_str(req, header::IF_MODIFIED_SINCE)
                .and_then(|v| v.parse::<header::HttpDate>().ok())
                .zip(self.modified)
                .is_some_and(|(since, m)| {
                    std::time::SystemTime::from(m) <= std::time::SystemTime::from(since)
                }),
        };
        not_modified.then(|| {
            let mut res = HttpResponse::NotModified();
            self.headers(&mut res);
            res.finish()
        })
    }
}

/// Who downloads, and by which route, for the audit log.
#[derive(Clone, Copy)]
pub struct Download<'a> {
    /// The key's prefix, or "signed link".
    pub actor: &'a str,
    /// stream, signed link, or a seed product's route.
    pub route: &'a str,
}

impl<'a> Download<'a> {
    pub fn streamed_by(principal: &'a wharf_shared::auth::Principal) -> Download<'a> {
        Download {
            actor: &principal.key_prefix,
            route: "stream",
        }
    }

    pub const SIGNED_LINK: Download<'static> = Download {
        actor: "signed link",
        route: "signed link",
    };
}

enum Range {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}
