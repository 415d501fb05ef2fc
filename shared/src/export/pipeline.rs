//! The one pipeline every exported file goes through: a `Source` reads rows out of PostgreSQL
//! by binary COPY (one run, or a bundle's runs one after another), an encoding thread turns
//! them into the file's bytes (a format's `Encoder`, or a ZIP of them), and the bytes stream to
//! the object store as they are written. The three stages run at once over bounded channels,
//! so memory stays bounded whatever the rows; the verdict on an attempt (`settle`) is given
//! here once: the stored object when every stage succeeded and agrees on its size, nothing
//! otherwise.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sqlx::PgConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::binary::TupleReader;
use super::sink::ChunkSink;
use super::{ExportContext, Phases, Progress, ReadConn, is_stopped, stopped, upload};
use crate::error::{Error, Result};
use crate::repo::exports::Claim;
use crate::store::{ObjectMeta, Written};

/// What flows from the reader to the encoder: each part of the read (a run) framed by `Begin`
/// (its index) and `End`, then `Done`. A channel that closes before `Done` is a reader that
/// stopped, and the encoder fails rather than finish a partial file.
pub(super) enum Msg {
    Begin(usize),
    Rows(Bytes),
    End,
    Done,
}

pub(super) type Feed = mpsc::Receiver<Msg>;

/// Where rows come from.
#[async_trait]
pub(super) trait Source: Send + Sync {
    /// Prepares the read on `conn` (its transaction and settings); returns the rows it holds.
    async fn open(&mut self, conn: &mut PgConnection) -> Result<i64>;
    /// Sends every part's rows through `feed` (`Feeder::copy_part`, one call a part).
    async fn read(&self, conn: &mut PgConnection, feed: &Feeder<'_>) -> Result<()>;
    /// Ends a read that ran to its end, so the connection can serve the next export.
    async fn close(&self, conn: &mut PgConnection) -> Result<()>;
}

/// The object an attempt writes.
pub(super) struct Target {
    pub key: String,
    pub file_name: String,
    pub meta: ObjectMeta,
}

/// An attempt's stored file.
pub(super) struct Produced {
    pub target: Target,
    pub written: Written,
    pub rows: u64,
}

/// The attempt a pipeline runs for.
pub(super) struct Attempt<'a> {
    pub ctx: &'a ExportContext,
    pub claim: &'a Claim,
    pub progress: &'a Arc<Progress>,
    pub started: Instant,
    pub cancel: &'a CancellationToken,
    /// The run's commit position, when one run is read (a replica may serve it once replayed).
    pub run_lsn: Option<&'a str>,
}

/// Runs on the encoding thread: reads the feed, writes the file into the sink; returns the
/// file's size and its rows.
pub(super) type Encode =
    Box<dyn FnOnce(ChunkSink, &mut Feed, &Progress) -> Result<(u64, u64)> + Send>;

/// Reads `source`, encodes with `encode` and writes `target`, on the slot's connection (kept
/// for the next export only when the read ran to its end).
pub(super) async fn run(
    at: &Attempt<'_>,
    read_conn: &mut ReadConn,
    source: &mut dyn Source,
    target: Target,
    encode: Encode,
) -> Result<Produced> {
    let (ctx, progress, started) = (at.ctx, at.progress, at.started);
    let (mut conn, server) = super::read_connection(ctx, read_conn, at.run_lsn).await?;
    let total = source.open(&mut conn).await?;
    progress.total.set(total).ok();
    Phases::mark(&progress.phases.counted, started);

    let (msg_tx, msg_rx) = mpsc::channel::<Msg>(8);
    let (piece_tx, piece_rx) = mpsc::channel::<upload::Piece>(4);
    let sink = ChunkSink::new(piece_tx, progress.bytes.clone());
    let encoder = spawn_encoder(encode, sink, msg_rx, progress, started);
    let reader = read_all(at, source, &mut conn, msg_tx);
    let uploader = async {
        let written = upload::upload(
            ctx,
            at.claim,
            &target.key,
            &target.meta,
            piece_rx,
            at.cancel,
        );
        let written = written.await;
        Phases::mark(&progress.phases.written, started);
        written
    };
    let (read, uploaded) = futures::join!(reader, uploader);
    // An interrupted COPY is stopped by closing its connection, not by reusing it.
    let clean = read.is_ok() && source.close(&mut conn).await.is_ok();
    if clean {
        super::put_back(read_conn, conn, server);
    }
    let encoded = encoder.await.map_err(|e| Error::Unexpected(e.into()))?;
    settle(at, target, read, encoded, uploaded).await
}

/// The source's rows into the feed, then `Done` (what the encoder waits for to finish the file).
async fn read_all(
    at: &Attempt<'_>,
    source: &mut dyn Source,
    conn: &mut PgConnection,
    tx: mpsc::Sender<Msg>,
) -> Result<()> {
    let feeder = Feeder {
        tx: &tx,
        cancel: at.cancel,
        phases: &at.progress.phases,
        started: at.started,
    };
    let mut read = source.read(conn, &feeder).await;
    if read.is_ok() {
        read = tx.send(Msg::Done).await.map_err(|_| stopped());
    }
    drop(tx);
    Phases::mark(&at.progress.phases.read_done, at.started);
    read
}

