//! An import: a bundle (an uploaded file) checked whole — manifest, every path, every declared
//! size, every sha256, every definition and Parquet schema — before anything is written; then
//! its workflows and runs written in one transaction that also completes the job, fenced on the
//! claim. A refused bundle is a FAILED import with a code of its own and nothing written; a
//! killed worker leaves nothing (its transaction dies with it) and the retry starts over.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::bundle::{BUNDLE_VERSION, MANIFEST};
use super::scratch::{Room, ScratchBudget};
use super::{ExportContext, Outcome, Progress};
use crate::domain::schema::{Field, FieldType, parse_schema, printable, validate_workflow_name};
use crate::domain::states::FailureCode;
use crate::error::{Error, Result};
use crate::ingest::values;
use crate::ingest::writer::{COPY_HEADER, COPY_TRAILER};
use crate::repo::exports::{self, Claim, ExportRecord};
use crate::repo::imports;
use crate::repo::workflows::{self, Workflow};

/// A deflated entry may expand at most this many times (a zip bomb expands thousands of times;
/// Parquet and JSON, a few).
pub const MAX_RATIO: u64 = 100;
/// Entries smaller than this are not held to the ratio (tiny files compress well).
const RATIO_FLOOR: u64 = 1 << 20;
/// All entries together, expanded.
pub const MAX_EXPANDED: u64 = 64 << 30;
/// Workflows one import may create (each is a table, all in one transaction).
pub const MAX_WORKFLOWS: usize = 500;
/// Entries of a bundle, counted from its end record before any is read (each costs memory).
pub const MAX_ENTRIES: usize = 10_000;
/// Runs one import may write, and rows over all of them.
pub const MAX_RUNS: usize = 10_000;
pub const MAX_ROWS: i64 = 1_000_000_000;
/// The manifest and each definition are read whole; they are small.
const MAX_JSON_FILE: u64 = 16 << 20;
/// Rows per tuple batch sent to the COPY, and bytes per COPY statement (see runs::copy_run).
const BATCH_ROWS: usize = 8192;
const COPY_SPAN: usize = 16 << 20;

