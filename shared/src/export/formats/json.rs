//! JSON (one array) and NDJSON writers fed straight from binary COPY tuples: no intermediate
//! values, every selected field present on every row, null as `null`.

use std::io::Write;

use super::Encoder;
use crate::domain::export::Compression;
use crate::domain::schema::FieldType;
use crate::error::{Error, Result};
use crate::export::binary::{jsonb_of, push_scalar, push_timestamp, str_of, timestamp_of};
use crate::export::sink::{ChunkSink, Output};
use crate::repo::export_query::OutColumn;

pub struct JsonWriter<W: Write = Output> {
    out: W,
    keys: Vec<Vec<u8>>,
    types: Vec<Option<FieldType>>,
    row: Vec<u8>,
    array: bool,
    rows: u64,
}

fn io(e: std::io::Error) -> Error {
    Error::Unexpected(e.into())
}

impl<W: Write> JsonWriter<W> {
    pub fn new(out: W, columns: &[OutColumn], array: bool) -> Self {
        let keys = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut k = if i == 0 { b"{".to_vec() } else { b",".to_vec() };
                k.extend_from_slice(
                    serde_json::to_string(&c.name)
                        .unwrap_or_default()
                        .as_bytes(),
                );
                k.push(b':');
                k
            })
            .collect();
        JsonWriter {
            out,
            keys,
            types: columns.iter().map(|c| c.field_type).collect(),
            row: Vec::with_capacity(128 * 1024),
            array,
            rows: 0,
        }
    }

    pub fn row(&mut self, buf: &[u8], fields: &[Option<(usize, usize)>]) -> Result<()> {
        if self.array {
            self.row
                .extend_from_slice(if self.rows == 0 { b"[" } else { b",\n" });
        }
        for (i, field) in fields.iter().enumerate() {
            self.row.extend_from_slice(&self.keys[i]);
            let Some((off, len)) = *field else {
                self.row.extend_from_slice(b"null");
                continue;
            };
            let v = &buf[off..off + len];
            match self.types[i] {
                None | Some(FieldType::Integer | FieldType::Number | FieldType::Boolean) => {
                    push_scalar(&mut self.row, self.types[i], v)?
                }
                Some(FieldType::String) => {
                    serde_json::to_writer(&mut self.row, str_of(v)?)
                        .map_err(|e| Error::Unexpected(e.into()))?;
                }
                Some(FieldType::Timestamp) => {
                    self.row.push(b'"');
                    push_timestamp(&mut self.row, timestamp_of(v)?)?;
                    self.row.push(b'"');
                }
                Some(FieldType::Json) => self.row.extend_from_slice(jsonb_of(v)?.as_bytes()),
            }
        }
        self.row
            .extend_from_slice(if self.array { b"}" } else { b"}\n" });
        self.rows += 1;
        if self.row.len() >= 64 * 1024 {
            self.out.write_all(&self.row).map_err(io)?;
            self.row.clear();
        }
        Ok(())
    }

    /// Writes what is buffered and the array's end; returns the output.
    pub fn close(mut self) -> Result<W> {
        if self.array {
            self.row
                .extend_from_slice(if self.rows == 0 { b"[]\n" } else { b"]\n" });
        }
        self.out.write_all(&self.row).map_err(io)?;
        Ok(self.out)
    }
}

/// The registry's constructor for `json`: one array of objects.
pub(super) fn array_encoder(
    sink: ChunkSink,
    columns: &[OutColumn],
    compression: Compression,
) -> Result<Box<dyn Encoder>> {
    let out = Output::new(sink, compression == Compression::Gzip);
    Ok(Box::new(JsonWriter::new(out, columns, true)))
}

/// The registry's constructor for `ndjson`: one object a line.
pub(super) fn lines_encoder(
    sink: ChunkSink,
    columns: &[OutColumn],
    compression: Compression,
) -> Result<Box<dyn Encoder>> {
    let out = Output::new(sink, compression == Compression::Gzip);
    Ok(Box::new(JsonWriter::new(out, columns, false)))
}

impl Encoder for JsonWriter<Output> {
    fn row(&mut self, buf: &[u8], fields: &[Option<(usize, usize)>]) -> Result<()> {
        JsonWriter::row(self, buf, fields)
    }
    fn finish(self: Box<Self>) -> Result<u64> {
        (*self).close()?.finish().map_err(io)
    }
}
