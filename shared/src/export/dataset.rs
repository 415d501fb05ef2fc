//! A dataset: one export built by many workers (API.md "Large exports"). The export's own job
//! plans it (counts the selection and cuts it into files, groups them into parts, puts one part
//! job each in the ledger); each part writes its files through the one pipeline, one page of
//! the export's order a file, and records them with its success, fenced on its claim; the last
//! part takes the export's job and writes `manifest.json`, completing the export in the fenced
//! step every export completes with. A part that fails fatally fails its export (its siblings
//! are cancelled in the same statement); the files of a dataset that ended without use are
//! removed (`remove_files`: at once by whoever ended it, else by the janitor).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::pipeline::{self, Attempt, Feeder, Produced, Source, Target};
use super::{ExportContext, Outcome, Progress, ReadConn, attempt};
use crate::domain::dataset::{self as ds, DatasetSpec, FileCut, FileStart, PartPlan};
use crate::domain::export::{self as dom, ExportSpec};
use crate::error::{Error, Result};
use crate::repo::export_query::{Cutting, Plan, Seek};
use crate::repo::exports::{self, Claim, Claimed, Completion, ExportRecord, NewFile, PartDone};
use crate::repo::workflows::Workflow;
use crate::store::{ObjectMeta, ObjectStore};

/// The store key of a dataset's file (`path` as the manifest names it).
pub fn file_key(export_id: uuid::Uuid, path: &str) -> String {
    format!("exports/{export_id}/{path}")
}

pub fn manifest_key(export_id: uuid::Uuid) -> String {
    format!("exports/{export_id}/manifest.json")
}

fn parts_of(claimed: &Claimed) -> Result<(&Workflow, uuid::Uuid, &ExportSpec, &DatasetSpec)> {
    let rec = &claimed.rec;
    let wf = claimed
        .workflow
        .as_ref()
        .ok_or(Error::NotFound("workflow"))?;
    let run_id = rec.run_id.ok_or(Error::NotFound("run"))?;
    let spec = &rec.params.0;
    let dataset = spec.dataset.as_ref().ok_or_else(|| {
        Error::Unexpected(anyhow::anyhow!("a part of an export that is no dataset"))
    })?;
    Ok((wf, run_id, spec, dataset))
}

/// The export's job: cuts the selection into files and parts and leaves the export WAITING on
/// them; or, taken again after its finisher was lost, writes the manifest.
pub(super) async fn plan(
    ctx: &ExportContext,
    claimed: &Claimed,
    read_conn: &mut ReadConn,
) -> Result<Outcome> {
    let (claim, rec) = (claimed.claim, &claimed.rec);
    if rec.parts_total.is_some() {
        if exports::parts_left(&ctx.pool, rec.id).await? == 0 {
            return finish(ctx, &claim, rec, Instant::now()).await;
        }
        return Err(Error::Unexpected(anyhow::anyhow!(
            "a dataset's job was claimed while its parts run"
        )));
    }
    let (wf, run_id, spec, dataset) = parts_of(claimed)?;
    let plan = Plan::new(wf, run_id, spec)?;
    let slots = exports::free_slots(&ctx.pool).await? + 1;
    let wanted = ds::part_count(dataset.parallelism, slots, ctx.project_cap, usize::MAX);
    let cutting = Cutting {
        per_file: dataset.max_rows_per_file,
        files: wanted,
        partition_by: &dataset.partition_by,
    };
    let lsn = rec.run_commit_lsn.as_deref();
    let (mut conn, server) = super::read_connection(ctx, read_conn, lsn).await?;
    let (total, cuts) = plan.cut_files(&mut conn, &wf.fields, &cutting).await?;
    super::put_back(read_conn, conn, server);
    let files = cuts.len();
    let parts = ds::group_files(
        cuts,
        ds::part_count(dataset.parallelism, slots, ctx.project_cap, files),
    );
    let Some(jobs) = exports::plan(&ctx.pool, &claim, &parts, total).await? else {
        return Ok(Outcome::Cancelled);
    };
    tracing::info!(rows = total, files, parts = parts.len(), "dataset planned");
    Ok(Outcome::Planned { jobs })
}

/// One file's rows: a page of the export's order, read on the slot's connection.
struct PageSource {
    plan: Plan,
    seek: Seek,
    rows: i64,
}

#[async_trait]
impl Source for PageSource {
    async fn open(&mut self, conn: &mut PgConnection) -> Result<i64> {
        self.plan.apply_to_session(conn).await?;
        Ok(self.rows)
    }

    async fn read(&self, conn: &mut PgConnection, feed: &Feeder<'_>) -> Result<()> {
        let sql = self.plan.page_copy_sql(self.seek, self.rows.max(0) as u64);
        feed.copy_part(conn, &sql, 0).await
    }

    async fn close(&self, _: &mut PgConnection) -> Result<()> {
        Ok(())
    }
}

