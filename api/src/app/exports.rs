//! The export use cases every dialect calls: create (validated, idempotent, enqueued), find
//! (from memory when finished), wait for a final status, sign its keyless link, and where a
//! waiting export stands.

use chrono::Utc;
use sha2::{Digest, Sha256};
use wharf_shared::Error;
use wharf_shared::auth::Principal;
use wharf_shared::domain::export::ExportRequest;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::domain::states::{ExportScope, ExportStatus};
use wharf_shared::repo::exports::{self, Created, ExportRecord, NewExport};

use super::workflows::find;
use crate::auth::parse_id;
use crate::error::ApiError;
use crate::request_id;
use crate::state::AppState;

/// Where a waiting export stands: its place in its project's queue, and once its row count is
/// known, the seconds left (at its own pace once it has one, else the recent pace of its
/// format). Finished exports cost nothing.
pub async fn standing(
    state: &AppState,
    r: &ExportRecord,
) -> Result<(Option<i64>, Option<f64>), ApiError> {
    let status = r.effective_status(Utc::now());
    let position = if status == ExportStatus::Queued {
        Some(exports::queue_position(&state.pool, r.project_id, r.id).await?)
    } else {
        None
    };
    let eta = match (status.is_active(), r.rows_total) {
        // Its own pace when it has one; the format's recent pace (a query) only when not.
        (true, Some(_)) => match r.eta_seconds(Utc::now(), None) {
            Some(eta) => Some(eta),
            None => {
                let recent = exports::recent_rows_per_second(&state.pool, &r.format).await?;
                r.eta_seconds(Utc::now(), recent)
            }
        },
        _ => None,
    };
    Ok((position, eta))
}

/// Long poll: the export as soon as it reaches a final status, or as it is after `within`.
pub(crate) async fn wait_final(
    state: &AppState,
    rec: ExportRecord,
    within: std::time::Duration,
) -> Result<ExportRecord, ApiError> {
    // A project's open long polls are capped (each holds a socket and a waiter).
    let _slot = state.long_polls.acquire(rec.project_id)?;
    let deadline = tokio::time::Instant::now() + within;
    let watch = state.waiters.watch(rec.id);
    loop {
        let notified = watch.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read after registering: a finish between the two is never missed.
        let cur = exports::get(&state.pool, rec.project_id, rec.id)
            .await?
            .ok_or(Error::NotFound("export"))?;
        let now = tokio::time::Instant::now();
        if !cur.effective_status(Utc::now()).is_active() || now >= deadline {
            return Ok(cur);
        }
        let left = deadline - now;
        let tick = if state.waiters.is_live() {
            left
        } else {
            left.min(crate::waiters::FALLBACK_POLL)
        };
        tokio::time::timeout(tick, notified).await.ok();
    }
}

/// Creates the export job and a hash that identifies its parameters.
/// The run an export covers: the one asked for (404 unless it is the workflow's), else the
/// workflow's latest.
async fn run_of(
    state: &AppState,
    workflow_id: uuid::Uuid,
    asked: Option<uuid::Uuid>,
) -> Result<uuid::Uuid, ApiError> {
    Ok(match asked {
        Some(id) if exports::run_exists(&state.pool, workflow_id, id).await? => id,
        Some(_) => return Err(Error::NotFound("run").into()),
        None => exports::latest_run(&state.pool, workflow_id)
            .await?
            .ok_or(Error::NotFound("run (the workflow has no runs yet)"))?,
    })
}

pub async fn create_export(
    state: &AppState,
    by: &crate::app::audit::By,
    workflow_raw: &str,
    request: &ExportRequest,
    canonical: &serde_json::Value,
    idempotency_key: Option<&str>,
) -> Result<Created, ApiError> {
    let project_id = by.project_id;
    let wf = find(state, project_id, workflow_raw).await?;
    let spec = request.validate(&wf.fields)?;
    let run_id = run_of(state, wf.id, request.run_id).await?;
    let hash = hex::encode(Sha256::digest(format!("{}\n{canonical}", wf.id).as_bytes()));
    let request_id = request_id::current();
    let new = NewExport {
        project_id,
        workflow_id: wf.id,
        run_id,
        spec: &spec,
        idempotency_key,
        request_hash: &hash,
        request_id: &request_id,
        max_attempts: state.settings.max_attempts,
        queue_max: state.settings.project_queue_max,
    };
    let created = exports::create(&state.pool, new).await?;
    if let Created::New(rec) = &created {
        crate::app::audit::created(&state.audit, by, rec).await;
        wharf_shared::queue::wake_for(
            state.queue.as_ref(),
            &state.pool,
            rec.id,
            Some(request_id.clone()),
        )
        .await;
        tracing::info!(export_id = %rec.id, workflow_id = %wf.id, run_id = %run_id, format = spec.format.as_str(), "export created");
    }
    Ok(created)
}

/// An export of the principal's project; a bundle of the whole project (scope schema or
/// database) needs the admin scope.
pub async fn find_export(
    state: &AppState,
    principal: &Principal,
    raw: &str,
) -> Result<ExportRecord, ApiError> {
    let id = parse_id("exportId", raw)?;
    // A finished export changes only by a status change, which the process hears of at once:
    // polls of it are answered from memory (status polling's hot path: no query).
    let rec = match state.waiters.finished(id) {
        Some(rec) if rec.project_id == principal.project_id => rec,
        Some(_) => return Err(Error::NotFound("export").into()),
        None => {
            let rec = exports::get(&state.pool, principal.project_id, id)
                .await?
                .ok_or(Error::NotFound("export"))?;
            state.waiters.remember(&rec);
            rec
        }
    };
    require_for(principal, &rec)?;
    Ok(rec)
}

/// A project-level bundle (schema or database scope) is the admin's.
pub fn require_for(principal: &Principal, rec: &ExportRecord) -> Result<(), ApiError> {
    if matches!(rec.scope, ExportScope::Schema | ExportScope::Database) {
        principal.require(Scope::Admin)?;
    }
    Ok(())
}
