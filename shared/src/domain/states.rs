//! The states of jobs and uploads, as enums, and the one place that maps them to the strings of
//! the API and of the schema of record (the `status`/`state` text columns).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An export's lifecycle (API.md, Status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExportStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl ExportStatus {
    pub const ALL: [ExportStatus; 6] = [
        ExportStatus::Queued,
        ExportStatus::InProgress,
        ExportStatus::Completed,
        ExportStatus::Failed,
        ExportStatus::Cancelled,
        ExportStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportStatus::Queued => "QUEUED",
            ExportStatus::InProgress => "IN_PROGRESS",
            ExportStatus::Completed => "COMPLETED",
            ExportStatus::Failed => "FAILED",
            ExportStatus::Cancelled => "CANCELLED",
            ExportStatus::Expired => "EXPIRED",
        }
    }

    /// From the API's spelling, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// Still to run or running: a poller waits.
    pub fn is_active(self) -> bool {
        matches!(self, ExportStatus::Queued | ExportStatus::InProgress)
    }

    /// The generic job record's status (API.md, Dock status).
    pub fn dock(self) -> DockStatus {
        match self {
            ExportStatus::Queued | ExportStatus::InProgress => DockStatus::InProgress,
            ExportStatus::Completed => DockStatus::Success,
            ExportStatus::Failed => DockStatus::Failed,
            ExportStatus::Cancelled => DockStatus::Cancelled,
            ExportStatus::Expired => DockStatus::Expired,
        }
    }
}

impl std::fmt::Display for ExportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dock status (the generic job record of every asynchronous job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DockStatus {
    InProgress,
    Success,
    Failed,
    Cancelled,
    Expired,
}

/// An upload of an export's object, tracked so the janitor can abort what a dead attempt left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Open,
    Completed,
    Aborted,
}

impl UploadState {
    pub const ALL: [UploadState; 3] = [
        UploadState::Open,
        UploadState::Completed,
        UploadState::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Open => "OPEN",
            UploadState::Completed => "COMPLETED",
            UploadState::Aborted => "ABORTED",
        }
    }
}

/// Why a job ended FAILED: the stable `error.code` of its status (the message says more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCode {
    /// The request cannot be served as it stands (e.g. a filter on a column since removed).
    InvalidRequest,
    /// The workflow or run was deleted meanwhile.
    NotFound,
    /// The object store failed on every attempt.
    StorageError,
    /// PostgreSQL or another backing service failed on every attempt.
    ServiceUnavailable,
    /// The worker running it was lost (killed, partitioned) on every attempt.
    WorkerLost,
    Internal,
    /// An import's bundle is not one Wharf can read: not a ZIP, no manifest, a missing or
    /// unlisted file, a path that leaves the bundle.
    BundleInvalid,
    /// A bundle of another major version.
    BundleVersion,
    /// A file's sha256 or size differs from the manifest's.
    ChecksumMismatch,
    /// A definition, a Parquet schema or a row does not fit (the message names it).
    SchemaMismatch,
    /// Declared sizes exceeded, or a compression ratio past the cap (a zip bomb).
    BundleTooLarge,
    /// A dataset's `partitionBy` found more distinct values than one export may have.
    TooManyPartitions,
}

impl FailureCode {
    pub const ALL: [FailureCode; 12] = [
        FailureCode::InvalidRequest,
        FailureCode::NotFound,
        FailureCode::StorageError,
        FailureCode::ServiceUnavailable,
        FailureCode::WorkerLost,
        FailureCode::Internal,
        FailureCode::BundleInvalid,
        FailureCode::BundleVersion,
        FailureCode::ChecksumMismatch,
        FailureCode::SchemaMismatch,
        FailureCode::BundleTooLarge,
        FailureCode::TooManyPartitions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::InvalidRequest => "INVALID_REQUEST",
            FailureCode::NotFound => "NOT_FOUND",
            FailureCode::StorageError => "STORAGE_ERROR",
            FailureCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            FailureCode::WorkerLost => "WORKER_LOST",
            FailureCode::Internal => "INTERNAL",
            FailureCode::BundleInvalid => "BUNDLE_INVALID",
            FailureCode::BundleVersion => "BUNDLE_VERSION",
            FailureCode::ChecksumMismatch => "CHECKSUM_MISMATCH",
            FailureCode::SchemaMismatch => "SCHEMA_MISMATCH",
            FailureCode::BundleTooLarge => "BUNDLE_TOO_LARGE",
            FailureCode::TooManyPartitions => "TOO_MANY_PARTITIONS",
        }
    }
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job of the ledger does: export rows (a file or a bundle) or import a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Export,
    Import,
}

