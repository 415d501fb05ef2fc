//! A run's Parquet file as binary COPY tuples, in batches, for the import's COPY.

use std::fs::File;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::schema::{Field, FieldType, printable};
use crate::domain::states::FailureCode;
use crate::error::{Error, Result};
use crate::ingest::values;

use super::*;

/// value as ingest does; sends batches of tuples; returns the rows sent.
/// Reads a verified run file into binary COPY tuples (`_id, run_id, c1..cn`), checking each
pub(super) fn run_tuples(
    run: &VerifiedRun,
    fields: &[Field],
    run_id: Uuid,
    first_id: i64,
    tx: &mpsc::Sender<Vec<u8>>,
) -> Result<u64> {
    let file = File::open(&run.path).map_err(|e| Error::Unexpected(e.into()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
        .map_err(|e| unreadable(&run.file, e))?;
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(&run.file, e))?;
        let buf = batch_tuples(
            &batch,
            fields,
            run_id,
            first_id + rows as i64,
            rows,
            &run.file,
        )?;
        rows += batch.num_rows() as u64;
        if tx.blocking_send(buf).is_err() {
            return Err(crate::export::stopped());
        }
    }
    Ok(rows)
}

pub(super) fn batch_tuples(
    batch: &RecordBatch,
    fields: &[Field],
    run_id: Uuid,
    first_id: i64,
    row_base: u64,
    file: &str,
) -> Result<Vec<u8>> {
    let width = (fields.len() + 2) as i16;
    let mut buf = Vec::with_capacity(batch.num_rows() * (16 + fields.len() * 12));
    let bad = |row: usize, field: &Field, why: String| {
        refuse(
            FailureCode::SchemaMismatch,
            format!(
                "{} row {}: field \"{}\": {why}",
                printable(file),
                row_base + row as u64 + 1,
                field.name
            ),
        )
    };
    for row in 0..batch.num_rows() {
        buf.extend_from_slice(&width.to_be_bytes());
        values::push_i64(&mut buf, first_id + row as i64);
        buf.extend_from_slice(&16i32.to_be_bytes());
        buf.extend_from_slice(run_id.as_bytes());
        for (i, f) in fields.iter().enumerate() {
            let col = batch.column(i + 1);
            if col.is_null(row) {
                if !f.nullable {
                    return Err(bad(row, f, "null in a field that is not nullable".into()));
                }
                buf.extend_from_slice(values::NULL);
                continue;
            }
            push_cell(&mut buf, f.field_type, col, row).map_err(|why| bad(row, f, why))?;
        }
    }
    Ok(buf)
}

/// One non-null cell of `col` as a binary COPY value of the field's type; the error says why
/// the column cannot hold that type.
fn push_cell(
    buf: &mut Vec<u8>,
    ty: FieldType,
    col: &dyn arrow_array::Array,
    row: usize,
) -> std::result::Result<(), String> {
    match ty {
        FieldType::Integer => col
            .as_primitive_opt::<Int64Type>()
            .map(|a| values::push_i64(buf, a.value(row)))
            .ok_or_else(|| "not an int64 column".to_string()),
        FieldType::Number => col
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| "not a double column".to_string())
            .and_then(|a| values::push_float(buf, a.value(row))),
        FieldType::Boolean => col
            .as_boolean_opt()
            .map(|a| values::push_bool(buf, a.value(row)))
            .ok_or_else(|| "not a boolean column".to_string()),
        FieldType::String => col
            .as_string_opt::<i32>()
            .ok_or_else(|| "not a string column".to_string())
            .and_then(|a| values::push_text(buf, a.value(row))),
        FieldType::Json => col
            .as_string_opt::<i32>()
            .ok_or_else(|| "not a string column".to_string())
            .and_then(|a| values::push_json_text(buf, a.value(row))),
        FieldType::Timestamp => col
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| "not a timestamp column".to_string())
            .and_then(|a| values::push_unix_micros(buf, a.value(row))),
    }
}
