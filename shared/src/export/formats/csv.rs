//! RFC 4180 CSV from binary COPY tuples: a header row, values verbatim, null as an empty
//! field and the empty string as `""`, quoting only where a field needs it.

use std::io::Write;

use super::Encoder;
use crate::domain::export::Compression;
use crate::domain::schema::FieldType;
use crate::error::{Error, Result};
use crate::export::binary::{jsonb_of, push_scalar, push_timestamp, str_of, timestamp_of};
use crate::export::sink::{ChunkSink, Output};
use crate::repo::export_query::OutColumn;

pub struct CsvWriter<W: Write = Output> {
    out: W,
    types: Vec<Option<FieldType>>,
    row: Vec<u8>,
    delimiter: u8,
}

/// The registry's constructor: comma-separated.
pub(super) fn encoder(
    sink: ChunkSink,
    columns: &[OutColumn],
    compression: Compression,
) -> Result<Box<dyn Encoder>> {
    with_delimiter(sink, columns, compression, b',')
}

/// CSV separated by `delimiter` (tsv is CSV with a tab).
pub(super) fn with_delimiter(
    sink: ChunkSink,
    columns: &[OutColumn],
    compression: Compression,
    delimiter: u8,
) -> Result<Box<dyn Encoder>> {
    let out = Output::new(sink, compression == Compression::Gzip);
    Ok(Box::new(CsvWriter::with_delimiter(
        out, columns, delimiter,
    )?))
}

impl Encoder for CsvWriter<Output> {
    fn row(&mut self, buf: &[u8], fields: &[Option<(usize, usize)>]) -> Result<()> {
        CsvWriter::row(self, buf, fields)
    }
    fn finish(self: Box<Self>) -> Result<u64> {
        (*self).close()?.finish().map_err(io)
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Unexpected(e.into())
}

/// Appends `s` as one CSV field: quoted when it holds the delimiter, a quote, CR or LF (each
/// quote doubled), `""` when empty, verbatim otherwise. Scanned with memchr (SIMD) and copied in
/// runs between quotes, not byte by byte: wide text fields are most of an export's bytes.
fn push_field(out: &mut Vec<u8>, s: &str, delimiter: u8) {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        out.extend_from_slice(b"\"\"");
    } else if memchr::memchr3(delimiter, b'"', b'\n', bytes).is_some()
        || memchr::memchr(b'\r', bytes).is_some()
    {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        let mut from = 0;
        for quote in memchr::memchr_iter(b'"', bytes) {
            out.extend_from_slice(&bytes[from..=quote]);
            out.push(b'"');
            from = quote + 1;
        }
        out.extend_from_slice(&bytes[from..]);
        out.push(b'"');
    } else {
        out.extend_from_slice(bytes);
    }
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W, columns: &[OutColumn]) -> Result<Self> {
        Self::with_delimiter(out, columns, b',')
    }

    /// A writer separating fields by `delimiter`; the header row's names are quoted as values
    /// are.
    pub fn with_delimiter(mut out: W, columns: &[OutColumn], delimiter: u8) -> Result<Self> {
        let mut header = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                header.push(delimiter);
            }
            push_field(&mut header, &c.name, delimiter);
        }
        header.push(b'\n');
        out.write_all(&header).map_err(io)?;
        Ok(CsvWriter {
            out,
            types: columns.iter().map(|c| c.field_type).collect(),
            row: Vec::with_capacity(128 * 1024),
            delimiter,
        })
    }

    pub fn row(&mut self, buf: &[u8], fields: &[Option<(usize, usize)>]) -> Result<()> {
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.row.push(self.delimiter);
            }
            let Some((off, len)) = *field else { continue };
            let v = &buf[off..off + len];
            match self.types[i] {
                None | Some(FieldType::Integer | FieldType::Number | FieldType::Boolean) => {
                    push_scalar(&mut self.row, self.types[i], v)?
                }
                Some(FieldType::Timestamp) => push_timestamp(&mut self.row, timestamp_of(v)?)?,
                Some(FieldType::String) => push_field(&mut self.row, str_of(v)?, self.delimiter),
                Some(FieldType::Json) => push_field(&mut self.row, jsonb_of(v)?, self.delimiter),
            }
        }
        self.row.push(b'\n');
        if self.row.len() >= 64 * 1024 {
            self.out.write_all(&self.row).map_err(io)?;
            self.row.clear();
        }
        Ok(())
    }

    /// Writes what is buffered; returns the output.
    pub fn close(mut self) -> Result<W> {
        self.out.write_all(&self.row).map_err(io)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::push_field;

    #[test]
    fn quotes_only_what_needs_it() {
        let mut out = Vec::new();
        for s in [
            "plain",
            "",
            "a,b",
            "say \"hi\"",
            "line\nbreak",
            "=SUM(A1)",
            "tab\there",
        ] {
            push_field(&mut out, s, b',');
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "plain|\"\"|\"a,b\"|\"say \"\"hi\"\"\"|\"line\nbreak\"|=SUM(A1)|tab\there|"
        );
    }

    #[test]
    fn every_field_reads_back_as_it_was_through_a_csv_reader() {
        let fields = [
            "\"",
            "\"\"",
            "\"a\"b\"",
            "ends with a quote\"",
            "cr\ronly",
            "crlf\r\n",
            ",",
            "ünï, \"cödé\"",
            "plain",
            " spaced ",
        ];
        let mut line = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            push_field(&mut line, f, b',');
        }
        line.push(b'\n');
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_slice());
        let record = reader
            .records()
            .next()
            .and_then(|r| r.ok())
            .expect("one record");
        let read: Vec<&str> = record.iter().collect();
        assert_eq!(read, fields);
    }
}