/// The encoder on a blocking thread, in the attempt's span.
fn spawn_encoder(
    encode: Encode,
    sink: ChunkSink,
    mut feed: Feed,
    progress: &Arc<Progress>,
    started: Instant,
) -> tokio::task::JoinHandle<Result<(u64, u64)>> {
    let (progress, span) = (progress.clone(), tracing::Span::current());
    tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        let encoded = encode(sink, &mut feed, &progress);
        Phases::mark(&progress.phases.encode_done, started);
        encoded
    })
}

/// The verdict on an attempt's three stages: the stored file when all three succeeded and
/// agree on its size; else the object is discarded and the root cause told.
async fn settle(
    at: &Attempt<'_>,
    target: Target,
    read: Result<()>,
    encoded: Result<(u64, u64)>,
    uploaded: Result<Written>,
) -> Result<Produced> {
    let discard = || upload::discard_bounded(at.ctx, at.claim, &target.key, None);
    match (read, encoded, uploaded) {
        (Ok(()), Ok((size, rows)), Ok(written)) if size == written.size => {
            if at.cancel.is_cancelled() {
                discard().await;
                return Err(stopped());
            }
            Ok(Produced {
                target,
                written,
                rows,
            })
        }
        (Ok(()), Ok((size, _)), Ok(written)) => {
            discard().await;
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
            discard().await;
            Err(match (read, encoded) {
                (Err(r), Err(enc)) if is_stopped(&r) => enc,
                (Err(r), _) => r,
                (Ok(()), Err(enc)) => enc,
                (Ok(()), Ok(_)) => stopped(),
            })
        }
    }
}

fn root_cause(upload: Error, read: Option<Error>, encode: Option<Error>) -> Error {
    if !is_stopped(&upload) {
        return upload;
    }
    read.filter(|e| !is_stopped(e)).or(encode).unwrap_or(upload)
}

/// The reader's end of the feed.
pub(super) struct Feeder<'a> {
    tx: &'a mpsc::Sender<Msg>,
    cancel: &'a CancellationToken,
    phases: &'a Phases,
    started: Instant,
}

impl Feeder<'_> {
    async fn send(&self, m: Msg) -> Result<()> {
        self.tx.send(m).await.map_err(|_| stopped())
    }

    /// Streams one COPY's binary output to the encoder as part `part`, in ~256 KiB batches.
    pub(super) async fn copy_part(
        &self,
        conn: &mut PgConnection,
        sql: &str,
        part: usize,
    ) -> Result<()> {
        let mut stream = conn.copy_out_raw(sql).await?;
        if part == 0 {
            Phases::mark(&self.phases.first_rows, self.started);
        }
        self.send(Msg::Begin(part)).await?;
        let mut batch = BytesMut::with_capacity(512 * 1024);
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return Err(stopped()),
                next = stream.next() => next,
            };
            let Some(item) = next else { break };
            batch.extend_from_slice(&item?);
            if batch.len() >= 256 * 1024 {
                self.send(Msg::Rows(batch.split().freeze())).await?;
            }
        }
        drop(stream);
        self.send(Msg::Rows(batch.freeze())).await?;
        self.send(Msg::End).await
    }
}

/// On the encoding thread: the next part's index, or None when the read is done.
pub(super) fn next_part(rx: &mut Feed) -> Result<Option<usize>> {
    match rx.blocking_recv() {
        Some(Msg::Begin(part)) => Ok(Some(part)),
        Some(Msg::Done) => Ok(None),
        _ => Err(stopped()),
    }
}

/// On the encoding thread: feeds one part's tuples to `row` until its `End`; errors unless its
/// COPY stream ended cleanly. `before` is the rows of earlier parts, for the progress figure.
pub(super) fn decode_part(
    rx: &mut Feed,
    progress: &Progress,
    before: u64,
    mut row: impl FnMut(&[u8], &[Option<(usize, usize)>]) -> Result<()>,
) -> Result<u64> {
    let mut reader = TupleReader::new();
    let mut fields = Vec::new();
    let mut rows = 0;
    let mut busy = Duration::from_micros(progress.phases.encode_busy.load(Ordering::Relaxed));
    loop {
        match rx.blocking_recv() {
            Some(Msg::Rows(bytes)) => {
                let t = Instant::now();
                reader.push(&bytes);
                rows += reader.drain(&mut fields, &mut row)?;
                progress.rows.store(before + rows, Ordering::Relaxed);
                busy += t.elapsed();
                progress
                    .phases
                    .encode_busy
                    .store(busy.as_micros() as u64, Ordering::Relaxed);
            }
            Some(Msg::End) if reader.finished => return Ok(rows),
            _ => return Err(stopped()),
        }
    }
}
