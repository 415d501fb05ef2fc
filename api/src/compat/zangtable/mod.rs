//! Zangtable's dialect: the project-scoped routes' envelope (`{"ok", "data", "error",
//! "request_id", "meta"}`, codes in snake_case), its Bearer-key principal and its `exp_` ids.

mod routes;

pub use routes::*;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use wharf_shared::{Error, auth};

use crate::auth::presented_key;
use crate::error::{ApiError, Enveloped, status_of};
use crate::request_id;
use crate::state::AppState;

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
