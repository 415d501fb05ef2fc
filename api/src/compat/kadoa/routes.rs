//! Kadoa's reads, as its official SDK makes them (API.md, "Kadoa, reads"): workflows listed and
//! fetched in Kadoa's shape, and rows read synchronously a page at a time (or all at once with
//! `limit=0`), streamed in bounded memory.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use wharf_shared::Error;
use wharf_shared::domain::schema::Field;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::export::page::{self};
use wharf_shared::repo::runs;
use wharf_shared::repo::workflows::{self, WorkflowSummary};

use crate::app::workflows::find;
use crate::auth::{Auth, parse_id};
use crate::compat::kadoa::KadoaQuery;
use crate::compat::kadoa::pages::{PageAsk, PageShape, page_key, page_plan, slot_body};
use crate::error::ApiError;
use crate::state::AppState;

pub const DEFAULT_PAGE: u64 = 100;
/// The largest page (`limit`); `limit=0` streams the whole selection instead.
pub const MAX_PAGE: u64 = 10_000;
pub const DEFAULT_WORKFLOWS: i64 = 25;
pub const MAX_WORKFLOWS: i64 = 100;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KadoaWorkflow {
    pub id: uuid::Uuid,
    pub name: String,
    /// Always ACTIVE.
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub schema: Vec<Field>,
    /// Rows over all runs.
    pub total_records: i64,
    /// The latest run's executedAt.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<WorkflowSummary> for KadoaWorkflow {
    fn from(s: WorkflowSummary) -> Self {
        KadoaWorkflow {
            id: s.workflow.id,
            name: s.workflow.name,
            state: "ACTIVE".into(),
            created_at: s.workflow.created_at,
            schema: s.workflow.fields,
            total_records: s.total_records,
            finished_at: s.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub total_count: i64,
    pub page: i64,
    pub total_pages: i64,
    pub limit: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KadoaWorkflowList {
    pub workflows: Vec<KadoaWorkflow>,
    pub pagination: Pagination,
}

/// An integer parameter from `range` (`default` when absent); anything else is a 400 naming it
/// and the range.
pub(super) fn int_param(
    name: &str,
    raw: Option<&str>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{name}: expected an integer from {} to {}{}, got \"{}\"",
                range.start(),
                range.end(),
                if name == "page" {
                    " (pages start at 1)"
                } else {
                    ""
                },
                wharf_shared::domain::schema::printable(raw)
            ))
            .into()
        })
}

pub(super) fn bool_param(name: &str, raw: Option<&str>) -> Result<bool, ApiError> {
    match raw.map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(_) => Err(Error::invalid(format!("{name}: expected true or false")).into()),
    }
}

/// Kadoa: the project's workflows, newest first (read scope).
#[utoipa::path(get, operation_id = "kadoa_list_workflows", path = "/v4/workflows", tag = "compat", params(KadoaQuery),
    responses((status = 200, body = KadoaWorkflowList), (status = 400, body = crate::error::ErrorEnvelope)))]
#[get("/v4/workflows")]
pub async fn list(
    auth: Auth,
    state: web::Data<AppState>,
    query: web::Query<KadoaQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let limit = match int_param(
        "limit",
        query.limit.as_deref(),
        DEFAULT_WORKFLOWS as u64,
        0..=MAX_WORKFLOWS as u64,
    )? {
        0 => DEFAULT_WORKFLOWS,
        n => n as i64,
    };
    let skip = int_param("skip", query.skip.as_deref(), 0, 0..=1_000_000_000)? as i64;
    if query.search.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(
            Error::invalid("search: text may not contain the NUL character (U+0000)").into(),
        );
    }
    let search = query.search.as_deref().filter(|s| !s.is_empty());
    let (rows, total) =
        workflows::search(&state.pool, principal.project_id, search, skip, limit).await?;
    Ok(HttpResponse::Ok().json(KadoaWorkflowList {
        workflows: rows.into_iter().map(Into::into).collect(),
        pagination: Pagination {
            total_count: total,
            page: skip / limit + 1,
            total_pages: (total + limit - 1) / limit,
            limit,
        },
    }))
}

