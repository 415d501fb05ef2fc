//! One export, end to end: claim → read rows with COPY → encode on a blocking thread → write
//! the file to the object store as a stream → complete, fenced on the claim. A lost claim or a
//! cancel discards the write, so no one can ever download a partial object.

mod binary;
pub mod bundle;
mod csv;
pub mod import;
pub mod page;
mod parquet;
pub mod scratch;
mod sink;
mod text;
pub mod upload;
pub mod zipstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::export::{self as dom, ExportSpec, Format};
use crate::domain::states::{FailureCode, JobKind};
use crate::error::{Error, Result};
use crate::repo::export_query::Plan;
use crate::repo::exports::{self, Claim, Completion, ExportRecord};
use crate::store::{ObjectMeta, ObjectStore, Written};
pub use parquet::arrow_schema;
use sink::{ChunkSink, Output};

/// What a worker needs to run exports.
#[derive(Clone)]
pub struct ExportContext {
    pub pool: PgPool,
    pub store: Arc<dyn ObjectStore>,
    pub worker_id: String,
    pub export_ttl: Duration,
    /// How long a claim lives without a heartbeat.
    pub lease: Duration,
    /// Heartbeat and progress interval.
    pub heartbeat: Duration,
    /// Exports of one project running at once, across all workers.
    pub project_cap: i64,
    /// Fired when the process must give its running exports back (shutdown grace is over).
    pub stop: CancellationToken,
    /// This process's metrics: finished exports, durations, rows, bytes, pickup latency.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `WHARF_IMPORT_SCRATCH`: the disk this process's imports may fill at once.
    pub scratch: scratch::ScratchBudget,
}

#[derive(Debug)]
pub enum Outcome {
    Completed {
        rows: u64,
        bytes: u64,
        seconds: f64,
    },
    Cancelled,
    Failed {
        code: FailureCode,
    },
    /// Given back: QUEUED again, due after `after` (0: enqueue it again now).
    Released {
        after: Duration,
    },
    /// Nothing to claim: no export is QUEUED below its project's cap.
    Skipped,
}

#[derive(Default)]
struct Progress {
    rows: AtomicU64,
    /// Bytes of the file so far, as the sink counts them.
    bytes: Arc<AtomicU64>,
    /// The rows the export will hold, once counted; the heartbeat records it.
    total: std::sync::OnceLock<i64>,
    phases: Phases,
}

/// The first heartbeat comes this soon after the claim, so a poll sees the row total (and the
/// progress against it) within a quarter second, while an export done sooner than that never
/// spends a statement on it; later beats follow the lease's interval.
const FIRST_BEAT: Duration = Duration::from_millis(250);

/// Where an attempt's time went: the moments (microseconds since its claim) it counted the rows,
/// got its first rows, read its last, finished encoding and finished writing; and
/// `encode_busy`, the time the encoding thread spent not waiting for rows (which includes
/// waiting for the upload to take its chunks). Logged with the completion; wharf-bench reads it.
#[derive(Default)]
struct Phases {
    counted: AtomicU64,
    first_rows: AtomicU64,
    read_done: AtomicU64,
    encode_busy: AtomicU64,
    encode_done: AtomicU64,
    written: AtomicU64,
}

