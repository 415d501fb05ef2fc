//! Parquet from binary COPY tuples: typed Arrow columns (timestamps as UTC microseconds, json
//! fields as their JSON text), row groups of ~128k rows so dictionaries do not restart often.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::Encoder;
use crate::domain::export::Compression;
use crate::domain::schema::FieldType;
use crate::error::{Error, Result};
use crate::export::binary::{bool_of, f64_of, i64_of, jsonb_of, str_of, timestamp_of};
use crate::export::sink::ChunkSink;
use crate::repo::export_query::OutColumn;

pub const ROW_GROUP_ROWS: usize = 128 * 1024;
const BATCH_ROWS: usize = 16 * 1024;

enum Col {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Time(TimestampMicrosecondBuilder),
}

pub struct ParquetWriter<W: Write + Send = ChunkSink> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    cols: Vec<Col>,
    json: Vec<bool>,
    pending: usize,
}

fn pq(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Unexpected(anyhow::Error::new(e))
}

pub fn arrow_schema(columns: &[OutColumn]) -> SchemaRef {
    let fields: Vec<ArrowField> = columns
        .iter()
        .map(|c| {
            let dt = match c.field_type {
                None | Some(FieldType::Integer) => DataType::Int64,
                Some(FieldType::Number) => DataType::Float64,
                Some(FieldType::Boolean) => DataType::Boolean,
                Some(FieldType::String | FieldType::Json) => DataType::Utf8,
                Some(FieldType::Timestamp) => {
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                }
            };
            let f = ArrowField::new(&c.name, dt, c.nullable);
            if c.field_type == Some(FieldType::Json) {
                f.with_metadata(std::collections::HashMap::from([(
                    "wharf.type".to_string(),
                    "json".to_string(),
                )]))
            } else {
                f
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(sink: W, columns: &[OutColumn], compression: Compression) -> Result<Self> {
        let schema = arrow_schema(columns);
        let codec = match compression {
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::None => PqCompression::UNCOMPRESSED,
            _ => PqCompression::ZSTD(ZstdLevel::default()),
        };
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by("wharf".into())
            .build();
        let writer = ArrowWriter::try_new(sink, schema.clone(), Some(props)).map_err(pq)?;
        let mut w = ParquetWriter {
            writer,
            schema,
            cols: Vec::new(),
            json: Vec::new(),
            pending: 0,
        };
        w.json = columns
            .iter()
            .map(|c| c.field_type == Some(FieldType::Json))
            .collect();
        w.cols = w.fresh_builders();
        Ok(w)
    }

    fn fresh_builders(&self) -> Vec<Col> {
        self.schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int64 => Col::Int(Int64Builder::with_capacity(BATCH_ROWS)),
                DataType::Float64 => Col::Float(Float64Builder::with_capacity(BATCH_ROWS)),
                DataType::Boolean => Col::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
                DataType::Timestamp(..) => Col::Time(
                    TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC"),
                ),
                _ => Col::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16)),
            })
            .collect()
    }

    pub fn row(&mut self, buf: &[u8], fields: &[Option<(usize, usize)>]) -> Result<()> {
        for (i, field) in fields.iter().enumerate() {
            let v = field.map(|(o, l)| &buf[o..o + l]);
            match (&mut self.cols[i], v) {
                (Col::Int(b), Some(v)) => b.append_value(i64_of(v)?),
                (Col::Int(b), None) => b.append_null(),
                (Col::Float(b), Some(v)) => b.append_value(f64_of(v)?),
                (Col::Float(b), None) => b.append_null(),
                (Col::Bool(b), Some(v)) => b.append_value(bool_of(v)?),
                (Col::Bool(b), None) => b.append_null(),
                (Col::Time(b), Some(v)) => b.append_value(timestamp_of(v)?),
                (Col::Time(b), None) => b.append_null(),
                (Col::Text(b), Some(v)) => b.append_value(if self.json[i] {
                    jsonb_of(v)?
                } else {
                    str_of(v)?
                }),
                (Col::Text(b), None) => b.append_null(),
            }
        }
        self.pending += 1;
        if self.pending >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Col::Int(b) => Arc::new(b.finish()),
                    Col::Float(b) => Arc::new(b.finish()),
                    Col::Bool(b) => Arc::new(b.finish()),
                    Col::Text(b) => Arc::new(b.finish()),
                    Col::Time(b) => Arc::new(b.finish().with_timezone("UTC")),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(pq)?;
        self.writer.write(&batch).map_err(pq)?;
        self.pending = 0;
        Ok(())
    }

    /// Writes the last batch and the footer; returns the output.
    pub fn close(mut self) -> Result<W> {
        if self.pending > 0 {
            self.flush_batch()?;
        }
        self.writer.into_inner().map_err(pq)
    }
}

/// The registry's constructor.
pub(super) fn encoder(
    sink: ChunkSink,
    columns: &[OutColumn],
    compression: Compression,
) -> Result<Box<dyn Encoder>> {
    Ok(Box::new(ParquetWriter::new(sink, columns, compression)?))
}

impl Encoder for ParquetWriter<ChunkSink> {
    fn row(&mut self, buf: &[u8], fields: &[Option<(usize, usize)>]) -> Result<()> {
        ParquetWriter::row(self, buf, fields)
    }
    fn finish(self: Box<Self>) -> Result<u64> {
        (*self)
            .close()?
            .finish()
            .map_err(|e| Error::Unexpected(e.into()))
    }
}