fn refuse(code: FailureCode, message: impl Into<String>) -> Error {
    Error::Refused {
        code,
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    workflows: Vec<ManifestWorkflow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestWorkflow {
    id: Uuid,
    definition: String,
    definition_sha256: String,
    #[serde(default)]
    runs: Vec<ManifestRun>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestRun {
    run_id: Uuid,
    executed_at: DateTime<Utc>,
    row_count: i64,
    file: String,
    sha256: String,
    bytes: u64,
}

/// A bundle that passed every check, its run files extracted beside it.
#[derive(Debug)]
pub struct Verified {
    pub workflows: Vec<VerifiedWorkflow>,
    /// The scratch room its extracted files hold.
    _room: Option<Room>,
}

#[derive(Debug)]
pub struct VerifiedWorkflow {
    pub source_id: Uuid,
    pub name: String,
    pub fields: Vec<Field>,
    pub runs: Vec<VerifiedRun>,
}

#[derive(Debug)]
pub struct VerifiedRun {
    pub source_id: Uuid,
    pub executed_at: DateTime<Utc>,
    pub rows: i64,
    /// The run's Parquet file, extracted and checked.
    pub path: PathBuf,
    /// Its name in the bundle, for messages.
    pub file: String,
}

/// A path inside the bundle that stays inside it: relative, no `..`, no backslashes, no NUL.
fn safe_path(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && name.split('/').all(|part| part != ".." && part != ".")
}

fn not_a_zip() -> Error {
    refuse(
        FailureCode::BundleInvalid,
        "the file is not a ZIP archive (a Wharf bundle is one)",
    )
}

/// Opens the archive and holds it to the zip crate's consistency checks: entries counted from
/// the end record before the directory is loaded (`MAX_ENTRIES`), no duplicate names, local
/// headers that agree with the central directory, entries that lie inside the archive and do
/// not overlap (so every compressed size is bytes really there, and ratios are real).
fn open_archive(zip_path: &Path) -> Result<zip::ZipArchive<File>> {
    let file = File::open(zip_path).map_err(|e| Error::Unexpected(e.into()))?;
    let entries = zip::unstable::read::ZipIterable::try_new(&file, zip::read::Config::default())
        .map_err(|_| not_a_zip())?
        .len();
    if entries > MAX_ENTRIES {
        return Err(refuse(
            FailureCode::BundleTooLarge,
            format!("the bundle holds {entries} entries; an import takes at most {MAX_ENTRIES}"),
        ));
    }
    let mut archive = zip::ZipArchive::new(file).map_err(|_| not_a_zip())?;
    archive.validate_header_consistency().map_err(|e| {
        refuse(
            FailureCode::BundleInvalid,
            format!("the archive is inconsistent: {e}"),
        )
    })?;
    Ok(archive)
}

/// The manifest's runs against the import's limits: at most `MAX_RUNS` runs and `MAX_ROWS`
/// rows, each run file backing one run; returns the bytes its run files will take on disk.
fn check_runs(manifest: &Manifest) -> Result<u64> {
    let runs: Vec<&ManifestRun> = manifest.workflows.iter().flat_map(|w| &w.runs).collect();
    if runs.len() > MAX_RUNS {
        return Err(refuse(
            FailureCode::BundleTooLarge,
            format!(
                "the bundle holds {} runs; an import takes at most {MAX_RUNS}",
                runs.len()
            ),
        ));
    }
    let mut files = std::collections::HashSet::with_capacity(runs.len());
    let (mut rows, mut bytes) = (0i64, 0u64);
    for run in &runs {
        if !files.insert(run.file.as_str()) {
            return Err(refuse(
                FailureCode::BundleInvalid,
                format!(
                    "manifest.json names \"{}\" for two runs; each run file backs one run",
                    printable(&run.file)
                ),
            ));
        }
        if run.row_count < 0 {
            return Err(refuse(
                FailureCode::BundleInvalid,
                format!("{}: a negative rowCount", printable(&run.file)),
            ));
        }
        rows = rows.saturating_add(run.row_count);
        bytes = bytes.saturating_add(run.bytes);
    }
    if rows > MAX_ROWS {
        return Err(refuse(
            FailureCode::BundleTooLarge,
            format!("the bundle holds {rows} rows; an import takes at most {MAX_ROWS}"),
        ));
    }
    Ok(bytes)
}

/// Checks the bundle at `zip_path` and extracts its run files into `dir`, within room reserved
/// on `scratch` first.
pub fn verify(zip_path: &Path, dir: &Path, scratch: &ScratchBudget) -> Result<Verified> {
    let mut archive = open_archive(zip_path)?;
    let mut expanded = 0u64;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| refuse(FailureCode::BundleInvalid, format!("unreadable entry: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| {
                refuse(
                    FailureCode::BundleInvalid,
                    format!("unreadable entry name: {e}"),
                )
            })?
            .to_string();
        if !safe_path(&name) || entry.enclosed_name().is_none() {
            return Err(refuse(
                FailureCode::BundleInvalid,
                format!(
                    "the bundle holds a path that leaves it: \"{}\"",
                    printable(&name)
                ),
            ));
        }
        let (size, packed) = (entry.size(), entry.compressed_size());
        if size > RATIO_FLOOR && size > packed.saturating_mul(MAX_RATIO) {
            return Err(refuse(
                FailureCode::BundleTooLarge,
                format!(
                    "\"{}\" expands {packed} bytes to {size} (more than {MAX_RATIO} times): refused as a zip bomb",
                    printable(&name)
                ),
            ));
        }
        expanded = expanded.saturating_add(size);
    }
    if expanded > MAX_EXPANDED {
        return Err(refuse(
            FailureCode::BundleTooLarge,
            format!("the bundle expands to {expanded} bytes, over the limit of {MAX_EXPANDED}"),
        ));
    }
    let (manifest_bytes, _) = read_small(&mut archive, MANIFEST)?;
    let raw = crate::json::parse(&manifest_bytes).map_err(|e| {
        refuse(
            FailureCode::BundleInvalid,
            format!("manifest.json is not valid JSON: {e}"),
        )
    })?;
    if raw.get("format").and_then(|v| v.as_str()) != Some("wharf-bundle") {
        return Err(refuse(
            FailureCode::BundleInvalid,
            "manifest.json: \"format\" must be \"wharf-bundle\"",
        ));
    }
    match raw.get("version").and_then(|v| v.as_u64()) {
        Some(BUNDLE_VERSION) => {}
        other => {
            return Err(refuse(
                FailureCode::BundleVersion,
                format!(
                    "manifest.json: bundle version {}; this Wharf reads version {BUNDLE_VERSION}",
                    other.map_or_else(|| "missing".to_string(), |v| v.to_string())
                ),
            ));
        }
    }
    let manifest: Manifest = serde_json::from_value(raw).map_err(|e| {
        refuse(
            FailureCode::BundleInvalid,
            format!("manifest.json: {}", crate::json::describe(&e)),
        )
    })?;
    if manifest.workflows.len() > MAX_WORKFLOWS {
        return Err(refuse(
            FailureCode::BundleTooLarge,
            format!(
                "the bundle holds {} workflows; an import takes at most {MAX_WORKFLOWS}",
                manifest.workflows.len()
            ),
        ));
    }
    let room = scratch.try_reserve(check_runs(&manifest)?)?;
    let mut workflows = Vec::with_capacity(manifest.workflows.len());
    for mw in manifest.workflows {
        workflows.push(verify_workflow(&mut archive, mw, dir)?);
    }
    Ok(Verified {
        workflows,
        _room: Some(room),
    })
}

fn verify_workflow(
    archive: &mut zip::ZipArchive<File>,
    mw: ManifestWorkflow,
    dir: &Path,
) -> Result<VerifiedWorkflow> {
    let (bytes, sha) = read_small(archive, &mw.definition)?;
    if sha != mw.definition_sha256 {
        return Err(refuse(
            FailureCode::ChecksumMismatch,
            format!(
                "{}: sha256 is {sha}, the manifest says {}",
                printable(&mw.definition),
                printable(&mw.definition_sha256)
            ),
        ));
    }
    let def = crate::json::parse(&bytes).map_err(|e| {
        refuse(
            FailureCode::BundleInvalid,
            format!("{}: not valid JSON: {e}", printable(&mw.definition)),
        )
    })?;
    let at = |m: String| {
        refuse(
            FailureCode::SchemaMismatch,
            format!("{}: {m}", printable(&mw.definition)),
        )
    };
    let name = def
        .get("name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| at("\"name\": required string".into()))?
        .to_string();
    validate_workflow_name(&name).map_err(|e| at(e.to_string()))?;
    let fields = parse_schema(def.get("schema").unwrap_or(&serde_json::Value::Null))
        .map_err(|e| at(e.to_string()))?;
    let mut runs = Vec::with_capacity(mw.runs.len());
    for (i, mr) in mw.runs.into_iter().enumerate() {
        let path = dir.join(format!("{}-{i}.parquet", mw.id.simple()));
        verify_run(archive, &mr, &fields, &path)?;
        runs.push(VerifiedRun {
            source_id: mr.run_id,
            executed_at: mr.executed_at,
            rows: mr.row_count,
            path,
            file: mr.file,
        });
    }
    Ok(VerifiedWorkflow {
        source_id: mw.id,
        name,
        fields,
        runs,
    })
}

fn missing(name: &str) -> Error {
    refuse(
        FailureCode::BundleInvalid,
        format!(
            "the manifest names \"{}\", which the bundle does not hold",
            printable(name)
        ),
    )
}

fn unreadable(name: &str, e: impl std::fmt::Display) -> Error {
    refuse(
        FailureCode::ChecksumMismatch,
        format!("{}: damaged ({e})", printable(name)),
    )
}

/// A small entry, whole, and its sha256.
fn read_small(archive: &mut zip::ZipArchive<File>, name: &str) -> Result<(Vec<u8>, String)> {
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
fn verify_run(
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
    let mut file = File::create(out).map_err(|e| Error::Unexpected(e.into()))?;
    let mut sha = Sha256::new();
    let mut seen = 0u64;
    let mut limited = entry.take(mr.bytes + 1);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = limited.read(&mut buf).map_err(|e| unreadable(name, e))?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        if seen > mr.bytes {
            return Err(refuse(
                FailureCode::BundleTooLarge,
                format!(
                    "{} expands past its declared {} bytes",
                    printable(name),
                    mr.bytes
                ),
            ));
        }
        sha.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| Error::Unexpected(e.into()))?;
    }
    let sha = hex::encode(sha.finalize());
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
    drop(file);
    let reader = File::open(out).map_err(|e| Error::Unexpected(e.into()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader).map_err(|e| {
        refuse(
            FailureCode::BundleInvalid,
            format!("{}: not a readable Parquet file ({e})", printable(name)),
        )
    })?;
    let rows = builder.metadata().file_metadata().num_rows();
    if rows != mr.row_count {
        return Err(refuse(
            FailureCode::SchemaMismatch,
            format!(
                "{}: holds {rows} rows, the manifest says {}",
                printable(name),
                mr.row_count
            ),
        ));
    }
    check_columns(name, builder.schema(), fields)
}

/// The Parquet file's columns are `_id` and then the definition's fields, in order and typed
/// as a Wharf Parquet export types them.
fn check_columns(file: &str, schema: &arrow_schema::Schema, fields: &[Field]) -> Result<()> {
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

/// Reads a verified run file into binary COPY tuples (`_id, run_id, c1..cn`), checking each
/// value as ingest does; sends batches of tuples; returns the rows sent.
fn run_tuples(
    run: &VerifiedRun,
    fields: &[Field],
    run_id: Uuid,
    first_id: i64,
    tx: &mpsc::Sender<Vec<u8>>,
) -> Result<u64> {
    let file = File::open(&run.path).map_err(|e| Error::Unexpected(e.into()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
        .map_err(|e| unreadable(&run.file, e))?;
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(&run.file, e))?;
        let buf = batch_tuples(
            &batch,
            fields,
            run_id,
            first_id + rows as i64,
            rows,
            &run.file,
        )?;
        rows += batch.num_rows() as u64;
        if tx.blocking_send(buf).is_err() {
            return Err(super::stopped());
        }
    }
    Ok(rows)
}

fn batch_tuples(
    batch: &RecordBatch,
    fields: &[Field],
    run_id: Uuid,
    first_id: i64,
    row_base: u64,
    file: &str,
) -> Result<Vec<u8>> {
    let width = (fields.len() + 2) as i16;
    let mut buf = Vec::with_capacity(batch.num_rows() * (16 + fields.len() * 12));
    let bad = |row: usize, field: &Field, why: String| {
        refuse(
            FailureCode::SchemaMismatch,
            format!(
                "{} row {}: field \"{}\": {why}",
                printable(file),
                row_base + row as u64 + 1,
                field.name
            ),
        )
    };
    for row in 0..batch.num_rows() {
        buf.extend_from_slice(&width.to_be_bytes());
        values::push_i64(&mut buf, first_id + row as i64);
        buf.extend_from_slice(&16i32.to_be_bytes());
        buf.extend_from_slice(run_id.as_bytes());
        for (i, f) in fields.iter().enumerate() {
            let col = batch.column(i + 1);
            if col.is_null(row) {
                if !f.nullable {
                    return Err(bad(row, f, "null in a field that is not nullable".into()));
                }
                buf.extend_from_slice(values::NULL);
                continue;
            }
            let pushed = match f.field_type {
                FieldType::Integer => col
                    .as_primitive_opt::<Int64Type>()
                    .map(|a| values::push_i64(&mut buf, a.value(row)))
                    .ok_or_else(|| "not an int64 column".to_string()),
                FieldType::Number => col
                    .as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| "not a double column".to_string())
                    .and_then(|a| values::push_float(&mut buf, a.value(row))),
                FieldType::Boolean => col
                    .as_boolean_opt()
                    .map(|a| values::push_bool(&mut buf, a.value(row)))
                    .ok_or_else(|| "not a boolean column".to_string()),
                FieldType::String => col
                    .as_string_opt::<i32>()
                    .ok_or_else(|| "not a string column".to_string())
                    .and_then(|a| values::push_text(&mut buf, a.value(row))),
                FieldType::Json => col
                    .as_string_opt::<i32>()
                    .ok_or_else(|| "not a string column".to_string())
                    .and_then(|a| values::push_json_text(&mut buf, a.value(row))),
                FieldType::Timestamp => col
                    .as_primitive_opt::<TimestampMicrosecondType>()
                    .ok_or_else(|| "not a timestamp column".to_string())
                    .and_then(|a| values::push_unix_micros(&mut buf, a.value(row))),
            };
            pushed.map_err(|why| bad(row, f, why))?;
        }
    }
    Ok(buf)
}

/// Scratch directories older than this belong to attempts that died (a SIGKILLed worker runs
/// no destructor); the janitor removes them.
pub const SCRATCH_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes import scratch directories left by dead attempts; returns how many.
pub fn sweep_scratch() -> usize {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("wharf-import-"))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > SCRATCH_MAX_AGE)
        })
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

