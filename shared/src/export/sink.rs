//! Where encoded bytes go: cut into chunks of `CHUNK` bytes, counted on the way, and handed to
//! the uploader through a bounded channel (so memory stays bounded).

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

use super::upload::Piece;

/// Bytes per chunk sent to the store (which gathers them into parts as it needs).
pub const CHUNK: usize = 1 << 20;

pub struct ChunkSink {
    buf: Vec<u8>,
    tx: mpsc::Sender<Piece>,
    total: u64,
    progress: Arc<AtomicU64>,
}

impl ChunkSink {
    pub fn new(tx: mpsc::Sender<Piece>, progress: Arc<AtomicU64>) -> Self {
        ChunkSink {
            buf: Vec::with_capacity(CHUNK),
            tx,
            total: 0,
            progress,
        }
    }

    fn send(&mut self, piece: Piece) -> io::Result<()> {
        self.tx
            .blocking_send(piece)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"))
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.send(Some(Bytes::from(chunk)))
    }

    /// Sends the last chunk and the end marker; returns the file's size.
    pub fn finish(mut self) -> io::Result<u64> {
        if !self.buf.is_empty() {
            self.send_chunk()?;
        }
        self.send(None)?;
        Ok(self.total)
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.total += data.len() as u64;
        self.progress.store(self.total, Ordering::Relaxed);
        if self.buf.len() >= CHUNK {
            self.send_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A text file's output: plain or gzip-compressed.
pub enum Output {
    Plain(ChunkSink),
    Gzip(Box<GzEncoder<ChunkSink>>),
}

impl Output {
    pub fn new(sink: ChunkSink, gzip: bool) -> Self {
        if gzip {
            Output::Gzip(Box::new(GzEncoder::new(sink, flate2::Compression::new(4))))
        } else {
            Output::Plain(sink)
        }
    }

    pub fn finish(self) -> io::Result<u64> {
        match self {
            Output::Plain(s) => s.finish(),
            Output::Gzip(g) => g.finish()?.finish(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(s) => s.write(data),
            Output::Gzip(g) => g.write(data),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Output::Plain(s) => s.write_all(data),
            Output::Gzip(g) => g.write_all(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
