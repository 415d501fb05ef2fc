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
    /// A route of the operator's (`WHARF_ADMIN_TOKEN`), refused: what it wanted instead.
    #[error("{0}")]
    UnauthorizedOperator(&'static str),
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
    /// Logged with its SQLSTATE and the server's message (never shown to a client).
    #[error("database error: {}", db_detail(.0))]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
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
            Error::Unauthorized | Error::UnauthorizedOperator(_) => ErrorCode::Unauthorized,
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
            Error::Database(e) if db_class(e) != DbClass::Fatal => ErrorCode::ServiceUnavailable,
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

/// What a database error means for the work that met it, decided here once (by SQLSTATE class
/// for the server's errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbClass {
    /// The database is down, unreachable, out of connections or resources, shutting down:
    /// retry with backoff (a client gets 503).
    Unavailable,
    /// The statement lost a race (serialization failure, deadlock, a lock not available):
    /// retry with backoff.
    Contention,
    /// The request or the code is at fault: retrying cannot help.
    Fatal,
}

pub fn db_class(e: &sqlx::Error) -> DbClass {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DbClass::Unavailable,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => sqlstate_class(&code),
            None => DbClass::Fatal,
        },
        _ => DbClass::Fatal,
    }
}

/// 08 connection exception, 53 insufficient resources (53300 too many connections, disk full,
/// out of memory), 57P operator intervention (shutdown, crash recovery, cannot connect now):
/// unavailable. 40001 serialization failure, 40P01 deadlock, 55P03 lock not available:
/// contention. Everything else: fatal.
fn sqlstate_class(code: &str) -> DbClass {
    match code {
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
            DbClass::Unavailable
        }
        "40001" | "40P01" | "55P03" => DbClass::Contention,
        _ => DbClass::Fatal,
    }
}

/// A database error as the logs show it: the SQLSTATE and the server's message, or the
/// client's own description (I/O, pool, protocol).
fn db_detail(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("SQLSTATE {code}: {}", db.message()),
            None => db.message().to_string(),
        },
        other => other.to_string(),
    }
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

    #[test]
    fn sqlstates_are_classified_by_class() {
        for (code, class) in [
            ("53300", DbClass::Unavailable),
            ("53100", DbClass::Unavailable),
            ("57P01", DbClass::Unavailable),
            ("57P03", DbClass::Unavailable),
            ("08006", DbClass::Unavailable),
            ("40001", DbClass::Contention),
            ("40P01", DbClass::Contention),
            ("55P03", DbClass::Contention),
            ("23505", DbClass::Fatal),
            ("42P01", DbClass::Fatal),
            ("22P02", DbClass::Fatal),
        ] {
            assert_eq!(sqlstate_class(code), class, "{code}");
        }
    }
}
