//! A bundle: one ZIP holding each workflow's definition and each run's rows as Parquet, with a
//! manifest of every file and its sha256 (API.md, "Bundles"). The same pipeline as a file
//! export: rows stream out of PostgreSQL by binary COPY, one run after another in one read
//! transaction, an encoding thread writes Parquet into the ZIP stream, and the ZIP stream goes
//! to the object store as it is written. Memory: one Parquet row group and the upload's chunks.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::formats::ParquetWriter;
use super::pipeline::{self, Attempt, Encode, Feed, Feeder, Produced, Source, Target};
use super::sink::ChunkSink;
use super::zipstream::{EntryDone, ZipStream};
use super::{ExportContext, Progress, ReadConn, stopped};
use crate::domain::export::{self as dom, Compression, ExportSpec};
use crate::domain::states::ExportScope;
use crate::error::{Error, Result};
use crate::repo::export_query::{OutColumn, Plan};
use crate::repo::exports::ExportRecord;
use crate::repo::projects;
use crate::repo::runs::{self, Run};
use crate::repo::workflows::{self, Workflow};
use crate::store::ObjectMeta;

/// The bundle format's major version: an importer refuses any other.
pub const BUNDLE_VERSION: u64 = 1;
pub const MANIFEST: &str = "manifest.json";

/// Times in bundles keep every microsecond, so an imported run's executedAt is the original's.
pub fn bundle_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn definition_path(workflow_id: uuid::Uuid) -> String {
    format!("workflows/{workflow_id}/workflow.json")
}

pub fn run_path(workflow_id: uuid::Uuid, run_id: uuid::Uuid) -> String {
    format!("workflows/{workflow_id}/runs/{run_id}.parquet")
}

struct Item {
    wf: Workflow,
    plan_columns: Vec<OutColumn>,
    plans: Vec<Plan>,
    runs: Vec<Run>,
}

/// Every run of every item, one COPY a run, in one read transaction (so the bundle is one
/// snapshot of the project).
struct BundleSource {
    items: Arc<Vec<Item>>,
    total: i64,
}

#[async_trait]
impl Source for BundleSource {
    async fn open(&mut self, conn: &mut PgConnection) -> Result<i64> {
        sqlx::Executor::execute(&mut *conn, "BEGIN").await?;
        Ok(self.total)
    }

    async fn read(&self, conn: &mut PgConnection, feed: &Feeder<'_>) -> Result<()> {
        let mut part = 0;
        for item in self.items.iter() {
            for plan in &item.plans {
                plan.apply(&mut *conn).await?;
                feed.copy_part(conn, &plan.copy_sql(), part).await?;
                part += 1;
            }
        }
        Ok(())
    }

    async fn close(&self, conn: &mut PgConnection) -> Result<()> {
        sqlx::Executor::execute(&mut *conn, "ROLLBACK").await?;
        Ok(())
    }
}

pub(super) async fn produce(
    at: &Attempt<'_>,
    rec: &ExportRecord,
    read_conn: &mut ReadConn,
) -> Result<Produced> {
    let ctx = at.ctx;
    let project = projects::get(&ctx.pool, rec.project_id)
        .await?
        .ok_or(Error::NotFound("project"))?;
    let items = items(ctx, rec).await?;
    let total: i64 = items
        .iter()
        .flat_map(|i| i.runs.iter().map(|r| r.row_count))
        .sum();
    let date = rec.created_at.date_naive();
    let stem = match (rec.scope, items.first()) {
        (ExportScope::Workflow, Some(item)) => item.wf.name.clone(),
        _ => project.slug.clone(),
    };
    let file_name = dom::bundle_file_name(&stem, date);
    let target = Target {
        key: format!("exports/{}/attempt-{}.wharf.zip", rec.id, at.claim.attempt),
        meta: ObjectMeta {
            content_type: dom::BUNDLE_CONTENT_TYPE.to_string(),
            content_disposition: dom::content_disposition(&file_name),
        },
        file_name,
    };
    let items = Arc::new(items);
    let header = Header {
        scope: rec.scope,
        created_at: rec.created_at,
        project: project.slug.clone(),
    };
    let mut source = BundleSource {
        items: items.clone(),
        total,
    };
    let encode: Encode =
        Box::new(move |sink, rx, progress| encode(&header, &items, sink, rx, progress));
    pipeline::run(at, read_conn, &mut source, target, encode).await
}

/// The workflows the bundle holds, each with its runs and their plans.
async fn items(ctx: &ExportContext, rec: &ExportRecord) -> Result<Vec<Item>> {
    let wfs = match (rec.scope, rec.workflow_id) {
        (ExportScope::Workflow, Some(id)) => vec![
            workflows::get(&ctx.pool, rec.project_id, id)
                .await?
                .ok_or(Error::NotFound("workflow"))?,
        ],
        (ExportScope::Schema | ExportScope::Database, _) => {
            workflows::all_of_project(&ctx.pool, rec.project_id).await?
        }
        _ => return Err(Error::invalid("this export is not a bundle")),
    };
    let mut items = Vec::with_capacity(wfs.len());
    for wf in wfs {
        let runs = if rec.scope.has_data() {
            runs::all_of_workflow(&ctx.pool, wf.id).await?
        } else {
            Vec::new()
        };
        let spec = ExportSpec::bundle_runs().with_all_columns(&wf.fields);
        let plans = runs
            .iter()
            .map(|r| Plan::new(&wf, r.id, &spec))
            .collect::<Result<Vec<_>>>()?;
        let plan_columns = match plans.first() {
            Some(p) => p.columns.clone(),
            None => Vec::new(),
        };
        items.push(Item {
            wf,
            plan_columns,
            plans,
            runs,
        });
    }
    Ok(items)
}