impl Phases {
    fn mark(at: &AtomicU64, since: Instant) {
        at.store(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    fn ms(at: &AtomicU64) -> f64 {
        at.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// A connection of the caller's own (a worker slot's) that reads exports' rows, kept between
/// exports: opening one costs PostgreSQL a backend, milliseconds a small export would spend
/// on nothing. It is not the pool's, so a slot never waits for the pool (nor the pool, which
/// heartbeats need, for a slot), and one whose COPY did not run to its end is closed, not
/// kept: that is what stops the COPY at once on a cancel.
pub type ReadConn = Option<PgConnection>;

/// Runs one export job if it can be claimed.
pub async fn run(ctx: &ExportContext, read_conn: &mut ReadConn) -> Result<Outcome> {
    let Some(claimed) =
        exports::claim_next(&ctx.pool, &ctx.worker_id, ctx.lease, ctx.project_cap).await?
    else {
        return Ok(Outcome::Skipped);
    };
    let (claim, rec) = (claimed.claim, &claimed.rec);
    let export_id = claim.export_id;
    if claim.attempt == 1 {
        let waited = (chrono::Utc::now() - rec.created_at)
            .num_microseconds()
            .unwrap_or(0);
        ctx.metrics.pickup.observe(waited.max(0) as f64 / 1e6);
    }
    let outcome = if rec.kind == JobKind::Import {
        let span = tracing::info_span!("import", import_id = %export_id, request_id = rec.request_id.as_deref().unwrap_or(""),
            attempt = claim.attempt);
        tracing::Instrument::instrument(import::run(ctx, claim, rec), span).await
    } else {
        run_export(ctx, &claimed, read_conn).await
    };
    let label = if rec.kind == JobKind::Import {
        "import"
    } else {
        rec.format.as_str()
    };
    match &outcome {
        Ok(Outcome::Completed {
            rows,
            bytes,
            seconds,
        }) => ctx.metrics.completed(label, *rows, *bytes, *seconds),
        Ok(Outcome::Failed { .. }) => ctx.metrics.finished(label, "failed"),
        Ok(Outcome::Cancelled) => ctx.metrics.finished(label, "cancelled"),
        _ => {}
    }
    outcome
}

async fn run_export(
    ctx: &ExportContext,
    claimed: &exports::Claimed,
    read_conn: &mut ReadConn,
) -> Result<Outcome> {
    let (claim, rec) = (claimed.claim, &claimed.rec);
    let export_id = claim.export_id;
    let span = tracing::info_span!("export", export_id = %export_id, request_id = rec.request_id.as_deref().unwrap_or(""),
        attempt = claim.attempt, format = %rec.format, scope = rec.scope.as_str());
    span.in_scope(|| tracing::info!("export claimed"));
    let started = Instant::now();
    let cancel = ctx.stop.child_token();
    let progress = Arc::new(Progress::default());
    let beat = tokio::spawn(heartbeat(
        ctx.clone(),
        claim,
        progress.clone(),
        cancel.clone(),
    ));
    let produced = tracing::Instrument::instrument(
        produce(ctx, claimed, &progress, started, &cancel, read_conn),
        span.clone(),
    )
    .await;
    beat.abort();
    tracing::Instrument::instrument(
        settle(ctx, &claim, rec, produced, started, &progress, &cancel),
        span,
    )
    .await
}

/// Records how the attempt ended: completed (fenced), released, cancelled, or failed.
async fn settle(
    ctx: &ExportContext,
    claim: &Claim,
    rec: &ExportRecord,
    produced: Result<Produced>,
    started: Instant,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let claim = *claim;
    match produced {
        Ok(done) => {
            let completion = Completion {
                row_count: done.rows as i64,
                size_bytes: done.written.size as i64,
                sha256: &done.written.sha256,
                object_key: &done.key,
                content_type: &done.meta.content_type,
                file_name: &done.file_name,
                ttl: ctx.export_ttl,
            };
            let completed = match exports::complete(&ctx.pool, &claim, &completion).await {
                Ok(done) => done,
                Err(e) => {
                    // Unrecorded, the object must not stay; the lease lapses and it is retried.
                    ctx.store.delete(&done.key).await.ok();
                    return Err(e);
                }
            };
            if completed {
                let seconds = started.elapsed().as_secs_f64();
                let p = &progress.phases;
                tracing::info!(
                    rows = done.rows,
                    bytes = done.written.size,
                    seconds,
                    counted_ms = Phases::ms(&p.counted),
                    first_rows_ms = Phases::ms(&p.first_rows),
                    read_done_ms = Phases::ms(&p.read_done),
                    encode_busy_ms = Phases::ms(&p.encode_busy),
                    encode_done_ms = Phases::ms(&p.encode_done),
                    written_ms = Phases::ms(&p.written),
                    "export completed"
                );
                Ok(Outcome::Completed {
                    rows: done.rows,
                    bytes: done.written.size,
                    seconds,
                })
            } else {
                // Cancelled or taken over while finishing: the object must not outlive the claim.
                ctx.store.delete(&done.key).await?;
                tracing::info!("claim lost at completion; object deleted");
                Ok(Outcome::Cancelled)
            }
        }
        Err(e) => settle_error(ctx, &claim, rec, e, cancel).await,
    }
}

/// How a failed attempt ends: released (the worker is stopping, or a transient failure with
/// attempts left), cancelled (the claim was lost), or FAILED with its code.
async fn settle_error(
    ctx: &ExportContext,
    claim: &Claim,
    rec: &ExportRecord,
    e: Error,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    match e {
        _ if ctx.stop.is_cancelled() => {
            exports::release(&ctx.pool, claim, Duration::ZERO).await?;
            tracing::info!("worker stopping: job released to another worker");
            Ok(Outcome::Released {
                after: Duration::ZERO,
            })
        }
        _ if cancel.is_cancelled() => {
            tracing::info!("job stopped: cancelled or claim lost");
            Ok(Outcome::Cancelled)
        }
        e if is_transient(&e) && exports::has_attempts_left(claim, rec.max_attempts) => {
            let after = backoff(claim.attempt);
            tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "attempt failed; will retry");
            exports::release(&ctx.pool, claim, after).await?;
            Ok(Outcome::Released { after })
        }
        e => {
            let (code, message) = failure(&e);
            tracing::warn!(code = %code, error = %e, "job failed");
            exports::fail(&ctx.pool, claim, code, &message).await?;
            Ok(Outcome::Failed { code })
        }
    }
}

/// Worth another attempt: a backing service failed, not the request.
fn is_transient(e: &Error) -> bool {
    matches!(e.code(), crate::error::ErrorCode::ServiceUnavailable)
        || matches!(e, Error::Storage(s) if s.is_unavailable())
        || matches!(
            e,
            Error::Database(sqlx::Error::Io(_) | sqlx::Error::Protocol(_))
        )
}

/// Exponential backoff with ±25 % jitter: 1 s, 2 s, 4 s … capped at 30 s.
fn backoff(attempt: i32) -> Duration {
    use rand::Rng;
    let base = 1000u64 << attempt.clamp(1, 6).saturating_sub(1);
    let ms = base.min(30_000) as f64 * rand::rng().random_range(0.75..1.25);
    Duration::from_millis(ms as u64)
}

/// The stable code and a message a user can act on; internals stay in the logs.
fn failure(e: &Error) -> (FailureCode, String) {
    match e {
        Error::Invalid(m) => (FailureCode::InvalidRequest, m.clone()),
        Error::Refused { code, message } => (*code, message.clone()),
        Error::NotFound(what) => (FailureCode::NotFound, format!("{what} no longer exists")),
        Error::Storage(_) => (
            FailureCode::StorageError,
            "the object store failed; create the export again".into(),
        ),
        Error::Database(_) | Error::Unavailable(_) => (
            FailureCode::ServiceUnavailable,
            "a backing service was unavailable; create the export again".into(),
        ),
        _ => (
            FailureCode::Internal,
            "the export failed unexpectedly".into(),
        ),
    }
}

async fn heartbeat(
    ctx: ExportContext,
    claim: Claim,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + FIRST_BEAT.min(ctx.heartbeat),
        ctx.heartbeat,
    );
    loop {
        tick.tick().await;
        let beat = exports::Beat {
            rows: progress.rows.load(Ordering::Relaxed) as i64,
            bytes: progress.bytes.load(Ordering::Relaxed) as i64,
            total: progress.total.get().copied(),
        };
        match exports::heartbeat(&ctx.pool, &claim, &beat, ctx.lease).await {
            Ok(true) => {}
            Ok(false) => {
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
        }
    }
}

struct Produced {
    key: String,
    file_name: String,
    meta: ObjectMeta,
    written: Written,
    rows: u64,
}

/// A batch of COPY data; `None` marks the end of a complete read.
type Chunk = Option<Bytes>;

async fn produce(
    ctx: &ExportContext,
    claimed: &exports::Claimed,
    progress: &Arc<Progress>,
    started: Instant,
    cancel: &CancellationToken,
    read_conn: &mut ReadConn,
) -> Result<Produced> {
    let (claim, rec) = (&claimed.claim, &claimed.rec);
    if rec.is_bundle() {
        return bundle::produce(ctx, claim, rec, progress, started, cancel, read_conn).await;
    }
    // Read with the claim; None: the workflow was deleted since the export was asked for.
    let wf = claimed
        .workflow
        .as_ref()
        .ok_or(Error::NotFound("workflow"))?;
    let run_id = rec.run_id.ok_or(Error::NotFound("run"))?;
    let spec: &ExportSpec = &rec.params.0;
    let plan = Plan::new(wf, run_id, spec)?;
    let date = rec.created_at.date_naive();
    let file_name = dom::file_name(&wf.name, date, spec.format, spec.compression);
    let meta = ObjectMeta {
        content_type: dom::content_type(spec.format, spec.compression).to_string(),
        content_disposition: dom::content_disposition(&file_name),
    };
    let ext = file_name
        .rsplit_once(&format!("-{date}"))
        .map_or("", |(_, e)| e)
        .to_string();
    let key = format!("exports/{}/attempt-{}{ext}", rec.id, claim.attempt);

    let mut conn = match read_conn.take() {
        Some(c) => c,
        None => PgConnection::connect_with(&ctx.pool.connect_options()).await?,
    };
    let whole_run_rows = rec.run_row_count.filter(|_| plan.is_whole_run());
    let open = plan.open_read(&mut conn, whole_run_rows).await?;
    let total = open.total;
    progress.total.set(total).ok();
    Phases::mark(&progress.phases.counted, started);

    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(8);
    let (piece_tx, piece_rx) = mpsc::channel::<upload::Piece>(4);
    let sink = ChunkSink::new(piece_tx, progress.bytes.clone());
    let encoder = spawn_encoder(
        spec.clone(),
        plan.columns.clone(),
        sink,
        chunk_rx,
        progress.clone(),
        started,
    );
    let reader = async {
        let read = read_rows(
            &mut conn,
            &plan,
            chunk_tx,
            cancel,
            &progress.phases,
            started,
        )
        .await;
        Phases::mark(&progress.phases.read_done, started);
        read
    };
    let uploader = async {
        let written = upload::upload(ctx, claim, &key, &meta, piece_rx, cancel).await;
        Phases::mark(&progress.phases.written, started);
        written
    };
    let (read, uploaded) = futures::join!(reader, uploader);
    // The slot keeps its connection only when the read ran to its end (and, in a
    // transaction, ended it): an interrupted COPY is stopped by closing it.
    let clean = read.is_ok() && open.close(&mut conn).await.is_ok();
    if clean {
        *read_conn = Some(conn);
    }
    let encoded = encoder.await.map_err(|e| Error::Unexpected(e.into()))?;
    settle_pipeline(
        ctx, claim, key, file_name, meta, read, encoded, uploaded, cancel,
    )
    .await
}

/// The verdict on an attempt's three stages (read, encode, write): the stored file when all
/// three succeeded and agree on its size; else the object is discarded and the root cause told.
#[allow(clippy::too_many_arguments)]
async fn settle_pipeline(
    ctx: &ExportContext,
    claim: &Claim,
    key: String,
    file_name: String,
    meta: ObjectMeta,
    read: Result<()>,
    encoded: Result<(u64, u64)>,
    uploaded: Result<Written>,
    cancel: &CancellationToken,
) -> Result<Produced> {
    match (read, encoded, uploaded) {
        (Ok(()), Ok((size, rows)), Ok(written)) if size == written.size => {
            if cancel.is_cancelled() {
                upload::discard_bounded(ctx, claim, &key, None).await;
                return Err(stopped());
            }
            Ok(Produced {
                key,
                file_name,
                meta,
                written,
                rows,
            })
        }
        (Ok(()), Ok((size, _)), Ok(written)) => {
            upload::discard_bounded(ctx, claim, &key, None).await;
            Err(Error::Unexpected(anyhow::anyhow!(
                "the store kept {} bytes of a {size}-byte file",
                written.size
            )))
        }
        // The root cause, not its echo: when one stage fails the others see a closed channel.
        (read, encoded, Err(e)) => Err(root_cause(e, read.err(), encoded.err())),
        (read, encoded, Ok(_)) => {
            // Unreachable in practice (the write completes only after the encoder's end
            // marker), but a stored object of a failed attempt must not stay.
            upload::discard_bounded(ctx, claim, &key, None).await;
            Err(match (read, encoded) {
                (Err(r), Err(enc)) if is_stopped(&r) => enc,
                (Err(r), _) => r,
                (Ok(()), Err(enc)) => enc,
                (Ok(()), Ok(_)) => stopped(),
            })
        }
    }
}

/// A stage ended because another one did: never the cause worth reporting.
#[derive(Debug, thiserror::Error)]
#[error("export pipeline stopped")]
struct Stopped;

fn stopped() -> Error {
    Error::Unexpected(anyhow::Error::new(Stopped))
}

fn is_stopped(e: &Error) -> bool {
    matches!(e, Error::Unexpected(a) if a.downcast_ref::<Stopped>().is_some())
}

fn root_cause(upload: Error, read: Option<Error>, encode: Option<Error>) -> Error {
    if !is_stopped(&upload) {
        return upload;
    }
    read.filter(|e| !is_stopped(e)).or(encode).unwrap_or(upload)
}

/// Streams the binary COPY output to the encoder in ~256 KiB batches.
async fn read_rows(
    conn: &mut PgConnection,
    plan: &Plan,
    tx: mpsc::Sender<Chunk>,
    cancel: &CancellationToken,
    phases: &Phases,
    started: Instant,
) -> Result<()> {
    let mut stream = conn.copy_out_raw(&plan.copy_sql()).await?;
    Phases::mark(&phases.first_rows, started);
    let mut batch = BytesMut::with_capacity(512 * 1024);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(stopped()),
            next = stream.next() => next,
        };
        let Some(item) = next else { break };
        batch.extend_from_slice(&item?);
        if batch.len() >= 256 * 1024 {
            tx.send(Some(batch.split().freeze()))
                .await
                .map_err(|_| stopped())?;
        }
    }
    tx.send(Some(batch.freeze())).await.map_err(|_| stopped())?;
    tx.send(None).await.map_err(|_| stopped())
}

fn spawn_encoder(
    spec: ExportSpec,
    columns: Vec<crate::repo::export_query::OutColumn>,
    sink: ChunkSink,
    mut rx: mpsc::Receiver<Chunk>,
    progress: Arc<Progress>,
    started: Instant,
) -> tokio::task::JoinHandle<Result<(u64, u64)>> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        let encoded = encode(spec, &columns, sink, &mut rx, &progress);
        Phases::mark(&progress.phases.encode_done, started);
        encoded
    })
}

