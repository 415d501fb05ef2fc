//! An export built as a dataset of many files (API.md "Large exports"): the create options,
//! validated against the schema, and the plan a part job carries (the files it writes).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema::{Field, FieldType, printable};
use crate::error::{Error, Result};

pub const MIN_ROWS_PER_FILE: i64 = 1_000;
pub const MIN_FILE_BYTES: i64 = 5 * 1024 * 1024;
pub const MAX_PARALLELISM: i64 = 64;
pub const MAX_PARTITION_FIELDS: usize = 3;
/// Distinct partition values one export may have; more fail it with `TOO_MANY_PARTITIONS`
/// before any file is written.
pub const MAX_PARTITIONS: i64 = 10_000;

/// One `partitionBy` entry as asked: a field's name, or a timestamp field with its granularity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PartitionRequest {
    Field(String),
    #[serde(rename_all = "camelCase")]
    Timestamp {
        field: String,
        by: Option<String>,
    },
}

/// How a timestamp partitions: by its UTC day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Day,
    Month,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }
}

/// A validated partition key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionKey {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Granularity>,
}

/// The dataset options of a validated export (`ExportSpec::dataset`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatasetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_per_file: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<PartitionKey>,
    /// Parts asked for; None: one per free worker slot, capped by the project's concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i64>,
}

/// The create body's dataset options, as asked.
pub struct DatasetRequest<'a> {
    pub max_rows_per_file: Option<i64>,
    pub max_file_bytes: Option<i64>,
    pub partition_by: Option<&'a [PartitionRequest]>,
    pub parallelism: Option<i64>,
}

impl DatasetRequest<'_> {
    /// None when no option is given (a single-file export); each error names its field.
    pub fn validate(&self, fields: &[Field]) -> Result<Option<DatasetSpec>> {
        if self.max_rows_per_file.is_none()
            && self.max_file_bytes.is_none()
            && self.partition_by.is_none()
            && self.parallelism.is_none()
        {
            return Ok(None);
        }
        let at_least = |name: &str, v: Option<i64>, min: i64| match v {
            Some(n) if n < min => Err(Error::invalid(format!(
                "{name}: must be at least {min}, got {n}"
            ))),
            _ => Ok(v),
        };
        let max_rows_per_file =
            at_least("maxRowsPerFile", self.max_rows_per_file, MIN_ROWS_PER_FILE)?;
        let max_file_bytes = at_least("maxFileBytes", self.max_file_bytes, MIN_FILE_BYTES)?;
        if max_file_bytes.is_some() {
            // Files are cut by rows when the export is planned; a cut by encoded size needs a
            // file to roll over mid-read, which this version does not do.
            return Err(Error::invalid(
                "maxFileBytes: not supported by this version; cut files by rows with maxRowsPerFile",
            ));
        }
        if let Some(n) = self.parallelism
            && !(1..=MAX_PARALLELISM).contains(&n)
        {
            return Err(Error::invalid(format!(
                "parallelism: must be 1 to {MAX_PARALLELISM}, got {n}"
            )));
        }
        let partition_by = match self.partition_by {
            None => Vec::new(),
            Some(keys) => partition_keys(fields, keys)?,
        };
        Ok(Some(DatasetSpec {
            max_rows_per_file,
            max_file_bytes,
            partition_by,
            parallelism: self.parallelism,
        }))
    }
}

fn partition_keys(fields: &[Field], keys: &[PartitionRequest]) -> Result<Vec<PartitionKey>> {
    if keys.is_empty() || keys.len() > MAX_PARTITION_FIELDS {
        return Err(Error::invalid(format!(
            "partitionBy: must name 1 to {MAX_PARTITION_FIELDS} fields, got {}",
            keys.len()
        )));
    }
    let mut out: Vec<PartitionKey> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let at = |m: String| Error::invalid(format!("partitionBy[{i}]: {m}"));
        let (name, by) = match key {
            PartitionRequest::Field(name) => (name, None),
            PartitionRequest::Timestamp { field, by } => (field, by.as_deref()),
        };
        let field = fields
            .iter()
            .find(|f| &f.name == name)
            .ok_or_else(|| at(format!("unknown field \"{}\"", printable(name))))?;
        let by = match (field.field_type, by) {
            (FieldType::String | FieldType::Integer | FieldType::Boolean, None) => None,
            (FieldType::Timestamp, Some("day")) => Some(Granularity::Day),
            (FieldType::Timestamp, Some("month")) => Some(Granularity::Month),
            (FieldType::Timestamp, None) => {
                return Err(at(format!(
                    "timestamp field \"{name}\" needs \"by\": \"day\" or \"month\""
                )));
            }
            (FieldType::Timestamp, Some(other)) => {
                return Err(at(format!(
                    "by: expected \"day\" or \"month\", got \"{}\"",
                    printable(other)
                )));
            }
            (_, Some(_)) => {
                return Err(at(format!(
                    "by applies to timestamp fields, \"{name}\" is not one"
                )));
            }
            (ty, None) => {
                return Err(at(format!(
                    "cannot partition by {} field \"{name}\" (string, integer, boolean or timestamp)",
                    ty.as_str()
                )));
            }
        };
        if out.iter().any(|k| &k.field == name) {
            return Err(at(format!("\"{name}\" is named twice")));
        }
        out.push(PartitionKey {
            field: name.clone(),
            by,
        });
    }
    Ok(out)
}

