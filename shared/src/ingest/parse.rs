//! The three body formats of a run, parsed incrementally from a blocking reader. No row may
//! be larger than `max_row` bytes: each parser stops reading a row that grows past it, so
//! memory is bounded by the row limit, never by the body.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::writer::{Loc, RowError, RowWriter};
use crate::domain::schema::printable;

const READ_BUFFER: usize = 256 * 1024;

pub fn ndjson(reader: impl Read, w: &mut RowWriter<'_>, max_row: usize) -> Result<(), RowError> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut line = Vec::with_capacity(4096);
    let mut n: u64 = 0;
    loop {
        line.clear();
        n += 1;
        match read_line(&mut reader, &mut line, max_row) {
            Err(_) => return Err(RowError::Aborted),
            Ok(Line::TooLong) => {
                return Err(RowError::TooLarge {
                    loc: Loc::Line(n),
                    limit: max_row,
                });
            }
            Ok(Line::End) => return Ok(()),
            Ok(Line::Read) => {}
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut slots: Vec<Option<&RawValue>> = vec![None; w.fields().len()];
        let mut de = serde_json::Deserializer::from_slice(&line);
        let parsed = de
            .deserialize_map(RowVisitor {
                w: &*w,
                slots: &mut slots,
            })
            .and_then(|()| de.end());
        if let Err(e) = parsed {
            return Err(RowError::at(Loc::Line(n), line_error(&e)));
        }
        w.write_raw(Loc::Line(n), &slots)?;
    }
}

fn line_error(e: &serde_json::Error) -> String {
    if e.to_string().starts_with("invalid type") {
        return "expected a JSON object".into();
    }
    if e.is_syntax() || e.is_eof() {
        if e.to_string().starts_with("recursion limit") {
            return crate::json::describe(e);
        }
        return format!("invalid JSON at column {}", e.column());
    }
    crate::json::describe(e)
}

enum Line {
    Read,
    End,
    TooLong,
}

/// One line into `line` (newline included), refusing to hold more than `max` bytes of it.
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(if line.is_empty() {
                Line::End
            } else {
                Line::Read
            });
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let content = line.len() + take - usize::from(done);
        if content > max {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(Line::Read);
        }
    }
}

/// One JSON object → the raw value of each schema field, by slot. An unknown field or a key
/// given twice is an error naming it.
struct RowVisitor<'s, 'a, T> {
    w: &'s RowWriter<'a>,
    slots: &'s mut Vec<Option<T>>,
}

impl<'de, T: de::Deserialize<'de>> Visitor<'de> for RowVisitor<'_, '_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(idx) = map.next_key_seed(FieldKey { w: self.w })? {
            let value: T = map.next_value()?;
            let slot = &mut self.slots[idx];
            if slot.is_some() {
                return Err(de::Error::custom(format!(
                    "field \"{}\": given twice in the object",
                    self.w.fields()[idx].name
                )));
            }
            *slot = Some(value);
        }
        Ok(())
    }
}

/// A key of a row object, resolved to its schema slot without allocating.
struct FieldKey<'s, 'a> {
    w: &'s RowWriter<'a>,
}

impl<'de> DeserializeSeed<'de> for FieldKey<'_, '_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldKey<'_, '_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        self.w.field_index(key).ok_or_else(|| {
            E::custom(format!(
                "field \"{}\": unknown field (not in the workflow's schema)",
                printable(key)
            ))
        })
    }
}