/// The target of a file: its key, its download name (the last segment of its path) and type.
fn target(export_id: uuid::Uuid, spec: &ExportSpec, path: &str) -> Target {
    let name = path.rsplit('/').next().unwrap_or(path).to_string();
    Target {
        key: file_key(export_id, path),
        meta: ObjectMeta {
            content_type: dom::content_type(spec.format, spec.compression).to_string(),
            content_disposition: dom::content_disposition(&name),
        },
        file_name: name,
    }
}

/// A file's extension as the export's single file would have it (`.csv.gz`, `.parquet`).
fn extension(spec: &ExportSpec) -> String {
    let name = dom::file_name("x", chrono::NaiveDate::MIN, spec.format, spec.compression);
    let date = chrono::NaiveDate::MIN.to_string();
    name.rsplit_once(&format!("-{date}"))
        .map_or("", |(_, e)| e)
        .to_string()
}

/// A part's attempt: its files in order, each through the pipeline, then its fenced completion.
pub(super) async fn run_part(
    ctx: &ExportContext,
    claimed: &Claimed,
    read_conn: &mut ReadConn,
) -> Result<Outcome> {
    let (claim, rec) = (claimed.claim, &claimed.rec);
    let part = claimed
        .part
        .as_ref()
        .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("a part claimed without its plan")))?;
    let span = tracing::info_span!("part", export_id = %claim.export_id, part = part.index,
        request_id = rec.request_id.as_deref().unwrap_or(""), attempt = claim.attempt);
    tracing::Instrument::instrument(attempt_part(ctx, claimed, part, read_conn), span).await
}

async fn attempt_part(
    ctx: &ExportContext,
    claimed: &Claimed,
    part: &PartPlan,
    read_conn: &mut ReadConn,
) -> Result<Outcome> {
    let (claim, rec) = (claimed.claim, &claimed.rec);
    let started = Instant::now();
    let cancel = ctx.stop.child_token();
    let progress = Arc::new(Progress::default());
    let beat = tokio::spawn(attempt::heartbeat(
        ctx.clone(),
        claim,
        progress.clone(),
        cancel.clone(),
    ));
    let at = Attempt {
        ctx,
        claim: &claim,
        progress: &progress,
        started,
        cancel: &cancel,
        run_lsn: rec.run_commit_lsn.as_deref(),
    };
    let written = write_files(&at, claimed, part, read_conn).await;
    beat.abort();
    let produced = match written {
        Ok(p) => p,
        Err((done, e)) => {
            delete_all(&*ctx.store, &done).await;
            let outcome = attempt::settle_error(ctx, &claim, rec, e, &cancel).await?;
            if matches!(outcome, Outcome::Failed { .. }) {
                remove_files(&ctx.pool, &*ctx.store, rec.id).await;
            }
            return Ok(outcome);
        }
    };
    record(ctx, &claim, rec, part, produced, started, &cancel).await
}

/// Every file of the part; on an error, the files written so far with it (to delete).
async fn write_files(
    at: &Attempt<'_>,
    claimed: &Claimed,
    part: &PartPlan,
    read_conn: &mut ReadConn,
) -> std::result::Result<Vec<(FileCut, String, Produced)>, (Vec<String>, Error)> {
    let rec = &claimed.rec;
    let mut done: Vec<(FileCut, String, Produced)> = Vec::with_capacity(part.files.len());
    let keys = |done: &[(FileCut, String, Produced)]| -> Vec<String> {
        done.iter().map(|(_, _, p)| p.target.key.clone()).collect()
    };
    let (wf, run_id, spec, dataset) = match parts_of(claimed) {
        Ok(p) => p,
        Err(e) => return Err((Vec::new(), e)),
    };
    let ext = extension(spec);
    for cut in &part.files {
        let file = async {
            let mut plan = Plan::new(wf, run_id, spec)?;
            plan.restrict(&wf.fields, &dataset.partition_by, &cut.partition)?;
            let seek = match cut.start {
                FileStart::FromId(id) => Seek::FromId(id),
                FileStart::Skip(n) => Seek::Skip(n),
            };
            let path = cut.path(&ext);
            let encode = super::file::encoder(spec, plan.columns.clone());
            let mut source = PageSource {
                plan,
                seek,
                rows: cut.rows,
            };
            let target = target(rec.id, spec, &path);
            let produced = pipeline::run(at, read_conn, &mut source, target, encode).await?;
            Ok::<_, Error>((path, produced))
        };
        match file.await {
            Ok((path, produced)) => done.push((cut.clone(), path, produced)),
            Err(e) => return Err((keys(&done), e)),
        }
    }
    Ok(done)
}