/// A directory of the import's own, removed however the attempt ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Runs a claimed import and records how it ended.
pub(super) async fn run(ctx: &ExportContext, claim: Claim, rec: &ExportRecord) -> Result<Outcome> {
    tracing::info!("import claimed");
    let started = Instant::now();
    let cancel = ctx.stop.child_token();
    let progress = Arc::new(Progress::default());
    let beat = tokio::spawn(super::attempt::heartbeat(
        ctx.clone(),
        claim,
        progress.clone(),
        cancel.clone(),
    ));
    let done = import(ctx, &claim, rec, &progress, &cancel).await;
    beat.abort();
    match done {
        Ok(Some(rows)) => {
            tracing::info!(
                rows,
                seconds = started.elapsed().as_secs_f64(),
                "import completed"
            );
            Ok(Outcome::Completed {
                rows,
                bytes: 0,
                seconds: started.elapsed().as_secs_f64(),
            })
        }
        Ok(None) => {
            tracing::info!("import stopped: cancelled or claim lost; nothing written");
            Ok(Outcome::Cancelled)
        }
        Err(e) => super::attempt::settle_error(ctx, &claim, rec, e, &cancel).await,
    }
}

/// `Some(rows)` when completed; `None` when the claim was lost (nothing written).
async fn import(
    ctx: &ExportContext,
    claim: &Claim,
    rec: &ExportRecord,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Option<u64>> {
    let file_id = rec.file_id.ok_or(Error::NotFound("uploaded file"))?;
    let file = imports::get_file(&ctx.pool, rec.project_id, file_id)
        .await?
        .ok_or_else(|| {
            refuse(
                FailureCode::NotFound,
                "the uploaded file no longer exists (files live 24 hours); upload it again",
            )
        })?;
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "wharf-import-{}-{}",
        rec.id.simple(),
        claim.attempt
    )));
    tokio::fs::create_dir_all(&scratch.0)
        .await
        .map_err(|e| Error::Unexpected(e.into()))?;
    let _bundle_room = ctx
        .scratch
        .reserve(u64::try_from(file.size_bytes).unwrap_or(u64::MAX))
        .await?;
    let zip_path = scratch.0.join("bundle.zip");
    let mut out = tokio::fs::File::create(&zip_path)
        .await
        .map_err(|e| Error::Unexpected(e.into()))?;
    let mut body = ctx.store.get(&file.object_key, None).await?;
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?)
            .await
            .map_err(|e| Error::Unexpected(e.into()))?;
    }
    out.flush().await.map_err(|e| Error::Unexpected(e.into()))?;
    drop(out);

    let dir = scratch.0.clone();
    let budget = ctx.scratch.clone();
    let verified = tokio::task::spawn_blocking(move || verify(&zip_path, &dir, &budget))
        .await
        .map_err(|e| Error::Unexpected(e.into()))??;
    let total: i64 = verified
        .workflows
        .iter()
        .flat_map(|w| w.runs.iter().map(|r| r.rows))
        .sum();
    exports::set_total(&ctx.pool, claim, total).await?;
    let target = match rec.workflow_id {
        Some(id) => Some(target_workflow(ctx, rec.project_id, id, &verified).await?),
        None => None,
    };

    let mut conn = sqlx::PgConnection::connect_with(&ctx.pool.connect_options()).await?;
    let mut tx = conn.begin().await?;
    let mut result = Vec::with_capacity(verified.workflows.len());
    let mut written = 0u64;
    let verified = Arc::new(verified);
    for (w, vw) in verified.workflows.iter().enumerate() {
        let wf = match &target {
            Some(wf) => wf.clone(),
            None => {
                let name = match (&rec.import_name, verified.workflows.len()) {
                    (Some(n), 1) => n.clone(),
                    _ => vw.name.clone(),
                };
                workflows::create_in(&mut tx, rec.project_id, &name, &vw.fields).await?
            }
        };
        let mut rows_of_wf = 0u64;
        for r in 0..vw.runs.len() {
            if cancel.is_cancelled() {
                return Err(super::stopped());
            }
            let first = imports::next_row_id(&mut tx, wf.id).await?;
            let run_id = crate::domain::ids::new_id();
            let n = copy_run(&mut tx, &wf, verified.clone(), w, r, run_id, first).await?;
            let run = &vw.runs[r];
            if n as i64 != run.rows {
                return Err(refuse(
                    FailureCode::SchemaMismatch,
                    format!(
                        "{}: read {n} rows, the manifest says {}",
                        run.file, run.rows
                    ),
                ));
            }
            imports::add_run_with_id(&mut tx, wf.id, run_id, first, run.rows, run.executed_at)
                .await?;
            rows_of_wf += n;
            written += n;
            progress
                .rows
                .store(written, std::sync::atomic::Ordering::Relaxed);
        }
        result.push(serde_json::json!({
            "sourceId": vw.source_id,
            "workflowId": wf.id,
            "name": wf.name,
            "runs": vw.runs.len(),
            "rows": rows_of_wf,
        }));
    }
    let result = serde_json::json!({ "workflows": result });
    if !imports::complete_import(&mut tx, claim, written as i64, &result).await? {
        tx.rollback().await.ok();
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(written))
}

