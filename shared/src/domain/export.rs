//! An export request, validated against the workflow's schema into an `ExportSpec`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::schema::{Field, FieldType, printable};
use crate::error::{Error, Result};

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

impl ExportRequest {
    /// Checks every part against the schema; the error names the part at fault.
    pub fn validate(&self, fields: &[Field]) -> Result<ExportSpec> {
        let format = self.format.unwrap_or_default();
        let compression = compression_of(format, self.compression)?;
        if self.filters.len() > MAX_FILTERS {
            return Err(Error::invalid(format!(
                "filters: at most {MAX_FILTERS} filters"
            )));
        }
        for (i, f) in self.filters.iter().enumerate() {
            validate_filter(fields, f).map_err(|m| Error::invalid(format!("filters[{i}]: {m}")))?;
        }
        let sort_by = self.sort_by.clone().unwrap_or_else(|| "_id".into());
        match resolve(fields, &sort_by) {
            Some(Column::Field(i)) if fields[i].field_type == FieldType::Json => {
                return Err(Error::invalid(format!(
                    "sortBy: cannot sort by json field \"{sort_by}\""
                )));
            }
            Some(_) => {}
            None => {
                return Err(Error::invalid(format!(
                    "sortBy: unknown field \"{}\" (expected a schema field or _id)",
                    printable(&sort_by)
                )));
            }
        }
        if let Some(ids) = &self.row_ids
            && (ids.is_empty() || ids.len() > MAX_ROW_IDS)
        {
            return Err(Error::invalid(format!(
                "rowIds: must list 1 to {MAX_ROW_IDS} ids"
            )));
        }
        let columns = match &self.columns {
            None => fields.iter().map(|f| f.name.clone()).collect(),
            Some(cols) => validate_columns(fields, cols)?,
        };
        Ok(ExportSpec {
            format,
            compression,
            filters: self.filters.clone(),
            sort_by,
            order: self.order.unwrap_or_default(),
            row_ids: self.row_ids.clone(),
            columns,
        })
    }
}

/// The compression asked for, if the format takes it, or the format's default.
fn compression_of(format: Format, asked: Option<Compression>) -> Result<Compression> {
    let allowed = format.info().compressions;
    match asked {
        None => Ok(allowed.first().copied().unwrap_or(Compression::None)),
        Some(c) if allowed.contains(&c) => Ok(c),
        Some(c) => {
            let names: Vec<&str> = allowed.iter().map(|c| c.as_str()).collect();
            Err(Error::invalid(format!(
                "compression: {} takes {}, not {}",
                format.as_str(),
                names.join(", "),
                c.as_str()
            )))
        }
    }
}

fn validate_columns(fields: &[Field], cols: &[String]) -> Result<Vec<String>> {
    if cols.is_empty() {
        return Err(Error::invalid("columns: must name at least one column"));
    }
    let mut seen: Vec<&str> = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        if resolve(fields, c).is_none() {
            return Err(Error::invalid(format!(
                "columns[{i}]: unknown field \"{}\"",
                printable(c)
            )));
        }
        if seen.contains(&c.as_str()) {
            return Err(Error::invalid(format!(
                "columns[{i}]: \"{}\" is named twice",
                printable(c)
            )));
        }
        seen.push(c);
    }
    Ok(cols.to_vec())
}