/// The part's files and success, fenced; the last part goes on to the manifest.
async fn record(
    ctx: &ExportContext,
    claim: &Claim,
    rec: &ExportRecord,
    part: &PartPlan,
    produced: Vec<(FileCut, String, Produced)>,
    started: Instant,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let files: Vec<NewFile> = produced
        .iter()
        .map(|(cut, path, p)| NewFile {
            seq: cut.seq,
            path,
            object_key: &p.target.key,
            rows: p.rows as i64,
            bytes: p.written.size as i64,
            sha256: &p.written.sha256,
            partition: (!cut.partition.is_empty()).then(|| {
                serde_json::Value::Object(
                    cut.partition
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().into()))
                        .collect(),
                )
            }),
        })
        .collect();
    let (rows, bytes) = files.iter().fold((0u64, 0u64), |(r, b), f| {
        (r + f.rows as u64, b + f.bytes as u64)
    });
    let keys: Vec<String> = produced
        .iter()
        .map(|(_, _, p)| p.target.key.clone())
        .collect();
    let done = exports::complete_part(&ctx.pool, claim, &files, &ctx.worker_id, ctx.lease).await;
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            // Unrecorded, the files must not stay; the lease lapses and the part is redone.
            delete_all(&*ctx.store, &keys).await;
            return Err(e);
        }
    };
    match done {
        PartDone::Lost => {
            delete_all(&*ctx.store, &keys).await;
            tracing::info!("part's claim lost at completion; its files deleted");
            Ok(Outcome::Cancelled)
        }
        PartDone::Recorded => {
            tracing::info!(part = part.index, rows, bytes, "part completed");
            Ok(Outcome::PartDone)
        }
        PartDone::Last(parent) => {
            tracing::info!(
                part = part.index,
                rows,
                bytes,
                "last part completed; writing the manifest"
            );
            match finish(ctx, &parent, rec, started).await {
                Ok(o) => Ok(o),
                Err(e) => attempt::settle_error(ctx, &parent, rec, e, cancel).await,
            }
        }
    }
}

/// Writes `manifest.json` (every file in manifest order) and completes the export, fenced on
/// the claim of its job.
async fn finish(
    ctx: &ExportContext,
    claim: &Claim,
    rec: &ExportRecord,
    started: Instant,
) -> Result<Outcome> {
    let files = exports::files(&ctx.pool, rec.id).await?;
    let rows: i64 = files.iter().map(|f| f.row_count).sum();
    let bytes: i64 = files.iter().map(|f| f.size_bytes).sum();
    let manifest = serde_json::json!({
        "exportId": rec.id,
        "format": rec.format,
        "compression": rec.compression,
        "rowCount": rows,
        "files": files.iter().map(|f| serde_json::json!({
            "path": f.path,
            "rows": f.row_count,
            "bytes": f.size_bytes,
            "sha256": f.sha256,
            "partition": f.partition.as_ref().map(|p| p.0.clone()),
        })).collect::<Vec<_>>(),
    });
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Unexpected(e.into()))?;
    let key = manifest_key(rec.id);
    let meta = ObjectMeta {
        content_type: "application/json".into(),
        content_disposition: dom::content_disposition("manifest.json"),
    };
    let written = crate::store::write_bytes(&*ctx.store, &key, &meta, body.into())
        .await
        .map_err(Error::Storage)?;
    let completion = Completion {
        row_count: rows,
        size_bytes: bytes,
        sha256: &written.sha256,
        object_key: &key,
        content_type: "application/json",
        file_name: "manifest.json",
        ttl: ctx.export_ttl,
    };
    if !exports::complete(&ctx.pool, claim, &completion).await? {
        tracing::info!("dataset cancelled while its manifest was written");
        remove_files(&ctx.pool, &*ctx.store, rec.id).await;
        return Ok(Outcome::Cancelled);
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(rows, bytes, files = files.len(), "dataset completed");
    Ok(Outcome::Completed {
        rows: rows as u64,
        bytes: bytes as u64,
        seconds,
    })
}

async fn delete_all(store: &dyn ObjectStore, keys: &[String]) {
    for key in keys {
        if let Err(e) = store.delete(key).await {
            tracing::warn!(error = %e, key, "file not deleted; the janitor will");
        }
    }
}

/// Removes every object of an ended dataset (its files and manifest), then records it; a
/// store that fails leaves it to the janitor's next pass. Returns the objects removed.
pub async fn remove_files(pool: &PgPool, store: &dyn ObjectStore, export_id: uuid::Uuid) -> usize {
    let removed = async {
        let keys = store.list(&format!("exports/{export_id}/")).await?;
        for key in &keys {
            store.delete(key).await?;
        }
        Ok::<_, crate::store::StoreError>(keys.len())
    };
    match removed.await {
        Ok(n) => match exports::files_removed(pool, export_id).await {
            Ok(()) => n,
            Err(e) => {
                tracing::warn!(error = %e, %export_id, "dataset's files removed but not recorded");
                n
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, %export_id, "dataset's files not removed; the janitor will");
            0
        }
    }
}