/// The workflow an import adds runs to: the bundle must hold one workflow, of the same schema.
async fn target_workflow(
    ctx: &ExportContext,
    project_id: Uuid,
    id: Uuid,
    verified: &Verified,
) -> Result<Workflow> {
    let wf = workflows::get(&ctx.pool, project_id, id)
        .await?
        .ok_or_else(|| {
            refuse(
                FailureCode::NotFound,
                "the target workflow no longer exists",
            )
        })?;
    let [vw] = verified.workflows.as_slice() else {
        return Err(refuse(
            FailureCode::SchemaMismatch,
            format!(
                "the bundle holds {} workflows; adding runs to a workflow takes a bundle of one",
                verified.workflows.len()
            ),
        ));
    };
    if let Some(diff) = first_difference(&wf.fields, &vw.fields) {
        return Err(refuse(FailureCode::SchemaMismatch, diff));
    }
    Ok(wf)
}

/// The first way two schemas differ, in words; None when they are the same.
pub fn first_difference(have: &[Field], bundle: &[Field]) -> Option<String> {
    for (i, (a, b)) in have.iter().zip(bundle).enumerate() {
        if a != b {
            return Some(format!(
                "schema[{i}]: the workflow has \"{}\" ({}{}), the bundle \"{}\" ({}{})",
                a.name,
                a.field_type.as_str(),
                if a.nullable { ", nullable" } else { "" },
                b.name,
                b.field_type.as_str(),
                if b.nullable { ", nullable" } else { "" },
            ));
        }
    }
    (have.len() != bundle.len()).then(|| {
        format!(
            "the workflow has {} fields, the bundle {}",
            have.len(),
            bundle.len()
        )
    })
}

