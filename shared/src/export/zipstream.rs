//! A ZIP archive written as a stream, front to back, in bounded memory, on the `zip` crate's
//! streaming writer (`ZipWriter::new_stream`: each entry's sizes and CRC-32 follow its data in a
//! data descriptor, the central directory comes at the end). Entries are stored: a bundle's
//! Parquet files are compressed already. Streamed entries carry ZIP64 sizes (a run file may pass
//! 4 GiB), and the crate writes the ZIP64 end records when offsets or the entry count need them.
//! What this adds is the bundle's bookkeeping: each entry's size and sha256, counted by a
//! hashing writer as its bytes go through.

use std::io::{self, Write};

use sha2::{Digest, Sha256};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

/// What one entry held: its size and sha256 (lowercase hex).
#[derive(Debug, Clone)]
pub struct EntryDone {
    pub bytes: u64,
    pub sha256: String,
}

pub struct ZipStream<W: Write> {
    zip: ZipWriter<StreamWriter<W>>,
    options: SimpleFileOptions,
    /// The open entry's hash and size so far.
    open: Option<(Sha256, u64)>,
}

fn zip_error(e: zip::result::ZipError) -> io::Error {
    io::Error::other(e)
}

fn not_open() -> io::Error {
    io::Error::other("no ZIP entry is open")
}

impl<W: Write> ZipStream<W> {
    /// Every entry is dated `modified` (the bundle's creation), rw-r--r--.
    pub fn new(out: W, modified: chrono::DateTime<chrono::Utc>) -> Self {
        use chrono::{Datelike, Timelike};
        let date = zip::DateTime::from_date_and_time(
            modified.year().clamp(1980, 2107) as u16,
            modified.month() as u8,
            modified.day() as u8,
            modified.hour() as u8,
            modified.minute() as u8,
            modified.second().min(59) as u8,
        )
        .unwrap_or_default();
        ZipStream {
            zip: ZipWriter::new_stream(out),
            options: SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .last_modified_time(date)
                .unix_permissions(0o644),
            open: None,
        }
    }

    fn start(&mut self, name: &str, large: bool) -> io::Result<()> {
        if self.open.is_some() {
            return Err(io::Error::other("a ZIP entry is open already"));
        }
        self.zip
            .start_file(name, self.options.large_file(large))
            .map_err(zip_error)?;
        self.open = Some((Sha256::new(), 0));
        Ok(())
    }

    /// Opens an entry of any size; what is written next is its content, until `end`.
    pub fn begin(&mut self, name: &str) -> io::Result<()> {
        self.start(name, true)
    }

    /// Closes the open entry (the crate writes its data descriptor when the next one starts or
    /// the archive finishes).
    pub fn end(&mut self) -> io::Result<EntryDone> {
        let (sha, bytes) = self.open.take().ok_or_else(not_open)?;
        Ok(EntryDone {
            bytes,
            sha256: hex::encode(sha.finalize()),
        })
    }

    /// One whole entry from memory.
    pub fn put(&mut self, name: &str, content: &[u8]) -> io::Result<EntryDone> {
        self.start(name, false)?;
        self.write_all(content)?;
        self.end()
    }

    /// Writes the central directory and the end records; returns the output.
    pub fn finish(self) -> io::Result<W> {
        if self.open.is_some() {
            return Err(io::Error::other("a ZIP entry is still open"));
        }
        Ok(self.zip.finish().map_err(zip_error)?.into_inner())
    }
}

impl<W: Write> Write for ZipStream<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (sha, bytes) = self.open.as_mut().ok_or_else(not_open)?;
        let n = self.zip.write(buf)?;
        sha.update(&buf[..n]);
        *bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.zip.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn an_independent_reader_opens_what_it_writes() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:20:30Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        let mut z = ZipStream::new(Vec::new(), at);
        let a = z.put("manifest.json", b"{\"a\": 1}").ok();
        z.begin("workflows/x/runs/é.parquet").ok();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        z.write_all(&big[..1000]).ok();
        z.write_all(&big[1000..]).ok();
        let b = z.end().ok();
        z.put("empty", b"").ok();
        let bytes = z.finish().unwrap_or_default();
        assert_eq!(a.map(|d| d.bytes), Some(8));
        assert_eq!(b.map(|d| d.sha256), Some(hex::encode(Sha256::digest(&big))));
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("opens");
        assert_eq!(archive.len(), 3);
        archive
            .validate_header_consistency()
            .expect("consistent: what an import checks");
        let mut content = Vec::new();
        let mut entry = archive
            .by_name("workflows/x/runs/é.parquet")
            .expect("entry");
        assert_eq!(entry.compression(), CompressionMethod::Stored);
        entry.read_to_end(&mut content).expect("reads, CRC checked");
        assert_eq!(content, big);
        assert_eq!(
            entry
                .last_modified()
                .map(|d| (d.year(), d.hour(), d.second())),
            Some((2026, 10, 30))
        );
        drop(entry);
        let mut m = String::new();
        archive
            .by_name("manifest.json")
            .expect("entry")
            .read_to_string(&mut m)
            .expect("reads");
        assert_eq!(m, "{\"a\": 1}");
        assert_eq!(archive.by_name("empty").expect("entry").size(), 0);
    }

    #[test]
    fn writing_outside_an_entry_is_an_error() {
        let mut z = ZipStream::new(Vec::new(), chrono::Utc::now());
        assert!(z.write_all(b"x").is_err());
        assert!(z.end().is_err());
        z.begin("a").ok();
        assert!(z.begin("b").is_err());
    }
}
