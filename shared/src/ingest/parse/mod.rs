//! The three body formats of a run, parsed incrementally from a blocking reader. No row may
//! be larger than `max_row` bytes: each parser stops reading a row that grows past it, so
//! memory is bounded by the row limit, never by the body.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::writer::RowWriter;
use crate::domain::schema::printable;

mod csv_body;
mod json_array;
mod ndjson;

pub use self::csv_body::csv;
pub use self::json_array::json_array;
pub use self::ndjson::ndjson;

const READ_BUFFER: usize = 256 * 1024;

/// One JSON object → the raw value of each schema field, by slot. An unknown field or a key
/// given twice is an error naming it.
pub(super) struct RowVisitor<'s, 'a, T> {
    pub(super) w: &'s RowWriter<'a>,
    pub(super) slots: &'s mut Vec<Option<T>>,
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

/// Counts what a parser reads (bytes, lines) and stops it once one row has read more than
/// the budget since its `mark`.
#[derive(Clone)]
pub(super) struct Budget {
    limit: usize,
    read: Rc<Cell<usize>>,
    mark: Rc<Cell<usize>>,
    lines: Rc<Cell<u64>>,
    exceeded: Rc<Cell<bool>>,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Self {
        Budget {
            limit,
            read: Rc::default(),
            mark: Rc::default(),
            lines: Rc::new(Cell::new(1)),
            exceeded: Rc::default(),
        }
    }
    pub(super) fn wrap<R: Read>(&self, inner: R) -> Counted<R> {
        Counted {
            inner,
            budget: self.clone(),
        }
    }
    /// A row starts here.
    pub(super) fn mark(&self) {
        self.mark.set(self.read.get());
    }
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }
    pub(super) fn lines(&self) -> u64 {
        self.lines.get()
    }
}

pub(super) struct Counted<R> {
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
