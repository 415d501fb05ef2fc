//! A ZIP archive written as a stream, front to back, in bounded memory: each entry's local
//! header goes out before its data (sizes and CRC-32 follow the data in a data descriptor,
//! general-purpose flag bit 3), and the central directory at the end. Entries are stored (method
//! 0): a bundle's Parquet files are compressed already. ZIP64 records are written when a size,
//! an offset or the entry count needs them, so archives over 4 GiB open everywhere. Memory is a
//! central-directory record per entry (a name and a few numbers).

use std::io::{self, Write};

use sha2::{Digest, Sha256};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL: u32 = 0x0605_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// Bit 3: sizes and CRC in a data descriptor; bit 11: names are UTF-8.
const FLAGS: u16 = 0x0808;
/// Version 4.5 (ZIP64), made on Unix (so the mode bits below are read).
const VERSION_MADE_BY: u16 = (3 << 8) | 45;
const VERSION_NEEDED: u16 = 20;
const VERSION_NEEDED_ZIP64: u16 = 45;
/// A regular file, rw-r--r--.
const EXTERNAL_ATTRS: u32 = 0o100644 << 16;

/// What one entry held: its size and sha256 (lowercase hex).
#[derive(Debug, Clone)]
pub struct EntryDone {
    pub bytes: u64,
    pub sha256: String,
}

struct Central {
    name: String,
    offset: u64,
    crc: u32,
    size: u64,
}

struct Open {
    name: String,
    offset: u64,
    crc: crc32fast::Hasher,
    sha: Sha256,
    size: u64,
}

pub struct ZipStream<W: Write> {
    out: W,
    /// Bytes written so far: the offset of the next record.
    at: u64,
    dos_time: u16,
    dos_date: u16,
    entries: Vec<Central>,
    open: Option<Open>,
}

fn not_open() -> io::Error {
    io::Error::other("no ZIP entry is open")
}

impl<W: Write> ZipStream<W> {
    /// Every entry is dated `modified` (the bundle's creation), in the DOS format ZIP uses.
    pub fn new(out: W, modified: chrono::DateTime<chrono::Utc>) -> Self {
        use chrono::{Datelike, Timelike};
        let year = modified.year().clamp(1980, 2107) as u16;
        ZipStream {
            out,
            at: 0,
            dos_time: ((modified.hour() as u16) << 11)
                | ((modified.minute() as u16) << 5)
                | (modified.second() as u16 / 2),
            dos_date: ((year - 1980) << 9)
                | ((modified.month() as u16) << 5)
                | modified.day() as u16,
            entries: Vec::new(),
            open: None,
        }
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.at += bytes.len() as u64;
        Ok(())
    }

