//! Ingest of a run: the body is parsed and validated on a blocking thread while it streams in,
//! and COPY text flows to PostgreSQL as it is produced. Memory is bounded by the channel sizes,
//! never by the body.

mod parse;
mod values;
mod writer;

use std::io::Read;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::domain::ids::new_id;
use crate::error::{Error, Result};
use crate::repo::runs::{self, Run, RunFeed};
use crate::repo::workflows::Workflow;
pub use writer::RowError;

/// The media types a run body may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Ndjson,
    JsonArray,
    Csv,
}

impl BodyFormat {
    /// From a `Content-Type` essence (parameters such as charset already stripped).
    pub fn from_media_type(essence: &str) -> Option<Self> {
        match essence.to_ascii_lowercase().as_str() {
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Self::Ndjson)
            }
            "application/json" => Some(Self::JsonArray),
            "text/csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// Body chunks in flight between the request and the parser.
const CHUNKS_IN_FLIGHT: usize = 16;
/// COPY batches (256 KiB each) in flight between the parser and PostgreSQL.
const BATCHES_IN_FLIGHT: usize = 4;

/// Stores one run from a streamed body, all-or-nothing.
pub async fn ingest_run<S, E>(
    pool: &PgPool,
    wf: &Workflow,
    format: BodyFormat,
    body: S,
    limit: u64,
) -> Result<Run>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let run_id = new_id();
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let (batch_tx, batch_rx) = mpsc::channel::<Vec<u8>>(BATCHES_IN_FLIGHT);
    let (first_tx, first_rx) = oneshot::channel();
    let (verdict_tx, verdict_rx) = oneshot::channel();
    let fields = wf.fields.clone();
    let parser = tokio::task::spawn_blocking(move || {
        let first_id = first_rx.blocking_recv().map_err(|_| RowError::Aborted)?;
        let mut w = writer::RowWriter::new(&fields, run_id, first_id, batch_tx);
        let reader = ChunkReader {
            rx: chunk_rx,
            cur: Bytes::new(),
        };
        match format {
            BodyFormat::Ndjson => parse::ndjson(reader, &mut w)?,
            BodyFormat::JsonArray => parse::json_array(reader, &mut w)?,
            BodyFormat::Csv => parse::csv(reader, &mut w)?,
        }
        w.finish()
    });
    let feed = RunFeed {
        first_row_id: first_tx,
        batches: batch_rx,
        verdict: verdict_rx,
    };
    let input = async move {
        let pumped = pump(body, chunk_tx, limit).await;
        let parsed = parser.await.map_err(|e| Error::Unexpected(e.into()));
        let verdict = match (pumped, parsed) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(Err(RowError::Bad(msg)))) => Err(Error::Invalid(msg)),
            (Ok(()), Ok(Err(RowError::Aborted))) => {
                Err(Error::Unexpected(anyhow::anyhow!("ingest aborted")))
            }
            (Ok(()), Ok(Ok(rows))) => Ok(rows),
        };
        verdict_tx
            .send(verdict.as_ref().map(|r| *r).map_err(|_| ()))
            .ok();
        verdict
    };
    let (stored, verdict) = futures::join!(runs::copy_run(pool, wf, run_id, feed), input);
    match (verdict, stored) {
        // The input's own fault (bad row, too large) explains a failure better than the COPY's.
        (Err(e @ (Error::Invalid(_) | Error::PayloadTooLarge { .. })), _) => Err(e),
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(_), Ok(Some(run))) => Ok(run),
        (Ok(_), Ok(None)) => Err(Error::Unexpected(anyhow::anyhow!("run not stored"))),
    }
}

/// Moves body chunks to the parser, enforcing the size limit.
async fn pump<S, E>(mut body: S, tx: mpsc::Sender<Bytes>, limit: u64) -> Result<()>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut total: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Error::invalid(format!("request body could not be read: {e}")))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        if tx.send(chunk).await.is_err() {
            // The parser stopped (a bad row, or the database went away); its verdict explains.
            return Ok(());
        }
    }
    Ok(())
}

/// A blocking `Read` over chunks arriving on a channel.
struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.cur = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}
