//! Exports (and bundles and imports) and their dock statuses, by concern: what the API writes
//! (`create`) and reads (`reads`), their jobs in the ledger (claims, leases, heartbeats, fenced
//! completion, the reconciler; `ledger`), the uploads of attempts (`uploads`) and retention
//! (`retention`). Every state change is a conditional
//! update; callers use `repo::exports::…` whichever file holds it.

mod create;
mod ledger;
mod parts;
mod reads;
mod retention;
mod uploads;

pub use create::*;
pub use ledger::*;
pub use parts::*;
pub use reads::*;
pub use retention::*;
pub use uploads::*;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::export::ExportSpec;
use crate::domain::states::{ExportScope, ExportStatus, JobKind};
use crate::error::{Error, Result};

pg_row! {
    #[derive(Debug, Clone)]
    pub struct ExportRecord {
        pub id: Uuid,
        pub project_id: Uuid,
        /// None for a bundle of a whole project (scope schema or database).
        pub workflow_id: Option<Uuid>,
        pub run_id: Option<Uuid>,
        pub kind: JobKind,
        pub scope: ExportScope,
        /// An import's bundle (an uploaded file).
        pub file_id: Option<Uuid>,
        /// An import's name for the workflow it creates.
        pub import_name: Option<String>,
        /// What an import created.
        pub result: Option<Json<serde_json::Value>>,
        pub format: String,
        pub compression: String,
        pub params: Json<ExportSpec>,
        pub status: ExportStatus,
        /// The job's (the ledger's `jobs` row of the same id).
        pub attempts: i32,
        pub max_attempts: i32,
        pub lease_token: Option<Uuid>,
        pub rows_written: i64,
        pub rows_total: Option<i64>,
        pub bytes_written: i64,
        pub row_count: Option<i64>,
        pub size_bytes: Option<i64>,
        pub sha256: Option<String>,
        pub object_key: Option<String>,
        pub content_type: Option<String>,
        pub file_name: Option<String>,
        pub error_code: Option<crate::domain::states::FailureCode>,
        pub error_message: Option<String>,
        pub request_hash: Option<String>,
        pub request_id: Option<String>,
        pub created_at: DateTime<Utc>,
        pub started_at: Option<DateTime<Utc>>,
        pub completed_at: Option<DateTime<Utc>>,
        pub expires_at: Option<DateTime<Utc>>,
        pub dock_status_id: Uuid,
        pub job_type: String,
        pub run_executed_at: Option<DateTime<Utc>>,
        /// The run's rows (a run never changes once stored).
        pub run_row_count: Option<i64>,
        /// Where the primary's WAL stood once the run was committed (a replica that has
        /// replayed past it holds the run).
        pub run_commit_lsn: Option<String>,
        /// A dataset's parts (None: a single file) and how many are done.
        pub parts_total: Option<i32>,
        pub parts_completed: i32,
    }
}

impl ExportRecord {
    /// A bundle (definitions and data as one ZIP), not one run's rows.
    pub fn is_bundle(&self) -> bool {
        self.scope != ExportScope::Table
    }

    /// A dataset of many files (API.md "Large exports"), not one file.
    pub fn is_dataset(&self) -> bool {
        self.params.0.dataset.is_some()
    }

    /// The workflow id the signed link covers (nil for a project's bundle).
    pub fn link_workflow(&self) -> Uuid {
        self.workflow_id.unwrap_or_default()
    }

    /// The object to download, or the error that says why there is none.
    pub fn downloadable(&self, now: DateTime<Utc>) -> Result<&str> {
        match self.effective_status(now) {
            ExportStatus::Completed => self.object_key.as_deref().ok_or(Error::ExportNotReady),
            ExportStatus::Queued | ExportStatus::InProgress => Err(Error::ExportNotReady),
            ExportStatus::Failed => Err(Error::ExportFailed(
                self.error_message.clone().unwrap_or_default(),
            )),
            ExportStatus::Cancelled => Err(Error::ExportCancelled),
            ExportStatus::Expired => Err(Error::ExportExpired),
        }
    }

    /// The status a client sees: a completed export past its retention reads EXPIRED at once,
    /// before the janitor has removed the object.
    pub fn effective_status(&self, now: DateTime<Utc>) -> ExportStatus {
        match (self.status, self.expires_at) {
            (ExportStatus::Completed, Some(exp)) if exp <= now => ExportStatus::Expired,
            (s, _) => s,
        }
    }

    /// Seconds left for a running export whose row count is known: at its own pace once it has
    /// written rows for a moment (rows so far over the time since it started), else at
    /// `recent`, the recent rows/s of exports of its format (which small exports pull far
    /// below what a large one reads: the pace of one-row exports once gave 43,460 s for a job
    /// of 5).
    pub fn eta_seconds(&self, now: DateTime<Utc>, recent: Option<f64>) -> Option<f64> {
        let running_for = self
            .started_at
            .map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
        eta(self.rows_total?, self.rows_written, running_for, recent)
    }
}

/// Seconds left for `total` rows with `written` done after `running_for` seconds: at that own
/// pace after half a second of it, else at `recent` rows/s; to a tenth of a second.
pub fn eta(total: i64, written: i64, running_for: Option<f64>, recent: Option<f64>) -> Option<f64> {
    let left = (total - written).max(0) as f64;
    let own = running_for
        .filter(|secs| *secs >= 0.5 && written > 0)
        .map(|secs| written as f64 / secs);
    let rate = own.or(recent).filter(|r| *r > 0.0)?;
    Some((left / rate * 10.0).round() / 10.0)
}

const SELECT: &str =
    "SELECT e.*, j.attempts, j.max_attempts, j.lease_token, d.id AS dock_status_id, d.job_type,
        r.executed_at AS run_executed_at, r.row_count AS run_row_count,
        r.commit_lsn::text AS run_commit_lsn
    FROM exports e JOIN jobs j ON j.id = e.id JOIN dock_statuses d ON d.export_id = e.id
        LEFT JOIN runs r ON r.id = e.run_id";

#[cfg(test)]
mod tests {
    #[test]
    fn the_eta_follows_the_exports_own_pace_once_it_has_one() {
        // 3M rows, 600k written in 1 s: 4 s left, whatever one-row exports did recently.
        assert_eq!(
            super::eta(3_000_000, 600_000, Some(1.0), Some(69.0)),
            Some(4.0)
        );
        // Before any row: the format's recent pace.
        assert_eq!(
            super::eta(3_000_000, 0, Some(0.2), Some(1_000_000.0)),
            Some(3.0)
        );
        // Too soon to tell its own pace, no recent one: none rather than a guess.
        assert_eq!(super::eta(3_000_000, 10, Some(0.1), None), None);
        assert_eq!(super::eta(10, 10, Some(2.0), None), Some(0.0));
    }
}
