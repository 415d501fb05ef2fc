//! One export, end to end: claim → read rows with COPY → encode on a blocking thread → write
//! the file to the object store as a stream → complete, fenced on the claim. A lost claim or a
//! cancel discards the write, so no one can ever download a partial object.

mod attempt;
mod binary;
pub mod bundle;
pub mod dataset;
mod file;
pub mod formats;
pub mod import;
pub mod page;
mod pipeline;
pub mod scratch;
mod sink;
pub mod upload;
pub mod zipstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::domain::states::FailureCode;
use crate::error::{Error, Result};
use crate::jobs::{Job, JobError, Kind};
use crate::repo::exports::{self, Claim, Claimed, Completion, ExportRecord};
use crate::store::ObjectStore;
pub use formats::arrow_schema;
use pipeline::{Attempt, Produced};

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
    /// `WHARF_AUDIT_TTL`: the janitor removes audit events older than this.
    pub audit_ttl: Duration,
    /// `WHARF_READ_DATABASE_URL`: the streaming replica reads of runs go to once it has
    /// replayed them.
    pub replica: Option<Replica>,
}

/// A streaming replica of the primary (`WHARF_READ_DATABASE_URL`, `WHARF_REPLICA_WAIT`).
#[derive(Clone)]
pub struct Replica {
    pub options: sqlx::postgres::PgConnectOptions,
    pub wait: Duration,
}

impl Replica {
    /// The replica the settings name, if any; a URL that does not parse is named.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Option<Replica>> {
        use secrecy::ExposeSecret;
        let Some(url) = &settings.read_database_url else {
            return Ok(None);
        };
        let options = url.expose_secret().parse().map_err(|e| {
            Error::Unexpected(anyhow::anyhow!(
                "WHARF_READ_DATABASE_URL is not a PostgreSQL URL: {e}"
            ))
        })?;
        Ok(Some(Replica {
            options,
            wait: settings.replica_wait,
        }))
    }
}

/// Which server a read of rows runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Primary,
    Replica,
}

impl Server {
    pub fn as_str(self) -> &'static str {
        match self {
            Server::Primary => "primary",
            Server::Replica => "replica",
        }
    }
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
        job: uuid::Uuid,
        after: Duration,
    },
    /// Nothing to claim: no export is QUEUED below its project's cap.
    Skipped,
    /// A dataset was cut into these part jobs, QUEUED now (to push to the queue).
    Planned {
        jobs: Vec<uuid::Uuid>,
    },
    /// A part of a dataset wrote its files; other parts are still to finish.
    PartDone,
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
    /// The completion's log line, with when each phase ended (ms since the claim).
    fn log_completed(&self, rows: u64, bytes: u64, seconds: f64) {
        tracing::info!(
            rows,
            bytes,
            seconds,
            counted_ms = Phases::ms(&self.counted),
            first_rows_ms = Phases::ms(&self.first_rows),
            read_done_ms = Phases::ms(&self.read_done),
            encode_busy_ms = Phases::ms(&self.encode_busy),
            encode_done_ms = Phases::ms(&self.encode_done),
            written_ms = Phases::ms(&self.written),
            "export completed"
        );
    }

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
#[derive(Default)]
pub struct ReadConn {
    primary: Option<PgConnection>,
    replica: Option<PgConnection>,
}

/// Runs one export job if it can be claimed.
pub async fn run(ctx: &ExportContext, read_conn: &mut ReadConn) -> Result<Outcome> {
    let Some(claimed) =
        exports::claim_next(&ctx.pool, &ctx.worker_id, ctx.lease, ctx.project_cap).await?
    else {
        return Ok(Outcome::Skipped);
    };
    let (claim, rec) = (claimed.claim, &claimed.rec);
    if claim.attempt == 1 {
        let waited = (chrono::Utc::now() - rec.created_at)
            .num_microseconds()
            .unwrap_or(0);
        ctx.metrics
            .exports
            .pickup
            .observe(waited.max(0) as f64 / 1e6);
    }
    let kind = claimed.kind;
    let outcome = job_of(kind)?.run(ctx, &claimed, read_conn).await;
    let label = if kind == Kind::Import {
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
    Ok(outcome?)
}

/// A job a worker slot runs from the queue: the claim hands out an export record.
type SlotJob = dyn Job<Context = ExportContext, Claimed = Claimed, Slot = ReadConn, Done = Outcome>;

/// The job kinds a worker slot runs, one `Job` each (webhook deliveries have their own loop).
fn job_of(kind: Kind) -> Result<&'static SlotJob> {
    match kind {
        Kind::Export => Ok(&RowsJob(Kind::Export)),
        Kind::Part => Ok(&PartJob),
        Kind::Bundle => Ok(&RowsJob(Kind::Bundle)),
        Kind::Import => Ok(&ImportJob),
        Kind::Webhook => Err(Error::Unexpected(anyhow::anyhow!(
            "a webhook delivery was claimed as an export"
        ))),
    }
}