/// Kadoa: one workflow in Kadoa's shape (read scope).
#[utoipa::path(get, operation_id = "kadoa_get_workflow", path = "/v4/workflows/{workflowId}", tag = "compat",
    params(("workflowId" = uuid::Uuid, Path), KadoaQuery),
    responses((status = 200, body = KadoaWorkflow), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/v4/workflows/{workflowId}")]
pub async fn get_one(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    _query: web::Query<KadoaQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let id = parse_id("workflowId", &path)?;
    let wf = workflows::summary(&state.pool, principal.project_id, id)
        .await?
        .ok_or(Error::NotFound("workflow"))?;
    Ok(HttpResponse::Ok().json(KadoaWorkflow::from(wf)))
}

/// Kadoa: rows of a run, one page at a time (`page` from 1, `limit` rows, default 100, at most
/// 10,000), as JSON with pagination figures or as CSV (figures in `X-Total-Count`,
/// `X-Total-Pages`); `limit=0` streams every selected row. Deep pages sorted by `_id` seek by
/// key: page 5,000 costs what page 1 costs (read scope; `WHARF_PROJECT_READS` at once).
#[utoipa::path(get, operation_id = "kadoa_workflow_data", path = "/v4/workflows/{workflowId}/data", tag = "compat",
    params(("workflowId" = uuid::Uuid, Path), KadoaQuery),
    responses((status = 200, description = "A page of rows: JSON {workflowId, runId, executedAt, data, pagination}, or CSV (format=csv); gzip-encoded with gzip=true",
            content((serde_json::Value = "application/json"), (crate::openapi::FileBytes = "text/csv"))),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 429, description = "WHARF_RATE_LIMIT, or WHARF_PROJECT_READS data reads of this project already running", body = crate::error::ErrorEnvelope)))]
#[get("/v4/workflows/{workflowId}/data")]
pub async fn data(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<KadoaQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Read)?;
    let wf = find(&state, principal.project_id, &path).await?;
    let ask = PageAsk::of(&query)?;
    let run = runs::get_or_latest(&state.pool, wf.id, ask.run_id)
        .await?
        .ok_or(Error::NotFound(if ask.run_id.is_some() {
            "run"
        } else {
            "run (the workflow has no runs yet)"
        }))?;
    let plan = page_plan(&wf, &run, &query)?;
    let slot = state.read_slots.acquire(principal.project_id)?;
    let total = page::count_rows(&state.pool, &plan).await?;
    let shape = PageShape::new(&ask, total);
    let key = page_key(&run, &query, ask.limit);
    let seek = ask.seek(&plan, &run, state.page_keys.get(key, ask.page - 1));
    let streamed = page::stream_rows(
        &state.pool,
        plan.clone(),
        seek,
        (ask.limit > 0).then_some(ask.limit),
        page::Encoding {
            format: ask.format,
            gzip: ask.gzip,
            framing: shape.framing(&ask, &wf, &run),
        },
        state.settings.body_timeout,
    )
    .await?;
    if ask.limit > 0 && plan.id_order().is_some() && !plan.is_whole_run() {
        remember_next_page(state.page_keys.clone(), key, ask.page, streamed.last_id);
    }
    let mut res = HttpResponse::Ok();
    shape.headers(&mut res, &ask);
    Ok(res.streaming(slot_body(streamed.body, slot)))
}

/// The page's last `_id`, kept once it is sent: the next page's seek, for a client reading
/// pages in order.
fn remember_next_page(
    keys: crate::compat::kadoa::PageKeys,
    key: u64,
    page: u64,
    last: tokio::sync::oneshot::Receiver<Option<i64>>,
) {
    tokio::spawn(async move {
        if let Ok(Some(id)) = last.await {
            keys.put(key, page, id);
        }
    });
}
