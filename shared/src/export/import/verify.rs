//! Checking a bundle whole before anything is written: the archive, its manifest, every path,
//! size, ratio and sha256, every definition; the run files extracted to scratch room.

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::schema::{Field, parse_schema, printable, validate_workflow_name};
use crate::domain::states::FailureCode;
use crate::error::{Error, Result};
use crate::export::bundle::{BUNDLE_VERSION, MANIFEST};
use crate::export::scratch::{Room, ScratchBudget};

use super::*;

pub(super) fn refuse(code: FailureCode, message: impl Into<String>) -> Error {
    Error::Refused {
        code,
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    pub(super) workflows: Vec<ManifestWorkflow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ManifestWorkflow {
    pub(super) id: Uuid,
    pub(super) definition: String,
    pub(super) definition_sha256: String,
    #[serde(default)]
    pub(super) runs: Vec<ManifestRun>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ManifestRun {
    pub(super) run_id: Uuid,
    pub(super) executed_at: DateTime<Utc>,
    pub(super) row_count: i64,
    pub(super) file: String,
    pub(super) sha256: String,
    pub(super) bytes: u64,
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
pub(super) fn safe_path(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && name.split('/').all(|part| part != ".." && part != ".")
}

pub(super) fn not_a_zip() -> Error {
    refuse(
        FailureCode::BundleInvalid,
        "the file is not a ZIP archive (a Wharf bundle is one)",
    )
}

/// Opens the archive and holds it to the zip crate's consistency checks: entries counted from
/// the end record before the directory is loaded (`MAX_ENTRIES`), no duplicate names, local
/// headers that agree with the central directory, entries that lie inside the archive and do
/// not overlap (so every compressed size is bytes really there, and ratios are real).
pub(super) fn open_archive(zip_path: &Path) -> Result<zip::ZipArchive<File>> {
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
pub(super) fn check_runs(manifest: &Manifest) -> Result<u64> {
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
    check_entries(&mut archive)?;
    let manifest = read_manifest(&mut archive)?;
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

/// Every entry's path stays inside the bundle, none is a zip bomb, and all of them together
/// expand to at most `MAX_EXPANDED` bytes.
fn check_entries(archive: &mut zip::ZipArchive<File>) -> Result<()> {
    let mut expanded = 0u64;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| refuse(FailureCode::BundleInvalid, format!("unreadable entry: {e}")))?;
        let name = entry.name().map_err(|e| {
            refuse(
                FailureCode::BundleInvalid,
                format!("unreadable entry name: {e}"),
            )
        })?;
        let name: &str = &name;
        if !safe_path(name) || entry.enclosed_name().is_none() {
            return Err(refuse(
                FailureCode::BundleInvalid,
                format!(
                    "the bundle holds a path that leaves it: \"{}\"",
                    printable(name)
                ),
            ));
        }
        let (size, packed) = (entry.size(), entry.compressed_size());
        if size > RATIO_FLOOR && size > packed.saturating_mul(MAX_RATIO) {
            return Err(refuse(
                FailureCode::BundleTooLarge,
                format!(
                    "\"{}\" expands {packed} bytes to {size} (more than {MAX_RATIO} times): refused as a zip bomb",
                    printable(name)
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
    Ok(())
}

/// `manifest.json`: a wharf bundle of the version this Wharf reads, of at most
/// `MAX_WORKFLOWS` workflows.
fn read_manifest(archive: &mut zip::ZipArchive<File>) -> Result<Manifest> {
    let (manifest_bytes, _) = read_small(archive, MANIFEST)?;
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
    let version = raw.get("version").and_then(|v| v.as_u64());
    if version != Some(BUNDLE_VERSION) {
        return Err(refuse(
            FailureCode::BundleVersion,
            format!(
                "manifest.json: bundle version {}; this Wharf reads version {BUNDLE_VERSION}",
                version.map_or_else(|| "missing".to_string(), |v| v.to_string())
            ),
        ));
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
    Ok(manifest)
}

pub(super) fn verify_workflow(
    archive: &mut zip::ZipArchive<File>,
    mw: ManifestWorkflow,
    dir: &Path,
) -> Result<VerifiedWorkflow> {
    let (name, fields) = read_definition(archive, &mw)?;
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

/// A workflow's definition file: the sha256 the manifest names, a valid name and schema.
fn read_definition(
    archive: &mut zip::ZipArchive<File>,
    mw: &ManifestWorkflow,
) -> Result<(String, Vec<Field>)> {
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
    Ok((name, fields))
}
