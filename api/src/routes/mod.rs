//! The route table: the native API's handlers (one module a resource) and the seed dialects'
//! (`compat::<name>::routes`), all registered here once.

pub mod audit;
pub mod docs;
pub mod downloads;
pub mod exports;
pub mod health;
pub mod imports;
pub mod keys;
pub mod ops;
pub mod projects;
pub mod runs;
pub mod webhooks;
pub mod workflows;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wharf_shared::Error;
use wharf_shared::repo::Page;

use crate::auth::parse_id;
use crate::compat::{kadoa, kore, zangtable};
use crate::error::ApiError;

/// Every route, registered once: the router (`startup`) and the OpenAPI document (`openapi`)
/// are both built from this list.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(ops::page)
        .service(health::openapi_json)
        .service(docs::docs)
        .service(projects::create_project)
        .service(keys::create_key)
        .service(keys::list_keys)
        .service(keys::revoke_key)
        .service(workflows::create_workflow)
        .service(workflows::list_workflows)
        .service(workflows::get_workflow)
        .service(runs::create_run)
        .service(runs::list_runs)
        .service(exports::post_export)
        .service(exports::list_exports)
        .service(exports::get_export)
        .service(exports::cancel_export)
        .service(exports::get_dock_status)
        .service(downloads::download)
        .service(downloads::download_headers)
        .service(downloads::signed_file)
        .service(downloads::signed_file_headers)
        .service(downloads::dataset_file)
        .service(downloads::dataset_file_headers)
        .service(imports::create_import)
        .service(imports::get_import)
        .service(kadoa::list)
        .service(kadoa::data)
        .service(kadoa::get_one)
        .service(kadoa::kadoa_create)
        .service(kadoa::kadoa_download)
        .service(kore::kore_export)
        .service(kore::kore_dock_status)
        .service(kore::kore_upload)
        .service(kore::kore_import)
        .service(kore::kore_import_into)
        .service(zangtable::zang_create)
        .service(zangtable::zang_list)
        .service(zangtable::zang_get)
        .service(zangtable::project_download)
        .service(webhooks::create)
        .service(webhooks::list)
        .service(webhooks::remove)
        .service(webhooks::deliveries)
        .service(webhooks::test)
        .service(webhooks::retry)
        .service(audit::list_audit);
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// `limit` and `cursor` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::invalid(format!(
                "limit: must be between 1 and {MAX_LIMIT}, got {limit}"
            ))
            .into());
        }
        let before = self
            .cursor
            .as_deref()
            .map(|c| parse_id("cursor", c))
            .transpose()?;
        Ok(Page { before, limit })
    }
}

/// Every list: `{"data": [...], "nextCursor": "…" | null}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct List<T: ToSchema> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> List<T> {
    pub fn new(data: Vec<T>, next: Option<uuid::Uuid>) -> Self {
        List {
            data,
            next_cursor: next.map(|u| u.to_string()),
        }
    }
}
