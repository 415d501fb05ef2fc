//! NDJSON: one object a line, each line read whole but never past the row limit.

use std::io::{self, BufRead, BufReader, Read};

use serde::Deserializer;
use serde_json::value::RawValue;

use super::{READ_BUFFER, RowVisitor};
use crate::ingest::writer::{Loc, RowError, RowWriter};

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
