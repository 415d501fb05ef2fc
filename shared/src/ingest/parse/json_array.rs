//! A JSON array of objects, read one element at a time.

use std::fmt;
use std::io::{BufReader, Read};

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Budget, READ_BUFFER, RowVisitor};
use crate::ingest::writer::{Loc, RowError, RowWriter};

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

struct ElementsVisitor<'w, 'a, 'b> {
    w: &'w mut RowWriter<'a>,
    failure: &'w mut Option<RowError>,
    budget: &'b Budget,
    max_row: usize,
}

impl ElementsVisitor<'_, '_, '_> {
    /// Why an element was refused, as the row error to answer; `None`: a JSON error that is
    /// the whole body's, not this row's.
    fn rejected<E: de::Error>(&self, e: &E, loc: Loc) -> Option<RowError> {
        let msg = e.to_string();
        Some(if self.budget.exceeded() {
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
            return None;
        })
    }
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
                    *self.failure = Some(self.rejected(&e, loc).ok_or(e)?);
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