/// COPYs one run's tuples (made on a blocking thread from its Parquet file) into the
/// workflow's table, in statements of at most COPY_SPAN bytes; returns the rows copied.
async fn copy_run(
    tx: &mut sqlx::PgConnection,
    wf: &Workflow,
    verified: Arc<Verified>,
    w: usize,
    r: usize,
    run_id: Uuid,
    first: i64,
) -> Result<u64> {
    let (batch_tx, mut batches) = mpsc::channel::<Vec<u8>>(4);
    let fields = wf.fields.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let vw = &verified.workflows[w];
        run_tuples(&vw.runs[r], &fields, run_id, first, &batch_tx)
    });
    let statement = imports::run_copy_statement(wf);
    let mut copy = tx.copy_in_raw(&statement).await?;
    copy.send(COPY_HEADER).await?;
    let mut span = 0usize;
    let mut copied = 0u64;
    while let Some(batch) = batches.recv().await {
        if span >= COPY_SPAN {
            copy.send(COPY_TRAILER).await.map_err(too_wide)?;
            copied += copy.finish().await.map_err(too_wide)?;
            copy = tx.copy_in_raw(&statement).await?;
            copy.send(COPY_HEADER).await?;
            span = 0;
        }
        span += batch.len();
        copy.send(batch).await.map_err(too_wide)?;
    }
    let produced = producer.await.map_err(|e| Error::Unexpected(e.into()))?;
    let rows = match produced {
        Ok(rows) => rows,
        Err(e) => {
            copy.abort("import refused").await.ok();
            return Err(e);
        }
    };
    copy.send(COPY_TRAILER).await.map_err(too_wide)?;
    copied += copy.finish().await.map_err(too_wide)?;
    if copied != rows {
        return Err(Error::Unexpected(anyhow::anyhow!(
            "copied {copied} rows, read {rows}"
        )));
    }
    Ok(rows)
}

/// PostgreSQL refusing a row as too wide (54000) is the bundle's fault, not a crash.
fn too_wide(e: sqlx::Error) -> Error {
    match e.as_database_error().and_then(|d| d.code()) {
        Some(code) if code == "54000" => refuse(
            FailureCode::SchemaMismatch,
            "a row is too wide to store (over PostgreSQL's 8160-byte row limit after compression)",
        ),
        _ => e.into(),
    }
}
