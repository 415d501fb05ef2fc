use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use wharf_shared::Error;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::ingest::{BodyFormat, IngestLimits, ingest_run};
use wharf_shared::repo::runs::{self, Run};

use super::{List, ListQuery};
use crate::app::workflows::find;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunDto {
    pub run_id: uuid::Uuid,
    pub workflow_id: uuid::Uuid,
    pub row_count: i64,
    pub executed_at: DateTime<Utc>,
}

impl From<Run> for RunDto {
    fn from(r: Run) -> Self {
        RunDto {
            run_id: r.id,
            workflow_id: r.workflow_id,
            row_count: r.row_count,
            executed_at: r.executed_at,
        }
    }
}

fn body_format(req: &HttpRequest) -> Result<BodyFormat, Error> {
    let essence = crate::json::media_type(req);
    BodyFormat::from_media_type(essence).ok_or_else(|| {
        Error::UnsupportedMediaType(format!(
            "Content-Type \"{}\" is not accepted for a run: use application/x-ndjson, application/json or text/csv",
            wharf_shared::domain::schema::printable(essence)
        ))
    })
}

/// Ingests a run: the body's rows, streamed and checked against the schema, stored all or
/// nothing (write scope). A bad row rejects the run with 400 naming its line and field.
#[utoipa::path(post, path = "/v1/workflows/{workflowId}/runs", tag = "runs",
    params(("workflowId" = uuid::Uuid, Path)),
    request_body(description = "Rows as NDJSON, a JSON array of objects, or CSV with a header row (an empty CSV field is null)",
        content(
            (crate::openapi::FileBytes = "application/x-ndjson"),
            (Vec<serde_json::Value> = "application/json"),
            (crate::openapi::FileBytes = "text/csv"))),
    responses((status = 201, body = RunDto), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope),
        (status = 408, description = "The body sent nothing for WHARF_BODY_TIMEOUT", body = crate::error::ErrorEnvelope),
        (status = 413, description = "The body is over WHARF_MAX_RUN_BYTES, or one row over WHARF_MAX_ROW_BYTES (the message names its line)", body = crate::error::ErrorEnvelope),
        (status = 415, body = crate::error::ErrorEnvelope),
        (status = 429, description = "WHARF_RATE_LIMIT, or WHARF_PROJECT_INGESTS uploads of this project already running", body = crate::error::ErrorEnvelope)))]
#[post("/v1/workflows/{workflowId}/runs")]
pub async fn create_run(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Write)?;
    let wf = find(&state, principal.project_id, &path).await?;
    let format = body_format(&req)?;
    let limit = state.settings.max_run_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit }.into());
    }
    let _slot = state.ingest_slots.acquire(principal.project_id)?;
    let limits = IngestLimits {
        max_body: limit,
        max_row: state.settings.max_row_bytes,
        body_timeout: state.settings.body_timeout,
    };
    let started = std::time::Instant::now();
    let run = ingest_run(&state.pool, &state.ingest_gate, &wf, format, body, limits).await?;
    tracing::info!(workflow_id = %wf.id, run_id = %run.id, rows = run.row_count,
        ms = started.elapsed().as_millis() as u64, "run ingested");
    Ok(HttpResponse::Created().json(RunDto::from(run)))
}

/// The workflow's runs, newest first (read scope).
#[utoipa::path(get, path = "/v1/workflows/{workflowId}/runs", tag = "runs",
    params(("workflowId" = uuid::Uuid, Path), ListQuery),
    responses((status = 200, body = List<RunDto>), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/v1/workflows/{workflowId}/runs")]
pub async fn list_runs(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let wf = find(&state, principal.project_id, &path).await?;
    let (rows, next) = runs::list(&state.pool, wf.id, query.page()?).await?;
    Ok(HttpResponse::Ok().json(List::new(
        rows.into_iter().map(RunDto::from).collect(),
        next,
    )))
}