    /// Opens an entry; what is written next is its content, until `end`.
    pub fn begin(&mut self, name: &str) -> io::Result<()> {
        if self.open.is_some() {
            return Err(io::Error::other("a ZIP entry is open already"));
        }
        let name_len = u16::try_from(name.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ZIP entry name too long"))?;
        let mut h = Vec::with_capacity(30 + name.len());
        h.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
        h.extend_from_slice(&VERSION_NEEDED_ZIP64.to_le_bytes());
        h.extend_from_slice(&FLAGS.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&self.dos_time.to_le_bytes());
        h.extend_from_slice(&self.dos_date.to_le_bytes());
        h.extend_from_slice(&[0; 12]); // CRC and sizes: in the data descriptor
        h.extend_from_slice(&name_len.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        let offset = self.at;
        self.emit(&h)?;
        self.open = Some(Open {
            name: name.to_string(),
            offset,
            crc: crc32fast::Hasher::new(),
            sha: Sha256::new(),
            size: 0,
        });
        Ok(())
    }

    /// Closes the open entry with its data descriptor.
    pub fn end(&mut self) -> io::Result<EntryDone> {
        let open = self.open.take().ok_or_else(not_open)?;
        let crc = open.crc.finalize();
        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&DATA_DESCRIPTOR.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        if open.size >= u32::MAX as u64 {
            // ZIP64 descriptor: 8-byte sizes (the central directory carries them too).
            d.extend_from_slice(&open.size.to_le_bytes());
            d.extend_from_slice(&open.size.to_le_bytes());
        } else {
            d.extend_from_slice(&(open.size as u32).to_le_bytes());
            d.extend_from_slice(&(open.size as u32).to_le_bytes());
        }
        self.emit(&d)?;
        let done = EntryDone {
            bytes: open.size,
            sha256: hex::encode(open.sha.finalize()),
        };
        self.entries.push(Central {
            name: open.name,
            offset: open.offset,
            crc,
            size: open.size,
        });
        Ok(done)
    }

    /// One whole entry from memory.
    pub fn put(&mut self, name: &str, content: &[u8]) -> io::Result<EntryDone> {
        self.begin(name)?;
        self.write_all(content)?;
        self.end()
    }

    /// Writes the central directory and the end records; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.open.is_some() {
            return Err(io::Error::other("a ZIP entry is still open"));
        }
        let cd_start = self.at;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let big_size = e.size >= u32::MAX as u64;
            let big_offset = e.offset >= u32::MAX as u64;
            let mut extra = Vec::new();
            if big_size || big_offset {
                let mut body = Vec::new();
                if big_size {
                    body.extend_from_slice(&e.size.to_le_bytes());
                    body.extend_from_slice(&e.size.to_le_bytes());
                }
                if big_offset {
                    body.extend_from_slice(&e.offset.to_le_bytes());
                }
                extra.extend_from_slice(&1u16.to_le_bytes());
                extra.extend_from_slice(&(body.len() as u16).to_le_bytes());
                extra.extend_from_slice(&body);
            }
            let size32 = if big_size { u32::MAX } else { e.size as u32 };
            let offset32 = if big_offset {
                u32::MAX
            } else {
                e.offset as u32
            };
            let mut c = Vec::with_capacity(46 + e.name.len() + extra.len());
            c.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
            c.extend_from_slice(&VERSION_MADE_BY.to_le_bytes());
            c.extend_from_slice(
                &(if extra.is_empty() {
                    VERSION_NEEDED
                } else {
                    VERSION_NEEDED_ZIP64
                })
                .to_le_bytes(),
            );
            c.extend_from_slice(&FLAGS.to_le_bytes());
            c.extend_from_slice(&0u16.to_le_bytes());
            c.extend_from_slice(&self.dos_time.to_le_bytes());
            c.extend_from_slice(&self.dos_date.to_le_bytes());
            c.extend_from_slice(&e.crc.to_le_bytes());
            c.extend_from_slice(&size32.to_le_bytes());
            c.extend_from_slice(&size32.to_le_bytes());
            c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            c.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            c.extend_from_slice(&0u16.to_le_bytes()); // comment
            c.extend_from_slice(&0u16.to_le_bytes()); // disk
            c.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            c.extend_from_slice(&EXTERNAL_ATTRS.to_le_bytes());
            c.extend_from_slice(&offset32.to_le_bytes());
            c.extend_from_slice(e.name.as_bytes());
            c.extend_from_slice(&extra);
            self.emit(&c)?;
        }
        let cd_size = self.at - cd_start;
        let count = entries.len() as u64;
        let zip64 =
            count >= u16::MAX as u64 || cd_start >= u32::MAX as u64 || cd_size >= u32::MAX as u64;
        if zip64 {
            let record_at = self.at;
            let mut z = Vec::with_capacity(56 + 20);
            z.extend_from_slice(&ZIP64_END.to_le_bytes());
            z.extend_from_slice(&44u64.to_le_bytes());
            z.extend_from_slice(&VERSION_MADE_BY.to_le_bytes());
            z.extend_from_slice(&VERSION_NEEDED_ZIP64.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&count.to_le_bytes());
            z.extend_from_slice(&count.to_le_bytes());
            z.extend_from_slice(&cd_size.to_le_bytes());
            z.extend_from_slice(&cd_start.to_le_bytes());
            z.extend_from_slice(&ZIP64_LOCATOR.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&record_at.to_le_bytes());
            z.extend_from_slice(&1u32.to_le_bytes());
            self.emit(&z)?;
        }
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&END_OF_CENTRAL.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        let count16 = count.min(u16::MAX as u64) as u16;
        end.extend_from_slice(&count16.to_le_bytes());
        end.extend_from_slice(&count16.to_le_bytes());
        end.extend_from_slice(&(cd_size.min(u32::MAX as u64) as u32).to_le_bytes());
        end.extend_from_slice(&(cd_start.min(u32::MAX as u64) as u32).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.emit(&end)?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ZipStream<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let open = self.open.as_mut().ok_or_else(not_open)?;
        open.crc.update(data);
        open.sha.update(data);
        open.size += data.len() as u64;
        self.out.write_all(data)?;
        self.at += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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
        let mut content = Vec::new();
        archive
            .by_name("workflows/x/runs/é.parquet")
            .expect("entry")
            .read_to_end(&mut content)
            .expect("reads, CRC checked");
        assert_eq!(content, big);
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