/// Where a file's rows start in the export's order: at a row id (an index range, when sorted
/// by `_id`), or after skipping rows (another sort key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileStart {
    FromId(i64),
    Skip(u64),
}

/// One file a part writes: its place in the manifest, where its rows start, how many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileCut {
    pub seq: i32,
    pub start: FileStart,
    pub rows: i64,
    /// Its partition's values as the file's path shows them (`country=FR/…`), and as the
    /// selection restricts its rows: (field, value or None for null).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition: Vec<(String, Option<String>)>,
    /// Its number within its partition (the `part-NNNNN` of its name).
    pub number: i32,
}

/// A part job's payload: the files it writes, in manifest order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartPlan {
    pub index: i32,
    pub files: Vec<FileCut>,
}

impl FileCut {
    /// The file's path in the dataset: Hive-style partition directories (values
    /// percent-encoded, null as `__null__`), then `part-NNNNN` and the format's extension.
    pub fn path(&self, ext: &str) -> String {
        let mut path = String::new();
        for (field, value) in &self.partition {
            let v = match value {
                Some(v) => percent_encode(v),
                None => "__null__".into(),
            };
            path.push_str(&format!("{}={v}/", percent_encode(field)));
        }
        path.push_str(&format!("part-{:05}{ext}", self.number));
        path
    }
}

/// Every byte but unreserved ASCII (letters, digits, `-._~`) as `%XX`: a value's path segment
/// can hold no `/`, `=` or anything a reader would read otherwise.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How many parts a dataset of `files` files is built in: as asked (`parallelism`), else one a
/// free worker slot, never more than the project may run at once, nor more than its files.
pub fn part_count(asked: Option<i64>, free_slots: i64, project_cap: i64, files: usize) -> usize {
    let n = asked.unwrap_or_else(|| free_slots.min(project_cap)).max(1) as usize;
    n.min(files.max(1))
}

/// Splits `files` (in manifest order) into `parts` runs of consecutive files, as even in
/// count as they divide (files are cut to the same rows but for each partition's last).
pub fn group_files(files: Vec<FileCut>, parts: usize) -> Vec<PartPlan> {
    let n = files.len();
    let parts = parts.clamp(1, n.max(1));
    let mut out: Vec<PartPlan> = (0..parts)
        .map(|i| PartPlan {
            index: i as i32,
            files: Vec::new(),
        })
        .collect();
    for (i, f) in files.into_iter().enumerate() {
        out[i * parts / n].files.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(seq: i32, rows: i64) -> FileCut {
        FileCut {
            seq,
            start: FileStart::Skip(0),
            rows,
            partition: Vec::new(),
            number: seq,
        }
    }

    #[test]
    fn files_group_into_even_parts_of_whole_files() {
        let files: Vec<_> = (0..10).map(|i| cut(i, 100_000)).collect();
        let parts = group_files(files.clone(), 2);
        let sizes: Vec<usize> = parts.iter().map(|p| p.files.len()).collect();
        assert_eq!(sizes, vec![5, 5]);
        let parts = group_files(files.clone(), 4);
        let sizes: Vec<usize> = parts.iter().map(|p| p.files.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert_eq!(parts.len(), 4);
        assert!(sizes.iter().all(|s| (2..=3).contains(s)), "{sizes:?}");
        let parts = group_files(files, 64);
        assert_eq!(parts.len(), 10);
        // Manifest order is kept: concatenating parts gives the files in order.
        let seqs: Vec<i32> = group_files((0..7).map(|i| cut(i, 10)).collect(), 3)
            .iter()
            .flat_map(|p| p.files.iter().map(|f| f.seq))
            .collect();
        assert_eq!(seqs, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn paths_are_hive_style_and_percent_encoded() {
        let mut f = cut(3, 1);
        f.number = 0;
        f.partition = vec![
            ("country".into(), Some("FR/x=1".into())),
            ("city".into(), None),
        ];
        assert_eq!(
            f.path(".csv.gz"),
            "country=FR%2Fx%3D1/city=__null__/part-00000.csv.gz"
        );
        assert_eq!(part_count(None, 3, 8, 10), 3);
        assert_eq!(part_count(Some(16), 3, 8, 10), 10);
        assert_eq!(part_count(None, 0, 8, 10), 1);
    }
}
