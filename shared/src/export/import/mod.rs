//! An import: a bundle (an uploaded file) checked whole — manifest, every path, every declared
//! size, every sha256, every definition and Parquet schema — before anything is written; then
//! its workflows and runs written in one transaction that also completes the job, fenced on the
//! claim. A refused bundle is a FAILED import with a code of its own and nothing written; a
//! killed worker leaves nothing (its transaction dies with it) and the retry starts over.

mod files;
mod tuples;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use sqlx::Connection;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::schema::Field;
use crate::domain::states::FailureCode;
use crate::error::{Error, Result};
use crate::export::{ExportContext, Outcome, Progress};
use crate::ingest::writer::{COPY_HEADER, COPY_TRAILER};
use crate::repo::exports::{self, Claim, ExportRecord};
use crate::repo::imports;
use crate::repo::workflows::{self, Workflow};

use files::*;
use tuples::*;
use verify::*;
pub use verify::{Verified, VerifiedRun, VerifiedWorkflow, verify};

/// A deflated entry may expand at most this many times (a zip bomb expands thousands of times;
/// Parquet and JSON, a few).
pub const MAX_RATIO: u64 = 100;
/// Entries smaller than this are not held to the ratio (tiny files compress well).
pub(crate) const RATIO_FLOOR: u64 = 1 << 20;
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
pub(crate) const MAX_JSON_FILE: u64 = 16 << 20;
/// Rows per tuple batch sent to the COPY, and bytes per COPY statement (see runs::copy_run).
pub(crate) const BATCH_ROWS: usize = 8192;
pub(crate) const COPY_SPAN: usize = 16 << 20;

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

/// The uploaded bundle, downloaded into `scratch` (within room reserved for it, held as long as
/// the answer) and verified, its run files extracted beside it.
async fn fetch_and_verify(
    ctx: &ExportContext,
    rec: &ExportRecord,
    scratch: &Scratch,
) -> Result<(Verified, crate::export::scratch::Room)> {
    let file_id = rec.file_id.ok_or(Error::NotFound("uploaded file"))?;
    let file = imports::get_file(&ctx.pool, rec.project_id, file_id)
        .await?
        .ok_or_else(|| {
            refuse(
                FailureCode::NotFound,
                "the uploaded file no longer exists (files live 24 hours); upload it again",
            )
        })?;
    tokio::fs::create_dir_all(&scratch.0).await.map_err(io)?;
    let bundle_room = ctx
        .scratch
        .reserve(u64::try_from(file.size_bytes).unwrap_or(u64::MAX))
        .await?;
    let zip_path = scratch.0.join("bundle.zip");
    download(ctx, &file.object_key, &zip_path).await?;
    let (dir, budget) = (scratch.0.clone(), ctx.scratch.clone());
    let verified = tokio::task::spawn_blocking(move || verify(&zip_path, &dir, &budget))
        .await
        .map_err(|e| Error::Unexpected(e.into()))??;
    Ok((verified, bundle_room))
}

/// `Some(rows)` when completed; `None` when the claim was lost (nothing written).
async fn import(
    ctx: &ExportContext,
    claim: &Claim,
    rec: &ExportRecord,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Option<u64>> {
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "wharf-import-{}-{}",
        rec.id.simple(),
        claim.attempt
    )));
    let (verified, _bundle_room) = fetch_and_verify(ctx, rec, &scratch).await?;
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
    let into = Landing {
        rec,
        target,
        progress,
        cancel,
    };
    let (written, result) = into.write(&mut tx, Arc::new(verified)).await?;
    if !imports::complete_import(&mut tx, claim, written as i64, &result).await? {
        tx.rollback().await.ok();
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(written))
}

fn io(e: std::io::Error) -> Error {
    Error::Unexpected(e.into())
}

/// The uploaded bundle, from the store to the scratch disk.
async fn download(ctx: &ExportContext, key: &str, path: &std::path::Path) -> Result<()> {
    let mut out = tokio::fs::File::create(path).await.map_err(io)?;
    let mut body = ctx.store.get(key, None).await?;
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?).await.map_err(io)?;
    }
    out.flush().await.map_err(io)
}

/// Where an import's verified workflows go, in its one transaction.
struct Landing<'a> {
    rec: &'a ExportRecord,
    /// The existing workflow runs are added to (`workflowId`), or new workflows.
    target: Option<Workflow>,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
}

impl Landing<'_> {
    /// Every workflow and run of the bundle: the rows written and the import's result.
    async fn write(
        &self,
        tx: &mut sqlx::PgConnection,
        verified: Arc<Verified>,
    ) -> Result<(u64, serde_json::Value)> {
        let mut result = Vec::with_capacity(verified.workflows.len());
        let mut written = 0u64;
        for (w, vw) in verified.workflows.iter().enumerate() {
            let wf = match &self.target {
                Some(wf) => wf.clone(),
                None => {
                    let name = match (&self.rec.import_name, verified.workflows.len()) {
                        (Some(n), 1) => n.clone(),
                        _ => vw.name.clone(),
                    };
                    workflows::create_in(tx, self.rec.project_id, &name, &vw.fields).await?
                }
            };
            let before = written;
            for r in 0..vw.runs.len() {
                written += self.run(tx, &wf, verified.clone(), (w, r), written).await?;
            }
            result.push(serde_json::json!({
                "sourceId": vw.source_id,
                "workflowId": wf.id,
                "name": wf.name,
                "runs": vw.runs.len(),
                "rows": written - before,
            }));
        }
        Ok((written, serde_json::json!({ "workflows": result })))
    }

    /// One run of the bundle (workflow `w`, run `r`) as a new run of `wf`.
    async fn run(
        &self,
        tx: &mut sqlx::PgConnection,
        wf: &Workflow,
        verified: Arc<Verified>,
        (w, r): (usize, usize),
        written: u64,
    ) -> Result<u64> {
        if self.cancel.is_cancelled() {
            return Err(crate::export::stopped());
        }
        let first = imports::next_row_id(tx, wf.id).await?;
        let run_id = crate::domain::ids::new_id();
        let n = copy_run(tx, wf, verified.clone(), w, r, run_id, first).await?;
        let run = &verified.workflows[w].runs[r];
        if n as i64 != run.rows {
            return Err(refuse(
                FailureCode::SchemaMismatch,
                format!(
                    "{}: read {n} rows, the manifest says {}",
                    run.file, run.rows
                ),
            ));
        }
        imports::add_run_with_id(tx, wf.id, run_id, first, run.rows, run.executed_at).await?;
        self.progress
            .rows
            .store(written + n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
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
