//! An export request, validated against the workflow's schema into an `ExportSpec`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::schema::Field;

mod naming;
mod validate;

pub use self::naming::*;

pub const MAX_FILTERS: usize = 50;
pub const MAX_IN_VALUES: usize = 1_000;
pub const MAX_ROW_IDS: usize = 100_000;

pub use crate::export::formats::Format;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Zstd => "zstd",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Zstd,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
    In,
    IsNull,
    NotNull,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub field: String,
    pub op: Op,
    /// Any JSON value of the field's type; a list for `in`; absent for is_null/not_null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The body of `POST /v1/workflows/{id}/exports`; every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportRequest {
    /// `csv` (default), `tsv`, `json`, `ndjson` or `parquet`.
    pub format: Option<Format>,
    /// Default: the workflow's latest run.
    pub run_id: Option<Uuid>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// A schema field or `_id` (default).
    pub sort_by: Option<String>,
    pub order: Option<Order>,
    pub row_ids: Option<Vec<i64>>,
    /// Schema order by default; `_id` only when named.
    pub columns: Option<Vec<String>>,
    /// `none` (default)/`gzip` for text formats; `zstd` (default)/`snappy`/`none` for parquet.
    pub compression: Option<Compression>,
    /// A dataset of files of at most this many rows each (≥ 1,000).
    pub max_rows_per_file: Option<i64>,
    /// Files cut by encoded size: not supported by this version (400; cut by rows with
    /// `maxRowsPerFile`).
    pub max_file_bytes: Option<i64>,
    /// 1–3 fields (string, integer, boolean; a timestamp as `{"field", "by": "day"|"month"}`):
    /// a dataset with Hive-style paths, one directory per value.
    pub partition_by: Option<Vec<crate::domain::dataset::PartitionRequest>>,
    /// Parts built at once by the workers (1–64).
    pub parallelism: Option<i64>,
}

/// What to select and how to sort: a schema field (by position) or the row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    Field(usize),
}

/// A validated export, as the worker runs it. Stored as `params` with names, re-resolved
/// against the (append-only) schema when the job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportSpec {
    pub format: Format,
    pub compression: Compression,
    pub filters: Vec<Filter>,
    pub sort_by: String,
    pub order: Order,
    pub row_ids: Option<Vec<i64>>,
    pub columns: Vec<String>,
    /// A dataset of many files, built in parts (None: one file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<crate::domain::dataset::DatasetSpec>,
}

impl ExportSpec {
    /// How a bundle holds each run: every row in `_id` order, `_id` first and then every field
    /// (`columns` is filled per workflow by `with_all_columns`), as Parquet with zstd.
    pub fn bundle_runs() -> ExportSpec {
        ExportSpec {
            format: Format::Parquet,
            compression: Compression::Zstd,
            filters: Vec::new(),
            sort_by: "_id".into(),
            order: Order::Asc,
            row_ids: None,
            columns: Vec::new(),
            dataset: None,
        }
    }

    /// This spec selecting `_id` and every field of `fields`, in schema order.
    pub fn with_all_columns(mut self, fields: &[Field]) -> ExportSpec {
        self.columns = std::iter::once("_id".to_string())
            .chain(fields.iter().map(|f| f.name.clone()))
            .collect();
        self
    }
}

pub fn resolve(fields: &[Field], name: &str) -> Option<Column> {
    if name == "_id" {
        return Some(Column::Id);
    }
    fields
        .iter()
        .position(|f| f.name == name)
        .map(Column::Field)
}

#[cfg(test)]
mod tests;
