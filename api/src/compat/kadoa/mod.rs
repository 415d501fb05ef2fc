//! Kadoa's dialect: the query parameters every `/v4` route accepts (and what they mean as a
//! native export request), and the page keys that let deep pages seek instead of skip.

mod exports;
mod pages;
mod routes;

pub use exports::*;
pub use routes::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use wharf_shared::Error;
use wharf_shared::domain::export::ExportRequest;

use crate::error::ApiError;

pub const MAX_WAIT_SECS: u64 = 60;

/// The parameters of every `/v4` route: Kadoa's, accepted on each route even where it ignores
/// them (its SDK sends them everywhere); any other parameter is a 400. `format` and `order` are
/// case-insensitive.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KadoaQuery {
    /// csv, json (the data route's default), ndjson or parquet, in any case.
    pub format: Option<String>,
    #[param(value_type = Option<uuid::Uuid>)]
    pub run_id: Option<String>,
    /// The filters array of the native API, as URL-encoded JSON.
    pub filters: Option<String>,
    pub sort_by: Option<String>,
    /// asc (default) or desc, in any case.
    pub order: Option<String>,
    /// Comma-separated row ids.
    #[param(pattern = "^-?[0-9]+(,-?[0-9]+)*$")]
    pub row_ids: Option<String>,
    /// Seconds to wait for the file (0-60, default 25; the export route).
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u64>,
    /// Page number, from 1 (the data route).
    #[param(minimum = 1)]
    pub page: Option<String>,
    /// Rows per page (data route: default 100, at most 10,000; 0 streams every selected row)
    /// or workflows per page (list: default 25, at most 100).
    #[param(minimum = 0, maximum = 10000)]
    pub limit: Option<String>,
    /// true: the body is gzip (`Content-Encoding: gzip`).
    pub gzip: Option<String>,
    /// Accepted and ignored.
    pub include_anomalies: Option<String>,
    /// Workflows whose name contains this text (list).
    pub search: Option<String>,
    /// Workflows to skip (list).
    #[param(minimum = 0)]
    pub skip: Option<String>,
}

impl KadoaQuery {
    /// The native request these parameters mean, and its canonical JSON (for hashing).
    pub(crate) fn to_request(&self) -> Result<(ExportRequest, Value), ApiError> {
        let mut body = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(k.to_string(), v);
            }
        };
        put(
            "format",
            self.format
                .as_ref()
                .map(|f| Value::String(f.to_ascii_lowercase())),
        );
        put("runId", self.run_id.clone().map(Value::String));
        put("sortBy", self.sort_by.clone().map(Value::String));
        put(
            "order",
            self.order
                .as_ref()
                .map(|o| Value::String(o.to_ascii_lowercase())),
        );
        if let Some(f) = &self.filters {
            let v: Value = wharf_shared::json::parse(f.as_bytes())
                .map_err(|e| Error::invalid(format!("filters: not a JSON array: {e}")))?;
            put("filters", Some(v));
        }
        if let Some(ids) = &self.row_ids {
            let parsed: Result<Vec<i64>, _> =
                ids.split(',').map(|s| s.trim().parse::<i64>()).collect();
            let parsed =
                parsed.map_err(|_| Error::invalid("rowIds: expected comma-separated integers"))?;
            put("rowIds", Some(json!(parsed)));
        }
        let value = Value::Object(body);
        Ok((crate::json::from_value(value.clone())?, value))
    }
}

/// Where recent pages of filtered, `_id`-sorted reads ended, so the next page seeks by key
/// instead of skipping rows. Per API process, bounded; a miss falls back to OFFSET.
#[derive(Clone, Default)]
pub struct PageKeys(Arc<Mutex<HashMap<(u64, u64), i64>>>);

const PAGE_KEYS_MAX: usize = 50_000;

impl PageKeys {
    pub(crate) fn get(&self, query: u64, page: u64) -> Option<i64> {
        self.0.lock().ok()?.get(&(query, page)).copied()
    }

    pub(crate) fn put(&self, query: u64, page: u64, last_id: i64) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= PAGE_KEYS_MAX {
                m.clear();
            }
            m.insert((query, page), last_id);
        }
    }
}