/// Rows out of PostgreSQL into the store: one run into one file (`Kind::Export`, `file.rs`),
/// or definitions and runs into one ZIP (`Kind::Bundle`, `bundle.rs`).
struct RowsJob(Kind);
/// An uploaded bundle made into workflows (`import.rs`).
struct ImportJob;
/// Some files of a dataset (`dataset.rs`).
struct PartJob;

#[async_trait]
impl Job for PartJob {
    type Context = ExportContext;
    type Claimed = Claimed;
    type Slot = ReadConn;
    type Done = Outcome;
    fn kind(&self) -> Kind {
        Kind::Part
    }
    async fn run(
        &self,
        ctx: &ExportContext,
        claimed: &Claimed,
        conn: &mut ReadConn,
    ) -> std::result::Result<Outcome, JobError> {
        Ok(dataset::run_part(ctx, claimed, conn).await?)
    }
}

#[async_trait]
impl Job for RowsJob {
    type Context = ExportContext;
    type Claimed = Claimed;
    type Slot = ReadConn;
    type Done = Outcome;
    fn kind(&self) -> Kind {
        self.0
    }
    async fn run(
        &self,
        ctx: &ExportContext,
        claimed: &Claimed,
        conn: &mut ReadConn,
    ) -> std::result::Result<Outcome, JobError> {
        if self.0 == Kind::Export && claimed.rec.is_dataset() {
            return Ok(plan_dataset(ctx, claimed, conn).await?);
        }
        Ok(run_export(ctx, claimed, conn, self.0).await?)
    }
}

#[async_trait]
impl Job for ImportJob {
    type Context = ExportContext;
    type Claimed = Claimed;
    type Slot = ReadConn;
    type Done = Outcome;
    fn kind(&self) -> Kind {
        Kind::Import
    }
    async fn run(
        &self,
        ctx: &ExportContext,
        claimed: &Claimed,
        _: &mut ReadConn,
    ) -> std::result::Result<Outcome, JobError> {
        let (claim, rec) = (claimed.claim, &claimed.rec);
        let span = tracing::info_span!("import", import_id = %claim.export_id,
            request_id = rec.request_id.as_deref().unwrap_or(""), attempt = claim.attempt);
        Ok(tracing::Instrument::instrument(import::run(ctx, claim, rec), span).await?)
    }
}

/// A dataset's own job: its plan (or its manifest), settled like any attempt.
async fn plan_dataset(
    ctx: &ExportContext,
    claimed: &Claimed,
    read_conn: &mut ReadConn,
) -> Result<Outcome> {
    let (claim, rec) = (claimed.claim, &claimed.rec);
    let span = tracing::info_span!("export", export_id = %claim.export_id,
        request_id = rec.request_id.as_deref().unwrap_or(""), attempt = claim.attempt,
        format = %rec.format, dataset = true);
    let attempt = async {
        match dataset::plan(ctx, claimed, read_conn).await {
            Ok(o) => Ok(o),
            Err(e) => attempt::settle_error(ctx, &claim, rec, e, &ctx.stop.child_token()).await,
        }
    };
    tracing::Instrument::instrument(attempt, span).await
}

/// A connection to read a run's rows on, from the slot's (or a new one): the replica's once it
/// has replayed `lsn` (the run's commit), else, after `WHARF_REPLICA_WAIT` or without a known
/// position, the primary's. Give it back with `put_back` once its read ran to its end.
async fn read_connection(
    ctx: &ExportContext,
    slot: &mut ReadConn,
    lsn: Option<&str>,
) -> Result<(PgConnection, Server)> {
    use sqlx::Connection;
    if let (Some(replica), Some(lsn)) = (&ctx.replica, lsn) {
        match replica_caught_up(replica, slot, lsn).await {
            Ok(Some(conn)) => {
                ctx.metrics.read_on(Server::Replica);
                return Ok((conn, Server::Replica));
            }
            Ok(None) => tracing::info!(
                lsn,
                "the replica has not replayed the run yet; reading the primary"
            ),
            Err(e) => tracing::warn!(error = %e, "the replica is unavailable; reading the primary"),
        }
    }
    let conn = match slot.primary.take() {
        Some(c) => c,
        None => PgConnection::connect_with(&ctx.pool.connect_options()).await?,
    };
    ctx.metrics.read_on(Server::Primary);
    Ok((conn, Server::Primary))
}

