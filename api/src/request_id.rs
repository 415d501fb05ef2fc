//! Every request gets an id (the client's `x-request-id` when it is sane), carried in the
//! tracing span, every error body and the response header. Errors that actix produces itself
//! (unknown route, wrong method) are rewritten into the envelope here, so every error has it.

use actix_web::HttpMessage;
use actix_web::HttpResponse;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;
use wharf_shared::ErrorCode;

use crate::error::{Enveloped, envelope_response};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task (empty outside a request).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The request id as a request extension, for handlers that pass it on (e.g. into a job).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The longest request target served; longer is 414 in the envelope.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most request headers served; more is 431 in the envelope.
pub const MAX_HEADERS: usize = 64;

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = incoming_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = std::time::Instant::now();
    let result = REQUEST_ID
        .scope(id.clone(), async {
            if let Some(refused) = refuse_head(&req) {
                return Ok(req.into_response(refused));
            }
            // Handlers and extractors turn their errors into responses; an Err here comes
            // from actix itself and is left to it.
            next.call(req)
                .await
                .map(|res| ensure_envelope(res.map_into_boxed_body()))
        })
        .instrument(span.clone())
        .await;
    let mut res = result?;
    stamp(res.headers_mut(), &id);
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request served"
        );
    });
    Ok(res)
}

/// The client's request id when it is a sane one, else a new one.
fn incoming_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(String::from)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()))
}

/// The headers every answer carries: its request id, nosniff, and no-store unless the route
/// set its own caching (API answers carry keys and signed links; downloads say theirs).
fn stamp(headers: &mut actix_web::http::header::HeaderMap, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(HEADER, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Request heads over Wharf's own limits (actix's are far larger), refused in the envelope.
fn refuse_head(req: &ServiceRequest) -> Option<HttpResponse> {
    let uri_len = req.uri().to_string().len();
    let (status, message) = if uri_len > MAX_URI_BYTES {
        (
            StatusCode::URI_TOO_LONG,
            format!("the request URI has {uri_len} bytes; the limit is {MAX_URI_BYTES}"),
        )
    } else if req.headers().len() > MAX_HEADERS {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request has {} headers; the limit is {MAX_HEADERS}",
                req.headers().len()
            ),
        )
    } else {
        return None;
    };
    let mut res = envelope_response(ErrorCode::InvalidRequest, message);
    *res.status_mut() = status;
    Some(res)
}

/// Rewrites an error response that is not yet in the envelope (actix's own 404/405/...).
fn ensure_envelope(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if status.as_u16() < 400 || res.response().extensions().get::<Enveloped>().is_some() {
        return res;
    }
    if status == StatusCode::NOT_FOUND {
        // No handler matched: a known path with another method is 405, naming what it allows.
        if let Some(allowed) = crate::openapi::allowed_methods(res.request().path()) {
            let method = res.request().method().as_str().to_string();
            let mut envelope = envelope_response(
                ErrorCode::MethodNotAllowed,
                format!(
                    "method {method} is not allowed on this route; allowed: {}",
                    allowed.join(", ")
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                envelope.headers_mut().insert(header::ALLOW, v);
            }
            return res.into_response(envelope);
        }
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route".into(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            ErrorCode::PayloadTooLarge,
            "request body is too large".into(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "unsupported content type".into(),
        ),
        s if s.is_client_error() => (ErrorCode::InvalidRequest, "invalid request".into()),
        _ => (ErrorCode::Internal, "internal error".into()),
    };
    let mut envelope = envelope_response(code, message);
    // Keep the original status (405 stays 405) while using the envelope's body.
    *envelope.status_mut() = status;
    res.into_response(envelope)
}
