//! The route table. Each module holds the handlers of one resource.

pub mod bundles;
pub mod compat;
pub mod downloads;
pub mod exports;
pub mod health;
pub mod kadoa;
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
use crate::error::ApiError;

/// Every route, registered once: the router (`startup`) and the OpenAPI document (`openapi`)
/// are both built from this list.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(ops::page)
        .service(health::openapi_json)
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
        .service(kadoa::list)
        .service(kadoa::data)
        .service(kadoa::get_one)
        .service(compat::kadoa_create)
        .service(compat::kadoa_download)
        .service(compat::project_download)
        .service(bundles::kore_export)
        .service(bundles::kore_dock_status)
        .service(bundles::kore_upload)
        .service(bundles::kore_import)
        .service(bundles::kore_import_into)
        .service(bundles::create_import)
        .service(bundles::get_import)
        .service(bundles::zang_create)
        .service(bundles::zang_list)
        .service(bundles::zang_get)
        .service(webhooks::create)
        .service(webhooks::list)
        .service(webhooks::remove)
        .service(webhooks::deliveries);
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
