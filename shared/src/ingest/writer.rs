//! Turns validated rows into binary COPY tuples and hands them on in batches of bounded size.
//! The stream's header and trailer are `COPY_HEADER` and `COPY_TRAILER`, sent by the COPY's
//! owner (`repo::runs::copy_run`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::values::{self, NULL};
use crate::domain::schema::{Field, FieldType, printable};

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
    /// One row is larger than `WHARF_MAX_ROW_BYTES`.
    #[error("{loc}: a row is larger than the limit of {limit} bytes (WHARF_MAX_ROW_BYTES)")]
    TooLarge { loc: Loc, limit: usize },
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

/// Binary COPY's signature, flags and header-extension length.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A field count of -1 ends the stream.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];
/// Where a tuple's `_id` value starts: after the field count (2) and its length (4).
const ID_AT: usize = 6;

/// PostgreSQL's largest heap tuple (8 KiB pages): a row wider than this after compression and
/// out-of-line storage is "row is too big".
const MAX_TUPLE: usize = 8160;
/// Tuple header, `_id` and `run_id`.
const TUPLE_BASE: usize = 24 + 8 + 16;
/// An out-of-line (TOAST) pointer, and the least a compressed inline value can take.
const TOAST_POINTER: usize = 18;
const MIN_COMPRESSED: usize = 10;

/// Rows that might be too wide for PostgreSQL (it depends on how well they compress): their
/// COPY line (1-based row of the run) → where they came from, so a refusal can name the line.
pub type WideRows = Arc<Mutex<HashMap<u64, Loc>>>;

/// Asks for the run's first `_id` (which takes the workflow's lock) only once the first batch
/// is ready, so an upload holds no database connection while its first rows trickle in.
pub struct FirstId {
    pub ask: Option<oneshot::Sender<()>>,
    pub answer: oneshot::Receiver<i64>,
}

pub struct RowWriter<'a> {
    fields: &'a [Field],
    by_name: HashMap<&'a str, usize>,
    run_id: [u8; 16],
    first_id: Option<FirstId>,
    next_id: i64,
    rows: u64,
    buf: Vec<u8>,
    /// Until the first id is known: where each buffered row starts (rows lack their `_id`).
    pending: Vec<usize>,
    out: mpsc::Sender<Vec<u8>>,
    pub wide: WideRows,
}

