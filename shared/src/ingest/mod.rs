//! Ingest of a run: the body is parsed and validated on a blocking thread while it streams in,
//! and COPY text flows to PostgreSQL as it is produced. Memory is bounded by the channel sizes
//! and the row limit (`WHARF_MAX_ROW_BYTES`), never by the body.

pub(crate) mod parse;
pub(crate) mod values;
pub(crate) mod writer;

use std::io::Read;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::domain::ids::new_id;
use crate::error::{Error, Result};
use crate::repo::runs::{self, Run, RunFeed};
use crate::repo::workflows::Workflow;
pub use values::parse_timestamp;
pub use writer::{FirstId, RowError, WideRows};

/// The limits one upload is held to (API.md, Limits).
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// The whole body (`WHARF_MAX_RUN_BYTES`).
    pub max_body: u64,
    /// One NDJSON line, CSV record or JSON-array element (`WHARF_MAX_ROW_BYTES`).
    pub max_row: usize,
    /// Longest wait for the next body chunk (`WHARF_BODY_TIMEOUT`).
    pub body_timeout: Duration,
}

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

/// Stores one run from a streamed body, all-or-nothing. The database connection and the
/// workflow's lock are taken only once the first batch of rows has been parsed and checked.
pub async fn ingest_run<S, E>(
    pool: &PgPool,
    gate: &crate::repo::IngestGate,
    wf: &Workflow,
    format: BodyFormat,
    body: S,
    limits: IngestLimits,
) -> Result<Run>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let run_id = new_id();
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let (batch_tx, batch_rx) = mpsc::channel::<Vec<u8>>(BATCHES_IN_FLIGHT);
    let (ask_tx, ask_rx) = oneshot::channel();
    let (first_tx, first_rx) = oneshot::channel();
    let (verdict_tx, verdict_rx) = oneshot::channel();
    let wide = WideRows::default();
    let parser = Parser {
        fields: wf.fields.clone(),
        run_id,
        first_id: FirstId {
            ask: Some(ask_tx),
            answer: first_rx,
        },
        batches: batch_tx,
        wide: wide.clone(),
        format,
        max_row: limits.max_row,
    }
    .spawn(chunk_rx);
    let feed = RunFeed {
        ask: ask_rx,
        first_row_id: first_tx,
        batches: batch_rx,
        verdict: verdict_rx,
        wide,
    };
    let input = async move {
        let pumped = pump(body, chunk_tx, limits).await;
        let parsed = parser.await.map_err(|e| Error::Unexpected(e.into()));
        let verdict = pumped.and_then(|()| verdict_of(parsed?));
        verdict_tx
            .send(verdict.as_ref().map(|r| *r).map_err(|_| ()))
            .ok();
        verdict
    };
    let (stored, verdict) = futures::join!(runs::copy_run(pool, gate, wf, run_id, feed), input);
    outcome(verdict, stored)
}

/// The run, or the error that explains best why it was not stored: the input's own fault (a
/// bad row, too large, too slow) before the COPY's.
fn outcome(verdict: Result<u64>, stored: Result<Option<Run>>) -> Result<Run> {
    match (verdict, stored) {
        (
            Err(
                e @ (Error::Invalid(_)
                | Error::PayloadTooLarge { .. }
                | Error::RowTooLarge(_)
                | Error::RequestTimeout(_)),
            ),
            _,
        ) => Err(e),
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(_), Ok(Some(run))) => Ok(run),
        (Ok(_), Ok(None)) => Err(Error::Unexpected(anyhow::anyhow!("run not stored"))),
    }
}

/// What the body's parser needs: the schema, the run's ids and where its batches go.
struct Parser {
    fields: Vec<crate::domain::schema::Field>,
    run_id: uuid::Uuid,
    first_id: FirstId,
    batches: mpsc::Sender<Vec<u8>>,
    wide: WideRows,
    format: BodyFormat,
    max_row: usize,
}

impl Parser {
    /// The parser on a blocking thread, reading the chunks `pump` sends it.
    fn spawn(
        self,
        chunks: mpsc::Receiver<Bytes>,
    ) -> tokio::task::JoinHandle<std::result::Result<u64, RowError>> {
        tokio::task::spawn_blocking(move || {
            let Parser {
                fields,
                run_id,
                first_id,
                batches,
                wide,
                format,
                max_row,
            } = self;
            let mut w = writer::RowWriter::new(&fields, run_id, first_id, batches);
            w.wide = wide;
            let reader = ChunkReader {
                rx: chunks,
                cur: Bytes::new(),
            };
            match format {
                BodyFormat::Ndjson => parse::ndjson(reader, &mut w, max_row)?,
                BodyFormat::JsonArray => parse::json_array(reader, &mut w, max_row)?,
                BodyFormat::Csv => parse::csv(reader, &mut w, max_row)?,
            }
            w.finish()
        })
    }
}

/// What the parser's end means for the run: its row count, or the request's error.
fn verdict_of(parsed: std::result::Result<u64, RowError>) -> Result<u64> {
    match parsed {
        Ok(rows) => Ok(rows),
        Err(RowError::Bad(msg)) => Err(Error::Invalid(msg)),
        Err(e @ RowError::TooLarge { .. }) => Err(Error::RowTooLarge(e.to_string())),
        Err(RowError::Aborted) => Err(Error::Unexpected(anyhow::anyhow!("ingest aborted"))),
    }
}

/// Moves body chunks to the parser, enforcing the size limit and the stall timeout.
async fn pump<S, E>(mut body: S, tx: mpsc::Sender<Bytes>, limits: IngestLimits) -> Result<()>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut total: u64 = 0;
    loop {
        let next = tokio::time::timeout(limits.body_timeout, body.next())
            .await
            .map_err(|_| {
                Error::RequestTimeout(format!(
                    "the request body sent nothing for {} s (WHARF_BODY_TIMEOUT); nothing was stored",
                    limits.body_timeout.as_secs_f64()
                ))
            })?;
        let Some(chunk) = next else { break };
        let chunk =
            chunk.map_err(|e| Error::invalid(format!("request body could not be read: {e}")))?;
        total += chunk.len() as u64;
        if total > limits.max_body {
            return Err(Error::PayloadTooLarge {
                limit: limits.max_body,
            });
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
