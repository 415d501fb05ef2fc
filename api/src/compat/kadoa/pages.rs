//! Kadoa's synchronous page read in its pieces: what a page asks for (format, page, limit,
//! gzip, run), the selection's plan, where the page starts (a computed id, the previous page's
//! last id, or a skip), the page's counts and framing, and the body that holds the project's
//! read slot while it streams.

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use bytes::Bytes;
use serde_json::json;
use wharf_shared::Error;
use wharf_shared::domain::export::{ExportRequest, Order};
use wharf_shared::export::page::{Framing, PageFormat};
use wharf_shared::repo::export_query::{Plan, Seek};
use wharf_shared::repo::runs;
use wharf_shared::repo::workflows::Workflow;

use super::KadoaQuery;
use super::routes::{DEFAULT_PAGE, MAX_PAGE, bool_param, int_param};
use crate::auth::parse_id;
use crate::error::ApiError;

/// What a page read asks for, besides the selection.
pub(super) struct PageAsk {
    pub(super) format: PageFormat,
    pub(super) page: u64,
    pub(super) limit: u64,
    pub(super) gzip: bool,
    pub(super) run_id: Option<uuid::Uuid>,
}

impl PageAsk {
    pub(super) fn of(query: &KadoaQuery) -> Result<PageAsk, ApiError> {
        let format = match query
            .format
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("json") => PageFormat::Json,
            Some("csv") => PageFormat::Csv,
            Some(_) => return Err(Error::invalid("format: expected json or csv").into()),
        };
        Ok(PageAsk {
            format,
            page: int_param("page", query.page.as_deref(), 1, 1..=1_000_000_000)?,
            limit: int_param("limit", query.limit.as_deref(), DEFAULT_PAGE, 0..=MAX_PAGE)?,
            gzip: bool_param("gzip", query.gzip.as_deref())?,
            run_id: match &query.run_id {
                Some(raw) => Some(parse_id("runId", raw)?),
                None => None,
            },
        })
    }

    /// Where the page starts: a whole run's ids are contiguous (page N starts at a computed
    /// id); a filtered selection in id order resumes after the previous page's last id when
    /// that page was read (`after`), else skips.
    pub(super) fn seek(&self, plan: &Plan, run: &runs::Run, after: Option<i64>) -> Seek {
        let skip = (self.page - 1).saturating_mul(self.limit);
        match (self.limit, plan.id_order()) {
            (0, _) => Seek::Start,
            (_, Some(order)) if plan.is_whole_run() => {
                let first = run.first_row_id;
                let last = run.first_row_id + run.row_count - 1;
                let skip = i64::try_from(skip).unwrap_or(i64::MAX);
                match order {
                    Order::Asc => Seek::FromId(first.saturating_add(skip)),
                    Order::Desc => Seek::FromId(last.saturating_sub(skip)),
                }
            }
            (_, Some(_)) => after.map_or(Seek::Skip(skip), Seek::AfterId),
            (_, None) => Seek::Skip(skip),
        }
    }
}

/// The export's own validation: filters, sort, order and rowIds mean what they mean there;
/// every field and `_id`.
pub(super) fn page_plan(
    wf: &Workflow,
    run: &runs::Run,
    query: &KadoaQuery,
) -> Result<Plan, ApiError> {
    let (mut request, _) = KadoaQuery {
        filters: query.filters.clone(),
        sort_by: query.sort_by.clone(),
        order: query.order.clone(),
        row_ids: query.row_ids.clone(),
        ..KadoaQuery::default()
    }
    .to_request()?;
    request.columns = Some(
        std::iter::once("_id".to_string())
            .chain(wf.fields.iter().map(|f| f.name.clone()))
            .collect(),
    );
    let spec = ExportRequest {
        run_id: Some(run.id),
        ..request
    }
    .validate(&wf.fields)?;
    Ok(Plan::new(wf, run.id, &spec)?)
}

/// The selection a page belongs to (its page keys are remembered under it).
pub(super) fn page_key(run: &runs::Run, query: &KadoaQuery, limit: u64) -> u64 {
    query_hash(&[
        &run.id.to_string(),
        query.filters.as_deref().unwrap_or(""),
        query.sort_by.as_deref().unwrap_or(""),
        &query.order.as_deref().unwrap_or("").to_ascii_lowercase(),
        query.row_ids.as_deref().unwrap_or(""),
        &limit.to_string(),
    ])
}

/// The counts a page answer shows.
pub(super) struct PageShape {
    pub(super) total: i64,
    pub(super) total_pages: u64,
}

impl PageShape {
    pub(super) fn new(ask: &PageAsk, total: i64) -> PageShape {
        let per_page = if ask.limit == 0 {
            total.max(0) as u64
        } else {
            ask.limit
        };
        let total_pages = if per_page == 0 {
            0
        } else {
            (total as u64).div_ceil(per_page)
        };
        PageShape { total, total_pages }
    }

    /// JSON: `{"workflowId":…,"runId":…,"executedAt":…` + `,"data":` rows
    /// `,"pagination":…}`; CSV: the rows alone.
    pub(super) fn framing(&self, ask: &PageAsk, wf: &Workflow, run: &runs::Run) -> Framing {
        if ask.format == PageFormat::Csv {
            return Framing::default();
        }
        let head = json!({
            "workflowId": wf.id,
            "runId": run.id,
            "executedAt": run.executed_at,
        })
        .to_string();
        let pagination = json!({
            "totalCount": self.total,
            "page": if ask.limit == 0 { 1 } else { ask.page },
            "totalPages": self.total_pages,
            "limit": ask.limit,
        });
        Framing {
            prefix: format!("{},\"data\":", &head[..head.len() - 1]).into_bytes(),
            suffix: format!(",\"pagination\":{pagination}}}\n").into_bytes(),
        }
    }

    pub(super) fn headers(&self, res: &mut actix_web::HttpResponseBuilder, ask: &PageAsk) {
        res.insert_header((
            CONTENT_TYPE,
            match ask.format {
                PageFormat::Json => "application/json",
                PageFormat::Csv => "text/csv; charset=utf-8",
            },
        ));
        if ask.format == PageFormat::Csv {
            res.insert_header(("x-total-count", self.total.to_string()));
            res.insert_header(("x-total-pages", self.total_pages.to_string()));
            res.insert_header(("x-page", ask.page.to_string()));
        }
        if ask.gzip {
            res.insert_header((CONTENT_ENCODING, "gzip"));
        }
    }
}

/// The streamed rows as a body that holds the project's read slot until it ends. Cut short,
/// the client sees the body end in an error, never a short file.
pub(super) fn slot_body<S: 'static>(
    rx: tokio::sync::mpsc::Receiver<wharf_shared::export::upload::Piece>,
    slot: S,
) -> impl futures::Stream<Item = Result<Bytes, Error>> {
    futures::stream::unfold((Some(rx), Some(slot)), |(rx, slot)| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Some(bytes)) => Some((Ok::<Bytes, Error>(bytes), (Some(rx), slot))),
            // The end: the slot is freed with the stream.
            Some(None) => None,
            None => Some((
                Err(Error::Unexpected(anyhow::anyhow!(
                    "the read stopped midway"
                ))),
                (None, None),
            )),
        }
    })
}

fn query_hash(parts: &[&str]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}
