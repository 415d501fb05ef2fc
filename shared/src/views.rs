//! The bodies that show an export: its status (with progress, queue position, ETA and signed
//! link) and the 202 of a create. The API answers them; a webhook event carries the same status
//! body as its `data`.

use crate::config::Settings;
use crate::domain::states::ExportStatus;
use crate::repo::exports::ExportRecord;
use crate::signing::{self, LinkClaims};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// 202 body of a create.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportCreated {
    pub export_id: uuid::Uuid,
    /// The same id: the export job.
    pub export_job_id: uuid::Uuid,
    pub dock_status_id: uuid::Uuid,
    pub workflow_id: Option<uuid::Uuid>,
    pub status: ExportStatus,
    pub status_url: String,
    pub download_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressDto {
    pub rows_written: i64,
    pub rows_total: i64,
    pub bytes_written: i64,
    pub percent: f64,
    /// While QUEUED: exports of the same project ahead of it (0 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i64>,
    /// Once rowsTotal is known: seconds left at the recent rows/s of exports of this format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportErrorDto {
    pub code: crate::domain::states::FailureCode,
    pub message: String,
}

/// The status of an export (API.md, Status).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportDto {
    pub export_id: uuid::Uuid,
    /// Null for a bundle of a whole project.
    pub workflow_id: Option<uuid::Uuid>,
    pub run_id: Option<uuid::Uuid>,
    /// csv, json, ndjson, parquet, or bundle (a ZIP of definitions and Parquet runs).
    pub format: String,
    /// table (one run's rows), or a bundle's: workflow, schema or database.
    pub scope: String,
    pub compression: String,
    pub status: ExportStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// When the exported run was executed.
    pub executed_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub progress: ProgressDto,
    pub row_count: Option<i64>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    /// Signed download link that needs no key (COMPLETED only), freshly signed on each read.
    pub url: Option<String>,
    pub url_expires_at: Option<DateTime<Utc>>,
    /// When the artifact's retention ends.
    pub expires_at: Option<DateTime<Utc>>,
    pub error: Option<ExportErrorDto>,
    pub status_url: String,
    pub download_url: String,
    /// While QUEUED: exports of the same project ahead of it (0 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i64>,
    /// Once rowsTotal is known and the export still runs: seconds left at the recent rows/s of
    /// exports of the same format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// A dataset's parts: how many, how many done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartsDto>,
    /// A COMPLETED dataset's files in manifest order, each with a signed link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileDto>>,
    /// A COMPLETED dataset's manifest with a signed link per file (no key needed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartsDto {
    pub total: i32,
    pub completed: i32,
}

/// One file of a dataset, as its manifest lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileDto {
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: String,
    /// Its partition's values (`{"country": "FR"}`; null values as null), when partitioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<serde_json::Value>,
    /// Signed link to the file (`WHARF_LINK_TTL`), no key needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A dataset's files as the status and the manifest download show them, each freshly signed.
pub fn file_dtos(
    settings: &Settings,
    r: &ExportRecord,
    files: &[crate::repo::exports::DatasetFile],
) -> Vec<FileDto> {
    files
        .iter()
        .map(|f| FileDto {
            path: f.path.clone(),
            rows: f.row_count,
            bytes: f.size_bytes,
            sha256: f.sha256.clone(),
            partition: f.partition.as_ref().map(|p| p.0.clone()),
            url: signed_file_link(settings, r, Some(&f.path)).map(|(u, _)| u),
        })
        .collect()
}

/// The status of a COMPLETED dataset: its files and its manifest's link added.
pub fn with_files(settings: &Settings, r: &ExportRecord, dto: &mut ExportDto, files: Vec<FileDto>) {
    dto.files = Some(files);
    dto.manifest_url = signed_link(settings, r).map(|(u, _)| u);
}

/// Percent done, to a tenth: 100 once completed (or expired), else rows written of the total.
fn percent_of(status: ExportStatus, written: i64, total: i64) -> f64 {
    match status {
        ExportStatus::Completed | ExportStatus::Expired => 100.0,
        _ if total > 0 => {
            ((written as f64 / total as f64) * 1000.0)
                .round()
                .min(1000.0)
                / 10.0
        }
        _ => 0.0,
    }
}

pub fn export_dto(settings: &Settings, r: &ExportRecord) -> ExportDto {
    let status = r.effective_status(Utc::now());
    let total = r.rows_total.unwrap_or(0);
    let (url, url_expires_at) = if status == ExportStatus::Completed {
        signed_link(settings, r).map_or((None, None), |(u, e)| (Some(u), Some(e)))
    } else {
        (None, None)
    };
    let base = &settings.public_url;
    ExportDto {
        export_id: r.id,
        workflow_id: r.workflow_id,
        run_id: r.run_id,
        format: r.format.clone(),
        scope: r.scope.as_str().to_string(),
        compression: r.compression.clone(),
        created_at: r.created_at,
        started_at: r.started_at,
        completed_at: r.completed_at,
        executed_at: r.run_executed_at,
        attempts: r.attempts,
        progress: ProgressDto {
            rows_written: r.rows_written,
            rows_total: total,
            bytes_written: r.bytes_written,
            percent: percent_of(status, r.rows_written, total),
            queue_position: None,
            eta_seconds: None,
        },
        row_count: r.row_count,
        size_bytes: r.size_bytes,
        sha256: r.sha256.clone(),
        url,
        url_expires_at,
        expires_at: r.expires_at,
        error: r.error_code.map(|code| ExportErrorDto {
            code,
            message: r.error_message.clone().unwrap_or_default(),
        }),
        status_url: format!("{base}/v1/exports/{}", r.id),
        download_url: format!("{base}/v1/exports/{}/download", r.id),
        status,
        queue_position: None,
        eta_seconds: None,
        parts: r.parts_total.map(|total| PartsDto {
            total,
            completed: r.parts_completed,
        }),
        files: None,
        manifest_url: None,
    }
}

pub fn created_dto(settings: &Settings, r: &ExportRecord) -> ExportCreated {
    let base = &settings.public_url;
    ExportCreated {
        export_id: r.id,
        export_job_id: r.id,
        dock_status_id: r.dock_status_id,
        workflow_id: r.workflow_id,
        status: r.effective_status(Utc::now()),
        status_url: format!("{base}/v1/exports/{}", r.id),
        download_url: format!("{base}/v1/exports/{}/download", r.id),
    }
}

/// The status body: the export with its queue position and ETA.
pub fn status_dto(
    settings: &Settings,
    rec: &ExportRecord,
    position: Option<i64>,
    eta: Option<f64>,
) -> ExportDto {
    let mut dto = export_dto(settings, rec);
    (dto.queue_position, dto.eta_seconds) = (position, eta);
    (dto.progress.queue_position, dto.progress.eta_seconds) = (position, eta);
    dto
}

/// The export's signed, keyless file link (`WHARF_LINK_TTL` from now) and when it expires.
pub fn signed_link(settings: &Settings, r: &ExportRecord) -> Option<(String, DateTime<Utc>)> {
    signed_file_link(settings, r, None)
}

/// The signed link of one file of a dataset (`path`), or of the export itself (None).
pub fn signed_file_link(
    settings: &Settings,
    r: &ExportRecord,
    path: Option<&str>,
) -> Option<(String, DateTime<Utc>)> {
    let expires = Utc::now().timestamp() + settings.link_ttl.as_secs() as i64;
    let claims = LinkClaims {
        export_id: r.id,
        workflow_id: r.link_workflow(),
        format: &r.format,
        expires,
        path,
    };
    signing::signed_url(&settings.public_url, &settings.signing_keys, &claims)
}