struct Header {
    scope: ExportScope,
    created_at: DateTime<Utc>,
    project: String,
}

fn io(e: std::io::Error) -> Error {
    Error::Unexpected(e.into())
}

fn encode(
    header: &Header,
    items: &[Item],
    sink: ChunkSink,
    rx: &mut Feed,
    progress: &Progress,
) -> Result<(u64, u64)> {
    let mut zip = Some(ZipStream::new(sink, header.created_at));
    let mut definitions: Vec<EntryDone> = Vec::with_capacity(items.len());
    for item in items {
        let bytes = serde_json::to_vec_pretty(&definition(&item.wf))
            .map_err(|e| Error::Unexpected(e.into()))?;
        let z = zip.as_mut().ok_or_else(stopped)?;
        definitions.push(z.put(&definition_path(item.wf.id), &bytes).map_err(io)?);
    }
    let mut files: Vec<Vec<(EntryDone, u64)>> = items.iter().map(|_| Vec::new()).collect();
    // Parts arrive in the order of `items` and their runs.
    let order: Vec<(usize, usize)> = items
        .iter()
        .enumerate()
        .flat_map(|(w, item)| (0..item.runs.len()).map(move |r| (w, r)))
        .collect();
    let mut rows = 0u64;
    while let Some(part) = pipeline::next_part(rx)? {
        let &(w, r) = order.get(part).ok_or_else(stopped)?;
        let z = zip.take().ok_or_else(stopped)?;
        let (z, entry, n) = run_entry(z, &items[w], r, rx, progress, rows)?;
        rows += n;
        files[w].push((entry, n));
        zip = Some(z);
    }
    let bytes = serde_json::to_vec_pretty(&manifest(header, items, definitions, files))
        .map_err(|e| Error::Unexpected(e.into()))?;
    let mut z = zip.take().ok_or_else(stopped)?;
    z.put(MANIFEST, &bytes).map_err(io)?;
    let sink = z.finish().map_err(io)?;
    Ok((sink.finish().map_err(io)?, rows))
}

fn definition(wf: &Workflow) -> serde_json::Value {
    json!({
        "id": wf.id,
        "name": wf.name,
        "schema": wf.fields,
        "createdAt": bundle_time(wf.created_at),
    })
}

/// One run's rows as a Parquet entry of the ZIP: the entry and its row count (which must be
/// the run's own).
fn run_entry(
    mut z: ZipStream<ChunkSink>,
    item: &Item,
    r: usize,
    rx: &mut Feed,
    progress: &Progress,
    rows_before: u64,
) -> Result<(ZipStream<ChunkSink>, EntryDone, u64)> {
    let run = &item.runs[r];
    z.begin(&run_path(item.wf.id, run.id)).map_err(io)?;
    let mut pw = ParquetWriter::new(z, &item.plan_columns, Compression::Zstd)?;
    let n = pipeline::decode_part(rx, progress, rows_before, |buf, f| pw.row(buf, f))?;
    if i64::try_from(n).ok() != Some(run.row_count) {
        return Err(Error::Unexpected(anyhow::anyhow!(
            "run {} holds {n} rows, its record says {}",
            run.id,
            run.row_count
        )));
    }
    let mut z = pw.close()?;
    let entry = z.end().map_err(io)?;
    Ok((z, entry, n))
}

/// `manifest.json`: every workflow's definition and runs, with their entries' sha256 and size.
fn manifest(
    header: &Header,
    items: &[Item],
    definitions: Vec<EntryDone>,
    files: Vec<Vec<(EntryDone, u64)>>,
) -> serde_json::Value {
    let workflows: Vec<serde_json::Value> = items
        .iter()
        .zip(definitions)
        .zip(files)
        .map(|((item, def), files)| {
            let runs: Vec<serde_json::Value> = item
                .runs
                .iter()
                .zip(files)
                .map(|(run, (file, n))| {
                    json!({
                        "runId": run.id,
                        "executedAt": bundle_time(run.executed_at),
                        "rowCount": n,
                        "file": run_path(item.wf.id, run.id),
                        "sha256": file.sha256,
                        "bytes": file.bytes,
                    })
                })
                .collect();
            json!({
                "id": item.wf.id,
                "name": item.wf.name,
                "definition": definition_path(item.wf.id),
                "definitionSha256": def.sha256,
                "definitionBytes": def.bytes,
                "runs": runs,
            })
        })
        .collect();
    json!({
        "format": "wharf-bundle",
        "version": BUNDLE_VERSION,
        "scope": header.scope.as_str(),
        "createdAt": bundle_time(header.created_at),
        "source": {"project": header.project},
        "workflows": workflows,
    })
}