/// The replica's connection once it has replayed `lsn`, within the replica's wait; None (the
/// connection kept in the slot) when it has not.
async fn replica_caught_up(
    replica: &Replica,
    slot: &mut ReadConn,
    lsn: &str,
) -> Result<Option<PgConnection>> {
    use sqlx::Connection;
    let mut conn = match slot.replica.take() {
        Some(c) => c,
        None => PgConnection::connect_with(&replica.options).await?,
    };
    let deadline = Instant::now() + replica.wait;
    loop {
        // NULL on a server that is not replaying (a primary): never caught up.
        let replayed: bool =
            sqlx::query_scalar("SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)")
                .bind(lsn)
                .fetch_one(&mut conn)
                .await?;
        if replayed {
            return Ok(Some(conn));
        }
        if Instant::now() >= deadline {
            slot.replica = Some(conn);
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A read connection back to the slot, for its next read on the same server.
fn put_back(slot: &mut ReadConn, conn: PgConnection, server: Server) {
    match server {
        Server::Primary => slot.primary = Some(conn),
        Server::Replica => slot.replica = Some(conn),
    }
}

/// An attempt of an export or a bundle: heartbeat, the pipeline, the verdict.
async fn run_export(
    ctx: &ExportContext,
    claimed: &exports::Claimed,
    read_conn: &mut ReadConn,
    kind: Kind,
) -> Result<Outcome> {
    let (claim, rec) = (claimed.claim, &claimed.rec);
    let export_id = claim.export_id;
    let span = tracing::info_span!("export", export_id = %export_id, request_id = rec.request_id.as_deref().unwrap_or(""),
        attempt = claim.attempt, format = %rec.format, scope = rec.scope.as_str());
    span.in_scope(|| tracing::info!("export claimed"));
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
        // A bundle reads many runs: on the primary.
        run_lsn: rec
            .run_commit_lsn
            .as_deref()
            .filter(|_| kind != Kind::Bundle),
    };
    let produce = async {
        if kind == Kind::Bundle {
            bundle::produce(&at, rec, read_conn).await
        } else {
            file::produce(&at, claimed, read_conn).await
        }
    };
    let produced = tracing::Instrument::instrument(produce, span.clone()).await;
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
    match produced {
        Ok(done) => completed(ctx, claim, done, started, progress).await,
        Err(e) => attempt::settle_error(ctx, claim, rec, e, cancel).await,
    }
}

/// The file's completion, fenced on the claim; an object the ledger does not record is deleted.
async fn completed(
    ctx: &ExportContext,
    claim: &Claim,
    done: Produced,
    started: Instant,
    progress: &Progress,
) -> Result<Outcome> {
    let completion = Completion {
        row_count: done.rows as i64,
        size_bytes: done.written.size as i64,
        sha256: &done.written.sha256,
        object_key: &done.target.key,
        content_type: &done.target.meta.content_type,
        file_name: &done.target.file_name,
        ttl: ctx.export_ttl,
    };
    let completed = match exports::complete(&ctx.pool, claim, &completion).await {
        Ok(done) => done,
        Err(e) => {
            // Unrecorded, the object must not stay; the lease lapses and it is retried.
            ctx.store.delete(&done.target.key).await.ok();
            return Err(e);
        }
    };
    if !completed {
        // Cancelled or taken over while finishing: the object must not outlive the claim.
        ctx.store.delete(&done.target.key).await?;
        tracing::info!("claim lost at completion; object deleted");
        return Ok(Outcome::Cancelled);
    }
    let seconds = started.elapsed().as_secs_f64();
    progress
        .phases
        .log_completed(done.rows, done.written.size, seconds);
    Ok(Outcome::Completed {
        rows: done.rows,
        bytes: done.written.size,
        seconds,
    })
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
