//! The one place where domain error codes become HTTP statuses and the error envelope.

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;
use wharf_shared::{Error, ErrorCode};

use crate::request_id;

#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<wharf_shared::store::StoreError> for ApiError {
    fn from(e: wharf_shared::store::StoreError) -> Self {
        ApiError(e.into())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict
        | ErrorCode::ExportNotReady
        | ErrorCode::ExportFailed
        | ErrorCode::ExportCancelled => StatusCode::CONFLICT,
        ErrorCode::ExportExpired => StatusCode::GONE,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The envelope of every native error (API.md, Errors).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
    pub meta: ErrorMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `INVALID_REQUEST`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorMeta {
    pub request_id: String,
}

/// Marks a response whose body is already the envelope, so the request-id middleware
/// leaves it alone.
#[derive(Clone, Copy)]
pub struct Enveloped;

pub fn envelope_response(code: ErrorCode, message: String) -> HttpResponse {
    let body = ErrorEnvelope {
        error: ErrorBody {
            code: code.as_str().into(),
            message,
        },
        meta: ErrorMeta {
            request_id: request_id::current(),
        },
    };
    let mut res = HttpResponse::build(status_of(code)).json(body);
    if matches!(code, ErrorCode::RateLimited | ErrorCode::ServiceUnavailable) {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    }
    if code == ErrorCode::RequestTimeout {
        // The rest of a stalled body will never be read: close rather than keep the socket.
        res.head_mut().set_connection_type(ConnectionType::Close);
    }
    res.extensions_mut().insert(Enveloped);
    res
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status_of(self.0.code())
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.0.code();
        match code {
            ErrorCode::Internal | ErrorCode::ServiceUnavailable => {
                tracing::error!(code = code.as_str(), error = ?anyhow_chain(&self.0), "request failed");
            }
            _ => tracing::info!(code = code.as_str(), error = %self.0, "request rejected"),
        }
        let mut res = envelope_response(code, self.0.public_message());
        if let Some(secs) = self.0.retry_after() {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// The error with its whole cause chain, for logs only.
fn anyhow_chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