fn validate_filter(fields: &[Field], f: &Filter) -> std::result::Result<(), String> {
    let field = fields.iter().find(|s| s.name == f.field).ok_or_else(|| {
        format!(
            "field: unknown field \"{}\" (filters apply to schema fields)",
            printable(&f.field)
        )
    })?;
    let ty = field.field_type;
    match (f.op, &f.value) {
        (Op::IsNull | Op::NotNull, None) => Ok(()),
        (Op::IsNull | Op::NotNull, Some(_)) => {
            Err("value: is_null and not_null take no value".into())
        }
        (_, None | Some(Value::Null)) => {
            Err("value: required (use is_null / not_null to test for null)".into())
        }
        (Op::Contains, Some(v)) => match (ty, v) {
            (FieldType::String, Value::String(_)) => Ok(()),
            (FieldType::String, _) => Err("value: contains takes a string".into()),
            _ => Err(format!(
                "op: contains applies to string fields, \"{}\" is {}",
                field.name,
                ty.as_str()
            )),
        },
        (Op::In, Some(Value::Array(items))) => {
            if ty == FieldType::Json {
                return Err("op: in does not apply to json fields".into());
            }
            if items.is_empty() || items.len() > MAX_IN_VALUES {
                return Err(format!("value: in takes 1 to {MAX_IN_VALUES} values"));
            }
            items
                .iter()
                .enumerate()
                .try_for_each(|(j, v)| check_value(ty, v).map_err(|m| format!("value[{j}]: {m}")))
        }
        (Op::In, Some(_)) => Err("value: in takes a list".into()),
        (Op::Eq | Op::Ne, Some(v)) => check_value(ty, v).map_err(|m| format!("value: {m}")),
        (_, Some(v)) => {
            if matches!(ty, FieldType::Json | FieldType::Boolean) {
                return Err(
                    format!("op: {:?} does not apply to {} fields", f.op, ty.as_str())
                        .to_lowercase(),
                );
            }
            check_value(ty, v).map_err(|m| format!("value: {m}"))
        }
    }
}

fn check_value(ty: FieldType, v: &Value) -> std::result::Result<(), String> {
    let ok = match ty {
        FieldType::String => v.is_string(),
        FieldType::Integer => v.is_i64(),
        FieldType::Number => v.is_number(),
        FieldType::Boolean => v.is_boolean(),
        FieldType::Timestamp => match v.as_str() {
            Some(s) => return crate::ingest::parse_timestamp(s).map(|_| ()),
            None => false,
        },
        FieldType::Json => !v.is_null(),
    };
    if ok && has_nul(v) {
        return Err("text may not contain the NUL character (U+0000)".into());
    }
    if ok {
        Ok(())
    } else {
        Err(format!("expected a value of type {}, got {v}", ty.as_str()))
    }
}

/// U+0000 anywhere in a value (PostgreSQL cannot take it).
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The file name a download gets: `<workflow>-<YYYY-MM-DD>.<ext>[.gz]`.
pub fn file_name(
    workflow_name: &str,
    date: chrono::NaiveDate,
    format: Format,
    compression: Compression,
) -> String {
    let ext = format.as_str();
    let gz = if compression == Compression::Gzip {
        ".gz"
    } else {
        ""
    };
    format!("{}-{date}.{ext}{gz}", safe_base(workflow_name))
}

/// A bundle's file name: `<workflow or project>-<date>.wharf.zip`.
pub fn bundle_file_name(name: &str, date: chrono::NaiveDate) -> String {
    format!("{}-{date}.wharf.zip", safe_base(name))
}

pub const BUNDLE_CONTENT_TYPE: &str = "application/zip";

/// A name as the stem of a file name: no path separators, controls or invisible characters.
fn safe_base(workflow_name: &str) -> String {
    let base: String = workflow_name
        .chars()
        .filter(|c| !is_format_char(*c))
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | '"' | ':' | '*' | '?' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .chars()
        .take(100)
        .collect();
    if base.is_empty() {
        "export".to_string()
    } else {
        base
    }
}

/// Invisible characters that change how a name is shown (Unicode category Cf: bidirectional
/// overrides and isolates, zero-width joiners and spaces, the BOM, tag characters...).
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{08E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266 / 5987).
pub fn content_disposition(file_name: &str) -> String {
    let shown: String = file_name.chars().filter(|c| !is_format_char(*c)).collect();
    let file_name = shown.as_str();
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                if c == '"' || c == '\\' { '_' } else { c }
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in file_name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if ascii == file_name {
        format!("attachment; filename=\"{ascii}\"")
    } else {
        format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
    }
}

pub fn content_type(format: Format, compression: Compression) -> &'static str {
    if compression == Compression::Gzip {
        "application/gzip"
    } else {
        format.content_type()
    }
}

#[cfg(test)]
mod tests;
