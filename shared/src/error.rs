//! The one error type of the domain. Each variant carries a stable API code; only the `api`
//! crate maps codes to HTTP statuses and envelopes.

use crate::store::StoreError;

/// The codes of API.md's error envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    ExportNotReady,
    ExportFailed,
    ExportCancelled,
    ExportExpired,
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    RequestTimeout,
    RateLimited,
    ServiceUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::ExportNotReady => "EXPORT_NOT_READY",
            ErrorCode::ExportFailed => "EXPORT_FAILED",
            ErrorCode::ExportCancelled => "EXPORT_CANCELLED",
            ErrorCode::ExportExpired => "EXPORT_EXPIRED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; the message names the field (and line) at fault.
    #[error("{0}")]
    Invalid(String),
    #[error("invalid or missing API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// The named resource does not exist or belongs to another project.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// One row over `WHARF_MAX_ROW_BYTES`; the message names its line.
    #[error("{0}")]
    RowTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A body stalled for `WHARF_BODY_TIMEOUT`.
    #[error("{0}")]
    RequestTimeout(String),
    /// A limit on the rate or the number of things in flight; retry after that many seconds.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    #[error("Export is not yet completed")]
    ExportNotReady,
    #[error("Export failed: {0}")]
    ExportFailed(String),
    #[error("Export was cancelled")]
    ExportCancelled,
    #[error("Export has expired and its file was deleted")]
    ExportExpired,
    /// A job's input refused for good (an import's bundle): the failure code and message its
    /// status shows.
    #[error("{message}")]
    Refused {
        code: crate::domain::states::FailureCode,
        message: String,
    },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("object store error")]
    Storage(#[from] StoreError),
    #[error("unexpected error")]
    Unexpected(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid(_) | Error::Refused { .. } => ErrorCode::InvalidRequest,
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::PayloadTooLarge { .. } | Error::RowTooLarge(_) => ErrorCode::PayloadTooLarge,
            Error::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Error::RequestTimeout(_) => ErrorCode::RequestTimeout,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Error::ExportNotReady => ErrorCode::ExportNotReady,
            Error::ExportFailed(_) => ErrorCode::ExportFailed,
            Error::ExportCancelled => ErrorCode::ExportCancelled,
            Error::ExportExpired => ErrorCode::ExportExpired,
            Error::Database(e) if is_unavailable(e) => ErrorCode::ServiceUnavailable,
            Error::Storage(e) if e.is_unavailable() => ErrorCode::ServiceUnavailable,
            Error::Database(_) | Error::Storage(_) | Error::Unexpected(_) => ErrorCode::Internal,
        }
    }

    /// Seconds a client should wait before retrying (`Retry-After`), for the codes that have it.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after, .. } => Some((*retry_after).max(1)),
            _ if self.code() == ErrorCode::ServiceUnavailable => Some(5),
            _ => None,
        }
    }

    /// The message a client may see: internal causes never leak into it.
    pub fn public_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => "internal error".into(),
            ErrorCode::ServiceUnavailable => match self {
                Error::Database(_) => "the database is unavailable; retry shortly".into(),
                Error::Storage(_) => "the object store is unavailable; retry shortly".into(),
                other => format!("{other}; retry shortly"),
            },
            _ => self.to_string(),
        }
    }
}

/// Connection-level failures: the database is down or unreachable, not a bad query.
fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internals_never_reach_the_message() {
        let e = Error::Unexpected(anyhow::anyhow!("password=hunter2 at 10.0.0.1"));
        assert_eq!(e.code(), ErrorCode::Internal);
        assert_eq!(e.public_message(), "internal error");
        let e = Error::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(e.code(), ErrorCode::ServiceUnavailable);
        assert!(!e.public_message().contains("pool"));
    }
}
