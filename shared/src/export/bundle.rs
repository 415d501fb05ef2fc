//! A bundle: one ZIP holding each workflow's definition and each run's rows as Parquet, with a
//! manifest of every file and its sha256 (API.md, "Bundles"). The same pipeline as a file
//! export: rows stream out of PostgreSQL by binary COPY, one run after another in one read
//! transaction, an encoding thread writes Parquet into the ZIP stream, and the ZIP stream goes
//! to the object store as it is written. Memory: one Parquet row group and the upload's chunks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::binary::TupleReader;
use super::parquet::ParquetWriter;
use super::sink::ChunkSink;
use super::zipstream::{EntryDone, ZipStream};
use super::{ExportContext, Phases, Produced, Progress, ReadConn, stopped, upload};
use crate::domain::export::{self as dom, Compression, ExportSpec};
use crate::domain::states::ExportScope;
use crate::error::{Error, Result};
use crate::repo::export_query::{OutColumn, Plan};
use crate::repo::exports::{Claim, ExportRecord};
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

enum Msg {
    Begin(usize, usize),
    Rows(Bytes),
    End,
    Done,
}

pub(super) async fn produce(
    ctx: &ExportContext,
    claim: &Claim,
    rec: &ExportRecord,
    progress: &Arc<Progress>,
    started: Instant,
    cancel: &CancellationToken,
    read_conn: &mut ReadConn,
) -> Result<Produced> {
    let project = projects::get(&ctx.pool, rec.project_id)
        .await?
        .ok_or(Error::NotFound("project"))?;
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
    let total: i64 = items
        .iter()
        .flat_map(|i| i.runs.iter().map(|r| r.row_count))
        .sum();
    progress.total.set(total).ok();
    Phases::mark(&progress.phases.counted, started);

    let date = rec.created_at.date_naive();
    let stem = match (rec.scope, items.first()) {
        (ExportScope::Workflow, Some(item)) => item.wf.name.clone(),
        _ => project.slug.clone(),
    };
    let file_name = dom::bundle_file_name(&stem, date);
    let meta = ObjectMeta {
        content_type: dom::BUNDLE_CONTENT_TYPE.to_string(),
        content_disposition: dom::content_disposition(&file_name),
    };
    let key = format!("exports/{}/attempt-{}.wharf.zip", rec.id, claim.attempt);

    let mut conn = match read_conn.take() {
        Some(c) => c,
        None => PgConnection::connect_with(&ctx.pool.connect_options()).await?,
    };
    let mut tx = conn.begin().await?;
    let (msg_tx, msg_rx) = mpsc::channel::<Msg>(8);
    let (piece_tx, piece_rx) = mpsc::channel::<upload::Piece>(4);
    let sink = ChunkSink::new(piece_tx, progress.bytes.clone());
    let items = Arc::new(items);
    let header = Header {
        scope: rec.scope,
        created_at: rec.created_at,
        project: project.slug.clone(),
    };
    let encoder = {
        let (items, progress, span) = (items.clone(), progress.clone(), tracing::Span::current());
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let encoded = encode(&header, &items, sink, msg_rx, &progress);
            Phases::mark(&progress.phases.encode_done, started);
            encoded
        })
    };
    let reader = async {
        let read = read_all(&mut tx, &items, msg_tx, cancel).await;
        Phases::mark(&progress.phases.read_done, started);
        read
    };
    let uploader = async {
        let written = upload::upload(ctx, claim, &key, &meta, piece_rx, cancel).await;
        Phases::mark(&progress.phases.written, started);
        written
    };
    let (read, uploaded) = futures::join!(reader, uploader);
    let clean = if read.is_ok() {
        tx.rollback().await.is_ok()
    } else {
        drop(tx);
        false
    };
    if clean {
        *read_conn = Some(conn);
    }
    let encoded = encoder.await.map_err(|e| Error::Unexpected(e.into()))?;
    super::settle_pipeline(
        ctx, claim, key, file_name, meta, read, encoded, uploaded, cancel,
    )
    .await
}