impl JobKind {
    pub const ALL: [JobKind; 2] = [JobKind::Export, JobKind::Import];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Export => "export",
            JobKind::Import => "import",
        }
    }
}

/// What an export holds: one run's selected rows (`Table`), or a bundle of one workflow
/// (`Workflow`), of every definition of the project (`Schema`), or of every definition and run
/// (`Database`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportScope {
    Table,
    Workflow,
    Schema,
    Database,
}

impl ExportScope {
    pub const ALL: [ExportScope; 4] = [
        ExportScope::Table,
        ExportScope::Workflow,
        ExportScope::Schema,
        ExportScope::Database,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportScope::Table => "table",
            ExportScope::Workflow => "workflow",
            ExportScope::Schema => "schema",
            ExportScope::Database => "database",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Holds rows of runs.
    pub fn has_data(self) -> bool {
        !matches!(self, ExportScope::Schema)
    }
}

/// Stores a state enum as its `as_str` text (the columns are `text`): reads refuse any other
/// spelling. Written by hand, not derived, so sqlx's proc-macro crate (and the second, host
/// build of the PostgreSQL driver it brings) stays out of the build.
macro_rules! sql_text_enum {
    ($t:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $t {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $t {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $t {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| format!("unknown {} {text:?}", stringify!($t)).into())
            }
        }
    };
}

sql_text_enum!(ExportStatus);
sql_text_enum!(UploadState);
sql_text_enum!(FailureCode);
sql_text_enum!(JobKind);
sql_text_enum!(ExportScope);

/// An export status as an SQL string literal, for the text of statements: the planner matches
/// partial indexes (`WHERE status = 'QUEUED'`) only against literals, not bound parameters.
/// `sql_status!(Queued)` is `"'QUEUED'"`, for use inside `concat!`; a test holds every arm to
/// `as_str`.
#[macro_export]
macro_rules! sql_status {
    (Queued) => {
        "'QUEUED'"
    };
    (InProgress) => {
        "'IN_PROGRESS'"
    };
    (Completed) => {
        "'COMPLETED'"
    };
    (Failed) => {
        "'FAILED'"
    };
    (Cancelled) => {
        "'CANCELLED'"
    };
    (Expired) => {
        "'EXPIRED'"
    };
}

/// An upload state as an SQL string literal, like `sql_status!`.
#[macro_export]
macro_rules! sql_upload_state {
    (Open) => {
        "'OPEN'"
    };
    (Completed) => {
        "'COMPLETED'"
    };
    (Aborted) => {
        "'ABORTED'"
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_literals_match_the_mapping() {
        let quoted = |s: &str| format!("'{s}'");
        let pairs = [
            (sql_status!(Queued), ExportStatus::Queued),
            (sql_status!(InProgress), ExportStatus::InProgress),
            (sql_status!(Completed), ExportStatus::Completed),
            (sql_status!(Failed), ExportStatus::Failed),
            (sql_status!(Cancelled), ExportStatus::Cancelled),
            (sql_status!(Expired), ExportStatus::Expired),
        ];
        for (sql, status) in pairs {
            assert_eq!(sql, quoted(status.as_str()));
        }
        for code in FailureCode::ALL {
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::Value::String(code.as_str().into()))
            );
        }
        for (sql, state) in [
            (sql_upload_state!(Open), UploadState::Open),
            (sql_upload_state!(Completed), UploadState::Completed),
            (sql_upload_state!(Aborted), UploadState::Aborted),
        ] {
            assert_eq!(sql, quoted(state.as_str()));
        }
    }

    #[test]
    fn statuses_round_trip_their_api_spelling() {
        for s in ExportStatus::ALL {
            assert_eq!(ExportStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::Value::String(s.as_str().into()))
            );
        }
        assert_eq!(
            ExportStatus::parse("in_progress"),
            Some(ExportStatus::InProgress)
        );
        assert_eq!(ExportStatus::parse("done"), None);
        assert_eq!(ExportStatus::Queued.dock(), DockStatus::InProgress);
    }
}
