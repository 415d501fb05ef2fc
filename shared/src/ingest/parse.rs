//! The three body formats of a run, parsed incrementally from a blocking reader.

use std::fmt;
use std::io::{BufRead, BufReader, Read};

use std::cell::Cell;
use std::rc::Rc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::writer::{Loc, RowError, RowWriter};
use crate::domain::schema::printable;

pub fn ndjson(reader: impl Read, w: &mut RowWriter<'_>) -> Result<(), RowError> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut line = Vec::with_capacity(4096);
    let mut n: u64 = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|_| RowError::Aborted)?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let obj: Map<String, Value> = serde_json::from_slice(&line).map_err(|e| {
            if e.is_data() {
                RowError::at(Loc::Line(n), "expected a JSON object")
            } else {
                RowError::at(
                    Loc::Line(n),
                    format!("invalid JSON at column {}", e.column()),
                )
            }
        })?;
        w.write_object(Loc::Line(n), &obj)?;
    }
}

pub fn csv(reader: impl Read, w: &mut RowWriter<'_>) -> Result<(), RowError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .buffer_capacity(256 * 1024)
        .from_reader(reader);
    let columns = header_columns(&mut rdr, w)?;
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                w.write_cells(Loc::Line(line), &columns, &record)?;
            }
            Err(e) => return Err(csv_error(e)),
        }
    }
}

fn header_columns<R: Read>(
    rdr: &mut csv::Reader<R>,
    w: &RowWriter<'_>,
) -> Result<Vec<usize>, RowError> {
    let headers = rdr.headers().map_err(csv_error)?.clone();
    if headers.is_empty() || (headers.len() == 1 && headers.get(0) == Some("")) {
        return Err(RowError::at(
            Loc::Line(1),
            "a CSV body must start with a header row naming the fields",
        ));
    }
    let mut columns = Vec::with_capacity(headers.len());
    for name in headers.iter() {
        let name = name.trim_start_matches('\u{feff}');
        let idx = w.field_index(name).ok_or_else(|| {
            RowError::at(
                Loc::Line(1),
                format!(
                    "field \"{}\": unknown field (not in the workflow's schema)",
                    printable(name)
                ),
            )
        })?;
        if columns.contains(&idx) {
            return Err(RowError::at(
                Loc::Line(1),
                format!("field \"{}\": named twice in the header", printable(name)),
            ));
        }
        columns.push(idx);
    }
    if let Some(missing) = w
        .fields()
        .iter()
        .enumerate()
        .find(|(i, f)| !f.nullable && !columns.contains(i))
    {
        return Err(RowError::at(
            Loc::Line(1),
            format!(
                "field \"{}\": required (the field is not nullable) but the header lacks it",
                missing.1.name
            ),
        ));
    }
    Ok(columns)
}

fn csv_error(e: csv::Error) -> RowError {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => RowError::at(
            Loc::Line(line),
            format!("expected {expected_len} fields as in the header, found {len}"),
        ),
        csv::ErrorKind::Utf8 { .. } => RowError::at(Loc::Line(line), "invalid UTF-8"),
        csv::ErrorKind::Io(_) => RowError::Aborted,
        _ => RowError::at(Loc::Line(line), "malformed CSV"),
    }
}

/// A JSON array of objects, one element at a time: the array is never held whole.
pub fn json_array(reader: impl Read, w: &mut RowWriter<'_>) -> Result<(), RowError> {
    let lines = Rc::new(Cell::new(1u64));
    let counter = LineCounter {
        inner: BufReader::with_capacity(256 * 1024, reader),
        lines: lines.clone(),
    };
    let mut de = serde_json::Deserializer::from_reader(counter);
    let mut failure: Option<RowError> = None;
    let res = de.deserialize_seq(ElementsVisitor {
        w,
        failure: &mut failure,
        lines,
    });
    if let Some(f) = failure {
        return Err(f);
    }
    res.and_then(|()| de.end()).map_err(|e| {
        let line = Loc::Line(e.line() as u64);
        if e.is_io() {
            RowError::Aborted
        } else if e.is_data() {
            RowError::at(line, "a JSON body must be an array of objects")
        } else if e.is_eof() {
            RowError::at(line, "the JSON array ends too early")
        } else {
            RowError::at(line, format!("invalid JSON at column {}", e.column()))
        }
    })
}

/// Counts the lines the JSON parser has read, so a bad element can be located.
struct LineCounter<R> {
    inner: R,
    lines: Rc<Cell<u64>>,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let newlines = buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        self.lines.set(self.lines.get() + newlines);
        Ok(n)
    }
}

struct ElementsVisitor<'w, 'a> {
    w: &'w mut RowWriter<'a>,
    failure: &'w mut Option<RowError>,
    lines: Rc<Cell<u64>>,
}

impl<'de> Visitor<'de> for ElementsVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0u64;
        while let Some(value) = seq.next_element::<Value>()? {
            index += 1;
            let loc = Loc::Element {
                index,
                line: self.lines.get(),
            };
            let res = match &value {
                Value::Object(obj) => self.w.write_object(loc, obj),
                _ => Err(RowError::at(loc, "expected a JSON object")),
            };
            if let Err(e) = res {
                *self.failure = Some(e);
                return Err(de::Error::custom("row rejected"));
            }
        }
        Ok(())
    }
}