pub fn csv(reader: impl Read, w: &mut RowWriter<'_>, max_row: usize) -> Result<(), RowError> {
    let budget = Budget::new(max_row + 2 * READ_BUFFER);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .buffer_capacity(READ_BUFFER)
        .from_reader(budget.wrap(reader));
    let columns = header_columns(&mut rdr, w)?;
    let mut record = csv::StringRecord::new();
    loop {
        budget.mark();
        match rdr.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                let size = record.as_byte_record().as_slice().len() + record.len();
                if size > max_row {
                    return Err(RowError::TooLarge {
                        loc: Loc::Line(line),
                        limit: max_row,
                    });
                }
                w.write_cells(Loc::Line(line), &columns, &record)?;
            }
            Err(_) if budget.exceeded() => {
                return Err(RowError::TooLarge {
                    loc: Loc::Line(rdr.position().line()),
                    limit: max_row,
                });
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

/// A JSON array of objects, one element at a time: the array is never held whole, and no
/// element may be larger than `max_row` bytes.
pub fn json_array(
    reader: impl Read,
    w: &mut RowWriter<'_>,
    max_row: usize,
) -> Result<(), RowError> {
    let budget = Budget::new(max_row);
    let counter = budget.wrap(BufReader::with_capacity(READ_BUFFER, reader));
    let mut de = serde_json::Deserializer::from_reader(counter);
    let mut failure: Option<RowError> = None;
    let res = de.deserialize_seq(ElementsVisitor {
        w,
        failure: &mut failure,
        budget: &budget,
        max_row,
    });
    if let Some(f) = failure {
        return Err(f);
    }
    res.and_then(|()| de.end()).map_err(|e| {
        let line = Loc::Line(budget.lines());
        if budget.exceeded() {
            RowError::TooLarge {
                loc: line,
                limit: max_row,
            }
        } else if e.is_io() {
            RowError::Aborted
        } else if e.is_data() {
            RowError::at(line, "a JSON body must be an array of objects")
        } else if e.is_eof() {
            RowError::at(line, "the JSON array ends too early")
        } else if e.to_string().starts_with("recursion limit") {
            RowError::at(line, crate::json::describe(&e))
        } else {
            RowError::at(line, format!("invalid JSON at column {}", e.column()))
        }
    })
}

/// Counts what a parser reads (bytes, lines) and stops it once one row has read more than
/// the budget since its `mark`.
#[derive(Clone)]
struct Budget {
    limit: usize,
    read: Rc<Cell<usize>>,
    mark: Rc<Cell<usize>>,
    lines: Rc<Cell<u64>>,
    exceeded: Rc<Cell<bool>>,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Budget {
            limit,
            read: Rc::default(),
            mark: Rc::default(),
            lines: Rc::new(Cell::new(1)),
            exceeded: Rc::default(),
        }
    }
    fn wrap<R: Read>(&self, inner: R) -> Counted<R> {
        Counted {
            inner,
            budget: self.clone(),
        }
    }
    /// A row starts here.
    fn mark(&self) {
        self.mark.set(self.read.get());
    }
    fn exceeded(&self) -> bool {
        self.exceeded.get()
    }
    fn lines(&self) -> u64 {
        self.lines.get()
    }
}

struct Counted<R> {
    inner: R,
    budget: Budget,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let b = &self.budget;
        if b.read.get() - b.mark.get() > b.limit {
            b.exceeded.set(true);
            return Err(io::Error::other("row larger than the limit"));
        }
        let n = self.inner.read(buf)?;
        b.read.set(b.read.get() + n);
        let newlines = buf[..n].iter().filter(|c| **c == b'\n').count() as u64;
        b.lines.set(b.lines.get() + newlines);
        Ok(n)
    }
}

struct ElementsVisitor<'w, 'a, 'b> {
    w: &'w mut RowWriter<'a>,
    failure: &'w mut Option<RowError>,
    budget: &'b Budget,
    max_row: usize,
}

impl<'de> Visitor<'de> for ElementsVisitor<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0u64;
        let mut slots: Vec<Option<Box<RawValue>>> = Vec::new();
        loop {
            index += 1;
            self.budget.mark();
            slots.clear();
            slots.resize_with(self.w.fields().len(), || None);
            let seed = ElementSeed {
                w: self.w,
                slots: &mut slots,
            };
            let parsed = seq.next_element_seed(seed);
            // The line the element ended on (or was cut off at): the one it is on, for rows
            // on one line.
            let line = self.budget.lines();
            let loc = Loc::Element { index, line };
            let done = match parsed {
                Ok(None) => true,
                Ok(Some(())) => false,
                Err(e) => {
                    let msg = e.to_string();
                    *self.failure = Some(if self.budget.exceeded() {
                        RowError::TooLarge {
                            loc,
                            limit: self.max_row,
                        }
                    } else if msg.starts_with("invalid type") {
                        RowError::at(loc, "expected a JSON object")
                    } else if msg.starts_with("field \"") {
                        let msg = msg.rsplit_once(" at line ").map_or(msg.as_str(), |m| m.0);
                        RowError::at(loc, msg)
                    } else {
                        return Err(e);
                    });
                    return Err(de::Error::custom("row rejected"));
                }
            };
            if done {
                return Ok(());
            }
            if let Err(e) = self.w.write_raw(loc, &slots) {
                *self.failure = Some(e);
                return Err(de::Error::custom("row rejected"));
            }
        }
    }
}

struct ElementSeed<'s, 'a> {
    w: &'s RowWriter<'a>,
    slots: &'s mut Vec<Option<Box<RawValue>>>,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(RowVisitor {
            w: self.w,
            slots: self.slots,
        })
    }
}
