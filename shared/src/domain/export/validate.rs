//! An export request checked part by part against the workflow's schema; every error names
//! the part at fault.

use serde_json::Value;

use super::Format;
use super::{
    Column, Compression, ExportRequest, ExportSpec, Filter, MAX_FILTERS, MAX_IN_VALUES,
    MAX_ROW_IDS, Op, resolve,
};
use crate::domain::schema::{Field, FieldType, printable};
use crate::error::{Error, Result};

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
        let sort_by = sort_by_of(fields, self.sort_by.as_deref())?;
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
        let dataset = crate::domain::dataset::DatasetRequest {
            max_rows_per_file: self.max_rows_per_file,
            max_file_bytes: self.max_file_bytes,
            partition_by: self.partition_by.as_deref(),
            parallelism: self.parallelism,
        }
        .validate(fields)?;
        Ok(ExportSpec {
            format,
            compression,
            filters: self.filters.clone(),
            sort_by,
            order: self.order.unwrap_or_default(),
            row_ids: self.row_ids.clone(),
            columns,
            dataset,
        })
    }
}

/// The column rows are sorted by (`_id` unless asked): a schema field that is not json, or
/// one of the row's own columns.
fn sort_by_of(fields: &[Field], asked: Option<&str>) -> Result<String> {
    let sort_by = asked.unwrap_or("_id");
    match resolve(fields, sort_by) {
        Some(Column::Field(i)) if fields[i].field_type == FieldType::Json => Err(Error::invalid(
            format!("sortBy: cannot sort by json field \"{sort_by}\""),
        )),
        Some(_) => Ok(sort_by.to_string()),
        None => Err(Error::invalid(format!(
            "sortBy: unknown field \"{}\" (expected a schema field or _id)",
            printable(sort_by)
        ))),
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
        (Op::In, Some(Value::Array(items))) => check_list(ty, items),
        (Op::In, Some(_)) => Err("value: in takes a list".into()),
        (Op::Eq | Op::Ne, Some(v)) => check_value(ty, v).map_err(|m| format!("value: {m}")),
        (_, Some(v)) if matches!(ty, FieldType::Json | FieldType::Boolean) => {
            Err(format!("op: {:?} does not apply to {} fields", f.op, ty.as_str()).to_lowercase())
        }
        (_, Some(v)) => check_value(ty, v).map_err(|m| format!("value: {m}")),
    }
}

/// The values of an `in` filter: 1 to `MAX_IN_VALUES`, each of the field's type.
fn check_list(ty: FieldType, items: &[Value]) -> std::result::Result<(), String> {
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
