//! CSV with a header row naming the fields, in any order; a row past the limit stops the read.

use std::io::Read;

use super::{Budget, READ_BUFFER};
use crate::domain::schema::printable;
use crate::ingest::writer::{Loc, RowError, RowWriter};

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
        let idx = column_of(w, name.trim_start_matches('\u{feff}'), &columns)?;
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

/// The schema slot a header names, once.
fn column_of(w: &RowWriter<'_>, name: &str, columns: &[usize]) -> Result<usize, RowError> {
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
    Ok(idx)
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
