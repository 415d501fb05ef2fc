//! Turns validated rows into COPY text and hands it on in batches of bounded size.

use std::collections::HashMap;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::values::{self, NULL};
use crate::domain::schema::{Field, printable};

/// Where a row came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub enum Loc {
    Line(u64),
    Element { index: u64, line: u64 },
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loc::Line(n) => write!(f, "line {n}"),
            Loc::Element { index, line } => write!(f, "line {line} (array element {index})"),
        }
    }
}

/// Why a run is rejected. Every variant names where, so a client can fix its input.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("{0}")]
    Bad(String),
    /// The consumer went away (the COPY failed or the request ended); not the row's fault.
    #[error("ingest aborted")]
    Aborted,
}

impl RowError {
    pub fn at(loc: Loc, msg: impl std::fmt::Display) -> Self {
        RowError::Bad(format!("{loc}: {msg}"))
    }
    fn field(loc: Loc, field: &str, msg: impl std::fmt::Display) -> Self {
        RowError::Bad(format!("{loc}: field \"{}\": {msg}", printable(field)))
    }
}

const BATCH_BYTES: usize = 256 * 1024;

pub struct RowWriter<'a> {
    fields: &'a [Field],
    by_name: HashMap<&'a str, usize>,
    run_id: String,
    next_id: i64,
    rows: u64,
    buf: Vec<u8>,
    out: mpsc::Sender<Vec<u8>>,
}

impl<'a> RowWriter<'a> {
    pub fn new(
        fields: &'a [Field],
        run_id: uuid::Uuid,
        first_id: i64,
        out: mpsc::Sender<Vec<u8>>,
    ) -> Self {
        let by_name = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        RowWriter {
            fields,
            by_name,
            run_id: run_id.to_string(),
            next_id: first_id,
            rows: 0,
            buf: Vec::with_capacity(BATCH_BYTES + 64 * 1024),
            out,
        }
    }

    pub fn fields(&self) -> &'a [Field] {
        self.fields
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// One row given as a JSON object (NDJSON line or JSON array element).
    pub fn write_object(&mut self, loc: Loc, obj: &Map<String, Value>) -> Result<(), RowError> {
        let mut slots: Vec<Option<&Value>> = vec![None; self.fields.len()];
        for (key, value) in obj {
            let idx = self.field_index(key).ok_or_else(|| {
                RowError::field(loc, key, "unknown field (not in the workflow's schema)")
            })?;
            slots[idx] = Some(value).filter(|v| !v.is_null());
        }
        let start = self.begin_row();
        for (field, slot) in self.fields.iter().zip(slots) {
            self.buf.push(b'\t');
            let res = match slot {
                Some(v) => values::push_json_value(&mut self.buf, field.field_type, v),
                None => self.push_null(field),
            };
            if let Err(msg) = res {
                self.buf.truncate(start);
                return Err(RowError::field(loc, &field.name, msg));
            }
        }
        self.end_row()
    }

    /// One CSV record; `columns[i]` is the schema index of CSV column i.
    pub fn write_cells(
        &mut self,
        loc: Loc,
        columns: &[usize],
        cells: &csv::StringRecord,
    ) -> Result<(), RowError> {
        let mut slots: Vec<Option<&str>> = vec![None; self.fields.len()];
        for (cell, idx) in cells.iter().zip(columns) {
            slots[*idx] = Some(cell).filter(|c| !c.is_empty());
        }
        let start = self.begin_row();
        for (field, slot) in self.fields.iter().zip(slots) {
            self.buf.push(b'\t');
            let res = match slot {
                Some(s) => values::push_csv_value(&mut self.buf, field.field_type, s),
                None => self.push_null(field),
            };
            if let Err(msg) = res {
                self.buf.truncate(start);
                return Err(RowError::field(loc, &field.name, msg));
            }
        }
        self.end_row()
    }

    fn push_null(&mut self, field: &Field) -> Result<(), String> {
        if !field.nullable {
            return Err("required (the field is not nullable) but missing or null".into());
        }
        self.buf.extend_from_slice(NULL);
        Ok(())
    }

    fn begin_row(&mut self) -> usize {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(self.next_id.to_string().as_bytes());
        self.buf.push(b'\t');
        self.buf.extend_from_slice(self.run_id.as_bytes());
        start
    }

    fn end_row(&mut self) -> Result<(), RowError> {
        self.buf.push(b'\n');
        self.next_id += 1;
        self.rows += 1;
        if self.buf.len() >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RowError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH_BYTES + 64 * 1024));
        self.out.blocking_send(batch).map_err(|_| RowError::Aborted)
    }

    /// Sends what is buffered and returns the number of rows written.
    pub fn finish(mut self) -> Result<u64, RowError> {
        self.flush()?;
        Ok(self.rows)
    }
}