/// Every run's rows, in order, each run framed by `Begin` and `End`.
async fn read_all(
    conn: &mut PgConnection,
    items: &[Item],
    tx: mpsc::Sender<Msg>,
    cancel: &CancellationToken,
) -> Result<()> {
    let send = |m: Msg| {
        let tx = tx.clone();
        async move { tx.send(m).await.map_err(|_| stopped()) }
    };
    for (w, item) in items.iter().enumerate() {
        for (r, plan) in item.plans.iter().enumerate() {
            plan.apply(&mut *conn).await?;
            send(Msg::Begin(w, r)).await?;
            let mut stream = conn.copy_out_raw(&plan.copy_sql()).await?;
            let mut batch = BytesMut::with_capacity(512 * 1024);
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return Err(stopped()),
                    next = stream.next() => next,
                };
                let Some(chunk) = next else { break };
                batch.extend_from_slice(&chunk?);
                if batch.len() >= 256 * 1024 {
                    send(Msg::Rows(batch.split().freeze())).await?;
                }
            }
            drop(stream);
            send(Msg::Rows(batch.freeze())).await?;
            send(Msg::End).await?;
        }
    }
    send(Msg::Done).await
}

/// The run being written: its workflow and run index, its Parquet writer (which owns the ZIP
/// stream until the run ends), its COPY decoder and its rows so far.
type Open = (
    usize,
    usize,
    ParquetWriter<ZipStream<ChunkSink>>,
    TupleReader,
    u64,
);

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
    mut rx: mpsc::Receiver<Msg>,
    progress: &Progress,
) -> Result<(u64, u64)> {
    let mut zip = Some(ZipStream::new(sink, header.created_at));
    let mut definitions: Vec<EntryDone> = Vec::with_capacity(items.len());
    for item in items {
        let wf = &item.wf;
        let definition = json!({
            "id": wf.id,
            "name": wf.name,
            "schema": wf.fields,
            "createdAt": bundle_time(wf.created_at),
        });
        let bytes =
            serde_json::to_vec_pretty(&definition).map_err(|e| Error::Unexpected(e.into()))?;
        let z = zip.as_mut().ok_or_else(stopped)?;
        definitions.push(z.put(&definition_path(wf.id), &bytes).map_err(io)?);
    }
    let mut files: Vec<Vec<(EntryDone, u64)>> = items.iter().map(|_| Vec::new()).collect();
    let mut writer: Option<Open> = None;
    let mut fields = Vec::new();
    let mut rows = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(Msg::Begin(w, r)) => {
                let mut z = zip.take().ok_or_else(stopped)?;
                let item = &items[w];
                z.begin(&run_path(item.wf.id, item.runs[r].id))
                    .map_err(io)?;
                let pw = ParquetWriter::new(z, &item.plan_columns, Compression::Zstd)?;
                writer = Some((w, r, pw, TupleReader::new(), 0));
            }
            Some(Msg::Rows(bytes)) => {
                let (_, _, pw, reader, n) = writer.as_mut().ok_or_else(stopped)?;
                reader.push(&bytes);
                let got = reader.drain(&mut fields, |buf, f| pw.row(buf, f))?;
                *n += got;
                rows += got;
                progress.rows.store(rows, Ordering::Relaxed);
            }
            Some(Msg::End) => {
                let (w, r, pw, reader, n) = writer.take().ok_or_else(stopped)?;
                if !reader.finished {
                    return Err(stopped());
                }
                if i64::try_from(n).ok() != Some(items[w].runs[r].row_count) {
                    return Err(Error::Unexpected(anyhow::anyhow!(
                        "run {} holds {n} rows, its record says {}",
                        items[w].runs[r].id,
                        items[w].runs[r].row_count
                    )));
                }
                let mut z = pw.close()?;
                files[w].push((z.end().map_err(io)?, n));
                zip = Some(z);
            }
            Some(Msg::Done) => break,
            None => return Err(stopped()),
        }
    }
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
    let manifest = json!({
        "format": "wharf-bundle",
        "version": BUNDLE_VERSION,
        "scope": header.scope.as_str(),
        "createdAt": bundle_time(header.created_at),
        "source": {"project": header.project},
        "workflows": workflows,
    });
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Unexpected(e.into()))?;
    let mut z = zip.take().ok_or_else(stopped)?;
    z.put(MANIFEST, &bytes).map_err(io)?;
    let sink = z.finish().map_err(io)?;
    Ok((sink.finish().map_err(io)?, rows))
}
