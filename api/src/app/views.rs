//! The generic dock status of an export, bundle or import; the export's own bodies are
//! `wharf_shared::views`.

use serde::Serialize;
use utoipa::ToSchema;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::{DockStatus, JobKind};
use wharf_shared::repo::exports::ExportRecord;
pub use wharf_shared::views::*;

use crate::state::AppState;

/// The generic job record (read scope).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockStatusDto {
    pub dock_status_id: uuid::Uuid,
    pub job_type: String,
    pub action: String,
    /// IN_PROGRESS (queued or running), SUCCESS, FAILED, CANCELLED or EXPIRED.
    pub status: DockStatus,
    pub workflow_id: Option<uuid::Uuid>,
    pub export_job_id: uuid::Uuid,
    pub progress: ProgressDto,
    pub response: DockResponse,
    pub error: Option<ExportErrorDto>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockResponse {
    pub download_url: Option<String>,
}

/// The generic job record of an export, a bundle or an import.
pub fn dock_dto(state: &AppState, rec: &ExportRecord) -> DockStatusDto {
    let dto = export_dto(&state.settings, rec);
    let status = dto.status.dock();
    let (action, download_url, workflow_id) = match rec.kind {
        JobKind::Export => (
            "EXPORT",
            (status == DockStatus::Success).then(|| dto.download_url.clone()),
            rec.workflow_id,
        ),
        // An import names the workflow it made once it has made it.
        JobKind::Import => (
            "IMPORT",
            None,
            imported_workflows(rec)
                .first()
                .and_then(|w| w.get("workflowId"))
                .and_then(|v| v.as_str())
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .or(rec.workflow_id),
        ),
    };
    DockStatusDto {
        dock_status_id: rec.dock_status_id,
        job_type: rec.job_type.clone(),
        action: action.into(),
        status,
        workflow_id,
        export_job_id: rec.id,
        response: DockResponse { download_url },
        error: dto.error,
        progress: dto.progress,
    }
}

/// What an import created: `[{"sourceId", "workflowId", "name", "runs", "rows"}]`.
pub fn imported_workflows(rec: &ExportRecord) -> Vec<serde_json::Value> {
    rec.result
        .as_ref()
        .and_then(|r| r.0.get("workflows"))
        .and_then(|w| w.as_array())
        .cloned()
        .unwrap_or_default()
}

/// A key as created: its secret is in this body only.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: uuid::Uuid,
    /// The secret: shown only in this response, stored only as a hash.
    pub key: String,
    pub scopes: Vec<Scope>,
}
