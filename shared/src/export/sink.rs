//! Where encoded bytes go: cut into upload parts of at least `part_size`, hashed and counted
//! on the way, handed to the uploader through a bounded channel (so memory stays bounded).

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub struct PartSink {
    buf: Vec<u8>,
    part_size: usize,
    tx: mpsc::Sender<Bytes>,
    hasher: Sha256,
    total: u64,
    progress: Arc<AtomicU64>,
}

/// What the file turned out to be.
#[derive(Debug, Clone)]
pub struct Written {
    pub sha256: String,
    pub size: u64,
}

impl PartSink {
    pub fn new(part_size: usize, tx: mpsc::Sender<Bytes>, progress: Arc<AtomicU64>) -> Self {
        PartSink {
            buf: Vec::with_capacity(part_size),
            part_size,
            tx,
            hasher: Sha256::new(),
            total: 0,
            progress,
        }
    }

    fn send_part(&mut self) -> io::Result<()> {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        self.tx
            .blocking_send(Bytes::from(part))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"))
    }

    /// Sends the last (possibly short) part and returns the file's hash and size.
    pub fn finish(mut self) -> io::Result<Written> {
        if !self.buf.is_empty() || self.total == 0 {
            self.send_part()?;
        }
        Ok(Written {
            sha256: hex::encode(self.hasher.finalize()),
            size: self.total,
        })
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.buf.extend_from_slice(data);
        self.total += data.len() as u64;
        self.progress.store(self.total, Ordering::Relaxed);
        if self.buf.len() >= self.part_size {
            self.send_part()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A text file's output: plain or gzip-compressed.
pub enum Output {
    Plain(PartSink),
    Gzip(Box<GzEncoder<PartSink>>),
}

impl Output {
    pub fn new(sink: PartSink, gzip: bool) -> Self {
        if gzip {
            Output::Gzip(Box::new(GzEncoder::new(sink, flate2::Compression::new(4))))
        } else {
            Output::Plain(sink)
        }
    }

    pub fn finish(self) -> io::Result<Written> {
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
