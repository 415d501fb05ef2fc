//! The audit log (admin scope): the project's events newest first, paged, or every matching
//! event streamed as NDJSON.

use actix_web::{HttpResponse, get, web};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wharf_shared::Error;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::repo::audit::{self, AuditEvent, AuditQuery};

use super::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::auth::{Auth, parse_id};
use crate::error::ApiError;
use crate::state::AppState;

/// Rows per read while streaming NDJSON.
const STREAM_PAGE: i64 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Events at or after this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<String>,
    /// Events before this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub until: Option<String>,
    /// One event type: export.created, export.cancelled, export.downloaded, import.created,
    /// key.created, key.revoked, webhook.created, webhook.deleted.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// `nextCursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `ndjson`: every matching event, one per line, streamed (no paging).
    #[param(pattern = "^(json|ndjson)$")]
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub data: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

fn instant(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|v| {
        DateTime::parse_from_rfc3339(v.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                Error::invalid(format!(
                    "{name}: expected an RFC 3339 instant such as 2026-12-01T00:00:00Z"
                ))
                .into()
            })
    })
    .transpose()
}

impl AuditParams {
    fn query(&self) -> Result<AuditQuery, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::invalid(format!(
                "limit: must be between 1 and {MAX_LIMIT}, got {limit}"
            ))
            .into());
        }
        if let Some(k) = &self.kind
            && !audit::TYPES.contains(&k.as_str())
        {
            return Err(Error::invalid(format!(
                "type: \"{}\" is not an event type ({})",
                wharf_shared::domain::schema::printable(k),
                audit::TYPES.join(", ")
            ))
            .into());
        }
        Ok(AuditQuery {
            since: instant("since", self.since.as_deref())?,
            until: instant("until", self.until.as_deref())?,
            kind: self.kind.clone(),
            before: self
                .cursor
                .as_deref()
                .map(|c| parse_id("cursor", c))
                .transpose()?,
            limit,
        })
    }
}

/// The project's audit log, newest first (admin scope): exports created and cancelled, every
/// download (its route, bytes sent, Range, client), imports, keys and webhooks. Kept
/// `WHARF_AUDIT_TTL` (90 days); events appear within a second.
#[utoipa::path(get, operation_id = "list_audit_events", path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "A page (JSON), or every matching event as NDJSON with format=ndjson",
            content((AuditPage = "application/json"), (AuditEvent = "application/x-ndjson"))),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 401, body = crate::error::ErrorEnvelope),
        (status = 403, body = crate::error::ErrorEnvelope)))]
#[get("/v1/audit")]
pub async fn list_audit(
    auth: Auth,
    state: web::Data<AppState>,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let mut q = params.query()?;
    let project = principal.project_id;
    match params.format.as_deref() {
        None | Some("json") => {
            let rows = audit::page(&state.pool, project, &q).await?;
            let next = (rows.len() as i64 == q.limit)
                .then(|| rows.last().map(|e| e.id.to_string()))
                .flatten();
            Ok(HttpResponse::Ok().json(AuditPage {
                data: rows,
                next_cursor: next,
            }))
        }
        Some("ndjson") => {
            q.limit = STREAM_PAGE;
            Ok(HttpResponse::Ok()
                .content_type("application/x-ndjson")
                .streaming(every_event(state.pool.clone(), project, q)))
        }
        Some(other) => Err(Error::invalid(format!(
            "format: \"{}\" is not a format of the log (json or ndjson)",
            wharf_shared::domain::schema::printable(other)
        ))
        .into()),
    }
}

/// Every event `q` matches, as NDJSON, a page at a time (each page one indexed query).
fn every_event(
    pool: sqlx::PgPool,
    project: uuid::Uuid,
    q: audit::AuditQuery,
) -> impl futures::Stream<Item = Result<Bytes, Error>> {
    futures::stream::try_unfold(Some(q), move |q| {
        let pool = pool.clone();
        async move {
            let Some(mut q) = q else {
                return Ok::<_, Error>(None);
            };
            let rows = audit::page(&pool, project, &q).await?;
            let more = rows.len() as i64 == q.limit;
            q.before = rows.last().map(|e| e.id);
            let mut out = Vec::new();
            for e in rows {
                serde_json::to_writer(&mut out, &e).map_err(|e| Error::Unexpected(e.into()))?;
                out.push(b'\n');
            }
            Ok(Some((Bytes::from(out), more.then_some(q))))
        }
    })
}
