//! Decoder of PostgreSQL's binary COPY format, fed chunk by chunk.

use crate::error::{Error, Result};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Accumulates COPY data and yields whole tuples as slices of their fields.
pub struct TupleReader {
    buf: Vec<u8>,
    pos: usize,
    header_done: bool,
    pub finished: bool,
}

fn corrupt(what: &str) -> Error {
    Error::Unexpected(anyhow::anyhow!("malformed binary COPY data: {what}"))
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Default for TupleReader {
    fn default() -> Self {
        Self::new()
    }
}

impl TupleReader {
    pub fn new() -> Self {
        TupleReader {
            buf: Vec::with_capacity(1 << 20),
            pos: 0,
            header_done: false,
            finished: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > (1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Calls `f` with each complete tuple's fields (None = NULL); returns tuples read.
    pub fn drain(
        &mut self,
        fields: &mut Vec<Option<(usize, usize)>>,
        mut f: impl FnMut(&[u8], &[Option<(usize, usize)>]) -> Result<()>,
    ) -> Result<u64> {
        if !self.header_done && !self.read_header()? {
            return Ok(0);
        }
        let mut n = 0;
        loop {
            let avail = &self.buf[self.pos..];
            if avail.len() < 2 {
                return Ok(n);
            }
            let count = be_i16(avail);
            if count == -1 {
                self.finished = true;
                self.pos += 2;
                return Ok(n);
            }
            let Some(len) = tuple_fields(avail, self.pos, count, fields) else {
                return Ok(n);
            };
            f(&self.buf, fields)?;
            self.pos += len;
            n += 1;
        }
    }

    /// Steps over the COPY header once it is all there; false: not yet.
    fn read_header(&mut self) -> Result<bool> {
        if self.buf.len() - self.pos < SIGNATURE.len() + 8 {
            return Ok(false);
        }
        let h = &self.buf[self.pos..];
        if &h[..SIGNATURE.len()] != SIGNATURE {
            return Err(corrupt("bad signature"));
        }
        let ext = be_i32(&h[SIGNATURE.len() + 4..]) as usize;
        if h.len() < SIGNATURE.len() + 8 + ext {
            return Ok(false);
        }
        self.pos += SIGNATURE.len() + 8 + ext;
        self.header_done = true;
        Ok(true)
    }
}

/// The spans (offsets from the buffer's start, `base` being `avail`'s) of the `count` fields of
/// the tuple `avail` starts with, into `fields`; its length, or None when it is not all there.
#[inline]
fn tuple_fields(
    avail: &[u8],
    base: usize,
    count: i16,
    fields: &mut Vec<Option<(usize, usize)>>,
) -> Option<usize> {
    fields.clear();
    let mut off = 2;
    for _ in 0..count {
        if avail.len() < off + 4 {
            return None;
        }
        let len = be_i32(&avail[off..]);
        off += 4;
        if len < 0 {
            fields.push(None);
            continue;
        }
        let len = len as usize;
        if avail.len() < off + len {
            return None;
        }
        fields.push(Some((base + off, len)));
        off += len;
    }
    Some(off)
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

pub fn i64_of(b: &[u8]) -> Result<i64> {
    b.try_into()
        .map(i64::from_be_bytes)
        .map_err(|_| corrupt("int8 width"))
}

pub fn f64_of(b: &[u8]) -> Result<f64> {
    b.try_into()
        .map(f64::from_be_bytes)
        .map_err(|_| corrupt("float8 width"))
}

pub fn bool_of(b: &[u8]) -> Result<bool> {
    b.first()
        .map(|v| *v != 0)
        .ok_or_else(|| corrupt("bool width"))
}

pub fn str_of(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|_| corrupt("text is not UTF-8"))
}

/// jsonb's binary form: a version byte (1) and the JSON text.
pub fn jsonb_of(b: &[u8]) -> Result<&str> {
    match b.split_first() {
        Some((1, text)) => str_of(text),
        _ => Err(corrupt("unknown jsonb version")),
    }
}

/// Unix microseconds of a timestamptz.
pub fn timestamp_of(b: &[u8]) -> Result<i64> {
    Ok(i64_of(b)? + PG_EPOCH_MICROS)
}

/// An integer (or `_id`), number or boolean as text, the same in CSV and JSON.
pub fn push_scalar(
    out: &mut Vec<u8>,
    ty: Option<crate::domain::schema::FieldType>,
    v: &[u8],
) -> Result<()> {
    use crate::domain::schema::FieldType;
    match ty {
        Some(FieldType::Number) => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(f64_of(v)?).as_bytes())
        }
        Some(FieldType::Boolean) => {
            out.extend_from_slice(if bool_of(v)? { b"true" } else { b"false" })
        }
        _ => out.extend_from_slice(itoa::Buffer::new().format(i64_of(v)?).as_bytes()),
    }
    Ok(())
}

/// RFC 3339 UTC, with the fraction only when there is one (trailing zeros trimmed), as the
/// CSV path's SQL formats it too.
/// ISO 8601 in UTC, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` with the fraction's trailing zeros
/// dropped: formatted by hand (a chrono format string is parsed on every call, and this runs
/// once per timestamp of every exported row).
pub fn push_timestamp(out: &mut Vec<u8>, unix_micros: i64) -> Result<()> {
    let secs = unix_micros.div_euclid(1_000_000);
    let frac = unix_micros.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    if !(0..=9999).contains(&y) {
        return Err(corrupt("timestamp out of range"));
    }
    let sod = secs.rem_euclid(86_400);
    let two = |n: i64| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
    let [y1, y2] = two(y / 100);
    let [y3, y4] = two(y % 100);
    let [m1, m2] = two(m);
    let [d1, d2] = two(d);
    let [h1, h2] = two(sod / 3600);
    let [n1, n2] = two(sod / 60 % 60);
    let [s1, s2] = two(sod % 60);
    out.extend_from_slice(&[
        y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2, b'T', h1, h2, b':', n1, n2, b':', s1, s2,
    ]);
    if frac != 0 {
        let mut digits = [b'0'; 6];
        let mut f = frac;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (f % 10) as u8;
            f /= 10;
        }
        let keep = 6 - digits.iter().rev().take_while(|&&c| c == b'0').count();
        out.push(b'.');
        out.extend_from_slice(&digits[..keep]);
    }
    out.push(b'Z');
    Ok(())
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_like_chrono_across_the_whole_range() {
        let chrono_way = |micros: i64| {
            let t = chrono::DateTime::from_timestamp_micros(micros).expect("in range");
            let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            let frac = micros.rem_euclid(1_000_000);
            if frac != 0 {
                s.push('.');
                s.push_str(format!("{frac:06}").trim_end_matches('0'));
            }
            s.push('Z');
            s
        };
        // 0001-01-01 .. 9999-12-31, leap days, epoch edges, and a pseudo-random sweep.
        let first = -62_135_596_800_000_000i64;
        let last = 253_402_300_799_999_999i64;
        let mut cases = vec![
            first,
            last,
            0,
            -1,
            1,
            951_782_400_000_000,
            4_107_542_400_000_000,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(first + (x % (last - first) as u64) as i64);
        }
        for micros in cases {
            let mut out = Vec::new();
            push_timestamp(&mut out, micros).expect("formats");
            assert_eq!(
                String::from_utf8_lossy(&out),
                chrono_way(micros),
                "{micros}"
            );
        }
    }

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    #[test]
    fn decodes_tuples_split_across_chunks() -> Result<()> {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        data.extend(tuple(&[Some(&7i64.to_be_bytes()), None]));
        data.extend(tuple(&[Some(b"hello"), Some(&[1])]));
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let mut r = TupleReader::new();
        let mut seen = Vec::new();
        let mut fields = Vec::new();
        for chunk in data.chunks(3) {
            r.push(chunk);
            r.drain(&mut fields, |buf, fs| {
                seen.push(
                    fs.iter()
                        .map(|f| f.map(|(o, l)| buf[o..o + l].to_vec()))
                        .collect::<Vec<_>>(),
                );
                Ok(())
            })?;
        }
        assert!(r.finished);
        assert_eq!(
            seen,
            vec![
                vec![Some(7i64.to_be_bytes().to_vec()), None],
                vec![Some(b"hello".to_vec()), Some(vec![1])]
            ]
        );
        Ok(())
    }

    #[test]
    fn timestamps_format_like_the_csv_path() -> Result<()> {
        let mut out = Vec::new();
        push_timestamp(&mut out, 1_714_566_600_500_000)?;
        assert_eq!(String::from_utf8_lossy(&out), "2024-05-01T12:30:00.5Z");
        out.clear();
        push_timestamp(&mut out, 1_714_566_600_000_000)?;
        assert_eq!(String::from_utf8_lossy(&out), "2024-05-01T12:30:00Z");
        Ok(())
    }
}
