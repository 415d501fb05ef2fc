//! One entry of a bundle: read small files whole, check a run's Parquet file (its sha256,
//! size, schema against the definition, rows) as it is extracted.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use crate::domain::schema::{Field, FieldType, printable};
use crate::domain::states::FailureCode;
use crate::error::{Error, Result};

use super::*;

pub(super) fn missing(name: &str) -> Error {
    refuse(
        FailureCode::BundleInvalid,
        format!(
            "the manifest names \"{}\", which the bundle does not hold",
            printable(name)
        ),
    )
}

pub(super) fn unreadable(name: &str, e: impl std::fmt::Display) -> Error {
    refuse(
        FailureCode::ChecksumMismatch,
        format!("{}: damaged ({e})", printable(name)),
    )
}

/// A small entry, whole, and its sha256.
pub(super) fn read_small(
    archive: &mut zip::ZipArchive<File>,
    name: &str,
) -> Result<(Vec<u8>, String)> {
    if !safe_path(name) {
        return Err(missing(name));
    }
    let entry = archive.by_name(name).map_err(|_| missing(name))?;
    if entry.size() > MAX_JSON_FILE {
        return Err(refuse(
            FailureCode::BundleTooLarge,
            format!("{} is over {MAX_JSON_FILE} bytes", printable(name)),
        ));
    }
    let mut bytes = Vec::new();
    entry
        .take(MAX_JSON_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(name, e))?;
    if bytes.len() as u64 > MAX_JSON_FILE {
        return Err(refuse(
            FailureCode::BundleTooLarge,
            format!("{} is over {MAX_JSON_FILE} bytes", printable(name)),
        ));
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    Ok((bytes, sha))
}

/// Extracts one run's file to `out`, holding it to the manifest's size and sha256 and its
/// Parquet schema to the definition.
pub(super) fn verify_run(
    archive: &mut zip::ZipArchive<File>,
    mr: &ManifestRun,
    fields: &[Field],
    out: &Path,
) -> Result<()> {
    let name = mr.file.as_str();
    if !safe_path(name) {
        return Err(missing(name));
    }
    let entry = archive.by_name(name).map_err(|_| missing(name))?;
    if entry.size() != mr.bytes {
        return Err(refuse(
            FailureCode::ChecksumMismatch,
            format!(
                "{}: {} bytes, the manifest says {}",
                printable(name),
                entry.size(),
                mr.bytes
            ),
        ));
    }
    let (seen, sha) = extract(entry, mr.bytes, name, out)?;
    if seen != mr.bytes || sha != mr.sha256 {
        return Err(refuse(
            FailureCode::ChecksumMismatch,
            format!(
                "{}: sha256 is {sha}, the manifest says {}",
                printable(name),
                printable(&mr.sha256)
            ),
        ));
    }
    check_parquet(out, name, mr.row_count, fields)
}

/// The extracted file is Parquet holding `rows` rows, in the columns the definition implies.
fn check_parquet(out: &Path, name: &str, rows: i64, fields: &[Field]) -> Result<()> {
    let reader = File::open(out).map_err(|e| Error::Unexpected(e.into()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader).map_err(|e| {
        refuse(
            FailureCode::BundleInvalid,
            format!("{}: not a readable Parquet file ({e})", printable(name)),
        )
    })?;
    let held = builder.metadata().file_metadata().num_rows();
    if held != rows {
        return Err(refuse(
            FailureCode::SchemaMismatch,
            format!(
                "{}: holds {held} rows, the manifest says {rows}",
                printable(name)
            ),
        ));
    }
    check_columns(name, builder.schema(), fields)
}

/// Copies the entry to `out`, never past its declared `bytes`; answers the bytes copied and
/// their sha256.
fn extract(entry: impl Read, bytes: u64, name: &str, out: &Path) -> Result<(u64, String)> {
    let mut file = File::create(out).map_err(|e| Error::Unexpected(e.into()))?;
    let mut sha = Sha256::new();
    let mut seen = 0u64;
    let mut limited = entry.take(bytes + 1);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = limited.read(&mut buf).map_err(|e| unreadable(name, e))?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        if seen > bytes {
            return Err(refuse(
                FailureCode::BundleTooLarge,
                format!(
                    "{} expands past its declared {bytes} bytes",
                    printable(name)
                ),
            ));
        }
        sha.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| Error::Unexpected(e.into()))?;
    }
    Ok((seen, hex::encode(sha.finalize())))
}

/// The Parquet file's columns are `_id` and then the definition's fields, in order and typed
/// as a Wharf Parquet export types them.
pub(super) fn check_columns(
    file: &str,
    schema: &arrow_schema::Schema,
    fields: &[Field],
) -> Result<()> {
    let mismatch = |m: String| {
        refuse(
            FailureCode::SchemaMismatch,
            format!("{}: {m}", printable(file)),
        )
    };
    let cols = schema.fields();
    if cols.len() != fields.len() + 1 {
        return Err(mismatch(format!(
            "{} columns; the definition has {} fields and _id",
            cols.len(),
            fields.len()
        )));
    }
    if cols[0].name() != "_id" || cols[0].data_type() != &DataType::Int64 {
        return Err(mismatch("the first column must be _id (int64)".into()));
    }
    for (col, f) in cols[1..].iter().zip(fields) {
        let fits = match f.field_type {
            FieldType::Integer => col.data_type() == &DataType::Int64,
            FieldType::Number => col.data_type() == &DataType::Float64,
            FieldType::Boolean => col.data_type() == &DataType::Boolean,
            FieldType::String | FieldType::Json => col.data_type() == &DataType::Utf8,
            FieldType::Timestamp => matches!(
                col.data_type(),
                DataType::Timestamp(TimeUnit::Microsecond, _)
            ),
        };
        if col.name() != &f.name || !fits {
            return Err(mismatch(format!(
                "column \"{}\" ({}) does not match field \"{}\" ({})",
                printable(col.name()),
                col.data_type(),
                f.name,
                f.field_type.as_str()
            )));
        }
    }
    Ok(())
}
