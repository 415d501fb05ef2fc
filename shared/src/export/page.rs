//! Rows read synchronously into an HTTP response (Kadoa's `GET /v4/workflows/{id}/data`): one
//! page, or every selected row (`limit=0`), through the export pipeline's own parts — binary
//! COPY, the JSON or CSV writer on a blocking thread, optional gzip — streamed chunk by chunk,
//! so memory stays bounded by a chunk, never by the page or the selection.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::binary::{TupleReader, i64_of};
use super::formats::CsvWriter;
use super::formats::JsonWriter;
use super::sink::{ChunkSink, Output};
use super::upload::Piece;
use crate::error::{Error, Result};
use crate::repo::export_query::{Plan, Seek};
use crate::repo::lent::CopyConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFormat {
    Json,
    Csv,
}

/// What goes around the rows: a JSON envelope's head and tail (nothing for CSV).
#[derive(Debug, Default, Clone)]
pub struct Framing {
    pub prefix: Vec<u8>,
    pub suffix: Vec<u8>,
}

pub struct Streamed {
    /// The response body in chunks; `None` marks a complete body (the channel closing without
    /// it means the read failed midway).
    pub body: mpsc::Receiver<Piece>,
    /// The last row's `_id` once every row is written (keyset paging remembers it).
    pub last_id: oneshot::Receiver<Option<i64>>,
}

/// How a read's bytes are made: the format, gzip or not, and what goes around the rows.
pub struct Encoding {
    pub format: PageFormat,
    pub gzip: bool,
    pub framing: Framing,
}

/// Starts streaming the rows `plan` selects, from `seek`, at most `limit` (None: all). The
/// plan's bindings are applied (errors come back here, before any byte is sent); the rest runs
/// in tasks of its own. A reader that sends nothing for `stall` (a client that stopped
/// reading) is stopped and its connection closed, never given back mid-COPY.
pub async fn stream_rows(
    pool: &PgPool,
    plan: Plan,
    seek: Seek,
    limit: Option<u64>,
    encoding: Encoding,
    stall: Duration,
) -> Result<Streamed> {
    // A connection of its own for the read: it goes back to the pool only after the COPY ran
    // to its end; a read cut short (client gone, stalled, an error, a panic) closes it.
    let mut lent = CopyConnection::begin(pool).await?;
    plan.apply(&mut lent).await?;
    let sql = match limit {
        Some(n) => plan.page_copy_sql(seek, n),
        None => plan.copy_sql(),
    };
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Option<Bytes>>(4);
    let (piece_tx, piece_rx) = mpsc::channel::<Piece>(4);
    let (last_tx, last_rx) = oneshot::channel();
    let columns = plan.columns.clone();
    tokio::task::spawn_blocking(move || {
        let sink = ChunkSink::new(piece_tx, Arc::new(AtomicU64::new(0)));
        match encode(sink, &columns, &encoding, &mut chunk_rx) {
            Ok(last) => {
                last_tx.send(last).ok();
            }
            // The read ended first (a client gone): nothing to warn about.
            Err(e) if super::is_stopped(&e) => tracing::debug!("a data read stopped midway"),
            Err(e) => tracing::warn!(error = %e, "a data read stopped midway"),
        }
    });
    tokio::spawn(async move {
        if let Err(e) = copy_out(lent, &sql, &chunk_tx, stall).await {
            tracing::debug!(error = %e, "data read ended early");
        }
    });
    Ok(Streamed {
        body: piece_rx,
        last_id: last_rx,
    })
}

/// The COPY's bytes to the encoder in batches of ~128 KiB, then `None` for its end.
async fn copy_out(
    mut lent: CopyConnection,
    sql: &str,
    chunk_tx: &mpsc::Sender<Option<Bytes>>,
    stall: Duration,
) -> Result<()> {
    let mut batch = BytesMut::with_capacity(256 * 1024);
    {
        let mut stream = lent.copy_out_raw(sql).await?;
        while let Some(chunk) = stream.next().await {
            batch.extend_from_slice(&chunk?);
            if batch.len() >= 128 * 1024 {
                send(chunk_tx, Some(batch.split().freeze()), stall).await?;
            }
        }
    }
    // The COPY is over: the connection is given back before the last bytes go out, so a
    // client that stops reading now holds no connection.
    lent.rollback().await?;
    send(chunk_tx, Some(batch.freeze()), stall).await?;
    send(chunk_tx, None, stall).await
}

async fn send(
    tx: &mpsc::Sender<Option<Bytes>>,
    item: Option<Bytes>,
    stall: Duration,
) -> Result<()> {
    match tokio::time::timeout(stall, tx.send(item)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(super::stopped()),
        Err(_) => Err(Error::RequestTimeout(
            "the client read nothing for the body timeout".into(),
        )),
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Unexpected(e.into())
}

/// What a writer does with one binary COPY tuple (its bytes and its fields' spans).
type RowFn<'a> = dyn FnMut(&[u8], &[Option<(usize, usize)>]) -> Result<()> + 'a;

/// Writes the framing and the rows; returns the last row's `_id` (column 0 when selected).
fn encode(
    sink: ChunkSink,
    columns: &[crate::repo::export_query::OutColumn],
    encoding: &Encoding,
    rx: &mut mpsc::Receiver<Option<Bytes>>,
) -> Result<Option<i64>> {
    let mut out = Output::new(sink, encoding.gzip);
    out.write_all(&encoding.framing.prefix).map_err(io)?;
    let id_first = columns.first().is_some_and(|c| c.field_type.is_none());
    let mut last = None;
    let mut reader = TupleReader::new();
    let mut fields = Vec::new();
    let mut feed = |row: &mut RowFn<'_>| -> Result<()> {
        loop {
            match rx.blocking_recv() {
                Some(Some(bytes)) => {
                    reader.push(&bytes);
                    reader.drain(&mut fields, |buf, f| {
                        if id_first && let Some(Some((o, l))) = f.first() {
                            last = Some(i64_of(&buf[*o..*o + *l])?);
                        }
                        row(buf, f)
                    })?;
                }
                Some(None) if reader.finished => return Ok(()),
                _ => return Err(super::stopped()),
            }
        }
    };
    let mut out = match encoding.format {
        PageFormat::Json => {
            let mut w = JsonWriter::new(out, columns, true);
            feed(&mut |buf, f| w.row(buf, f))?;
            w.close()?
        }
        PageFormat::Csv => {
            let mut w = CsvWriter::new(out, columns)?;
            feed(&mut |buf, f| w.row(buf, f))?;
            w.close()?
        }
    };
    out.write_all(&encoding.framing.suffix).map_err(io)?;
    out.finish().map_err(io)?;
    Ok(last)
}

/// How many rows `plan` selects (the run's own count when nothing filters it).
pub async fn count_rows(pool: &PgPool, plan: &Plan) -> Result<i64> {
    let mut tx = pool.begin().await?;
    plan.apply(&mut tx).await?;
    let n = plan.count(&mut tx).await?;
    tx.rollback().await?;
    Ok(n)
}