fn encode(
    spec: ExportSpec,
    columns: &[crate::repo::export_query::OutColumn],
    sink: ChunkSink,
    rx: &mut mpsc::Receiver<Chunk>,
    progress: &Progress,
) -> Result<(u64, u64)> {
    let gzip = spec.compression == dom::Compression::Gzip;
    match spec.format {
        Format::Csv => {
            let mut w = csv::CsvWriter::new(Output::new(sink, gzip), columns)?;
            let rows = decode(rx, progress, |buf, f| w.row(buf, f))?;
            Ok((w.finish()?, rows))
        }
        Format::Json | Format::Ndjson => {
            let out = Output::new(sink, gzip);
            let mut w = text::JsonWriter::new(out, columns, spec.format == Format::Json);
            let rows = decode(rx, progress, |buf, f| w.row(buf, f))?;
            Ok((w.finish()?, rows))
        }
        Format::Parquet => {
            let mut w = parquet::ParquetWriter::new(sink, columns, spec.compression)?;
            let rows = decode(rx, progress, |buf, f| w.row(buf, f))?;
            Ok((w.finish()?, rows))
        }
    }
}

/// Feeds binary COPY tuples to `row`; errors if the stream did not end cleanly.
fn decode(
    rx: &mut mpsc::Receiver<Chunk>,
    progress: &Progress,
    mut row: impl FnMut(&[u8], &[Option<(usize, usize)>]) -> Result<()>,
) -> Result<u64> {
    let mut reader = binary::TupleReader::new();
    let mut fields = Vec::new();
    let mut rows = 0;
    let mut busy = Duration::ZERO;
    loop {
        match rx.blocking_recv() {
            Some(Some(bytes)) => {
                let t = Instant::now();
                reader.push(&bytes);
                rows += reader.drain(&mut fields, &mut row)?;
                progress.rows.store(rows, Ordering::Relaxed);
                busy += t.elapsed();
                progress
                    .phases
                    .encode_busy
                    .store(busy.as_micros() as u64, Ordering::Relaxed);
            }
            Some(None) if reader.finished => return Ok(rows),
            _ => return Err(stopped()),
        }
    }
}