impl<'a> RowWriter<'a> {
    pub fn new(
        fields: &'a [Field],
        run_id: uuid::Uuid,
        first_id: FirstId,
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
            run_id: *run_id.as_bytes(),
            first_id: Some(first_id),
            next_id: 0,
            rows: 0,
            buf: Vec::with_capacity(BATCH_BYTES + 64 * 1024),
            pending: Vec::new(),
            out,
            wide: WideRows::default(),
        }
    }

    pub fn fields(&self) -> &'a [Field] {
        self.fields
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// One row given as JSON values (an NDJSON line or a JSON array element), by schema slot.
    pub fn write_raw<T>(&mut self, loc: Loc, slots: &[Option<T>]) -> Result<(), RowError>
    where
        T: std::ops::Deref<Target = RawValue>,
    {
        let start = self.begin_row();
        let mut width = TuplWidth::default();
        for (field, slot) in self.fields.iter().zip(slots) {
            let before = self.buf.len();
            let res = match slot.as_deref().map(RawValue::get) {
                Some(raw) if raw != "null" => {
                    values::push_raw_value(&mut self.buf, field.field_type, raw)
                }
                _ => self.push_null(field),
            };
            if let Err(msg) = res {
                self.buf.truncate(start);
                return Err(RowError::field(loc, &field.name, msg));
            }
            width.add(field.field_type, &self.buf[before..]);
        }
        self.end_row(loc, start, width)
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
            // An empty cell is a null; so is a json cell reading `null`.
            let null = cell.is_empty()
                || (self.fields[*idx].field_type == FieldType::Json && cell.trim() == "null");
            slots[*idx] = Some(cell).filter(|_| !null);
        }
        let start = self.begin_row();
        let mut width = TuplWidth::default();
        for (field, slot) in self.fields.iter().zip(slots) {
            let before = self.buf.len();
            let res = match slot {
                Some(s) => values::push_csv_value(&mut self.buf, field.field_type, s),
                None => self.push_null(field),
            };
            if let Err(msg) = res {
                self.buf.truncate(start);
                return Err(RowError::field(loc, &field.name, msg));
            }
            width.add(field.field_type, &self.buf[before..]);
        }
        self.end_row(loc, start, width)
    }

    fn push_null(&mut self, field: &Field) -> Result<(), String> {
        if !field.nullable {
            return Err("required (the field is not nullable) but missing or null".into());
        }
        self.buf.extend_from_slice(NULL);
        Ok(())
    }

    /// Starts a tuple: its field count, `_id` (zero while the first id is not known yet: it is
    /// written in place once it is) and `run_id`.
    fn begin_row(&mut self) -> usize {
        let start = self.buf.len();
        let count = (self.fields.len() + 2) as i16;
        self.buf.extend_from_slice(&count.to_be_bytes());
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        if self.first_id.is_none() {
            self.buf.extend_from_slice(&self.next_id.to_be_bytes());
        } else {
            self.pending.push(start);
            self.buf.extend_from_slice(&[0; 8]);
        }
        self.buf.extend_from_slice(&16i32.to_be_bytes());
        self.buf.extend_from_slice(&self.run_id);
        start
    }

    fn end_row(&mut self, loc: Loc, start: usize, width: TuplWidth) -> Result<(), RowError> {
        let row = self.rows + 1;
        if width.least > MAX_TUPLE {
            self.buf.truncate(start);
            return Err(RowError::at(
                loc,
                format!(
                    "the row is too wide to store: at least {} bytes after compression and \
                     out-of-line storage, over PostgreSQL's {MAX_TUPLE}-byte row limit \
                     (too many long text or json fields)",
                    width.least
                ),
            ));
        }
        if width.likely > MAX_TUPLE
            && let Ok(mut wide) = self.wide.lock()
        {
            wide.insert(row, loc);
        }
        self.next_id += 1;
        self.rows = row;
        if self.buf.len() >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Learns the first `_id` (once) and writes it into the rows buffered without one.
    fn number_pending(&mut self) -> Result<(), RowError> {
        let Some(FirstId { ask, answer }) = self.first_id.take() else {
            return Ok(());
        };
        if let Some(ask) = ask {
            ask.send(()).map_err(|_| RowError::Aborted)?;
        }
        let first = answer.blocking_recv().map_err(|_| RowError::Aborted)?;
        let starts = std::mem::take(&mut self.pending);
        for (i, start) in starts.iter().enumerate() {
            let id = (first + i as i64).to_be_bytes();
            self.buf[start + ID_AT..start + ID_AT + 8].copy_from_slice(&id);
        }
        self.next_id = first + starts.len() as i64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RowError> {
        self.number_pending()?;
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

/// What a row will take in a PostgreSQL heap tuple: `least` if every long value compresses
/// very well, `likely` if none does (each long value then leaves an 18-byte TOAST pointer).
struct TuplWidth {
    least: usize,
    likely: usize,
}

impl Default for TuplWidth {
    fn default() -> Self {
        TuplWidth {
            least: TUPLE_BASE,
            likely: TUPLE_BASE,
        }
    }
}

impl TuplWidth {
    /// `field`: one binary COPY field, its length included.
    fn add(&mut self, ty: FieldType, field: &[u8]) {
        if field == NULL {
            return;
        }
        let value = field.len().saturating_sub(4);
        let (least, likely) = match ty {
            FieldType::Integer | FieldType::Number | FieldType::Timestamp => (8, 8),
            FieldType::Boolean => (1, 1),
            FieldType::String | FieldType::Json => {
                let len = value + if value < 127 { 1 } else { 4 };
                (len.min(MIN_COMPRESSED), len.min(TOAST_POINTER))
            }
        };
        self.least += least;
        self.likely += likely;
    }
}
