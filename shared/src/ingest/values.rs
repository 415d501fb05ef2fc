//! Checks one value against its field's type and writes it as a field of PostgreSQL's binary
//! COPY format: a 4-byte big-endian length (-1 for NULL), then the type's binary form. Binary
//! spares PostgreSQL parsing text: its own `COPY … FROM` of these rows takes ~25 % less time
//! (README, benches).

use chrono::{DateTime, Datelike, Utc};

use crate::domain::schema::FieldType;

/// Why a value does not fit its field; the caller adds the line and the field name.
pub type ValueError = String;

/// Appends one field: its length, then what `payload` writes.
fn field(buf: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    payload(buf);
    let len = (buf.len() - at - 4) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a text field (no escaping in binary COPY; NUL is refused, as PostgreSQL would).
pub fn push_text(buf: &mut Vec<u8>, s: &str) -> Result<(), ValueError> {
    if s.contains('\0') {
        return Err("text may not contain the NUL character (U+0000)".into());
    }
    field(buf, |b| b.extend_from_slice(s.as_bytes()));
    Ok(())
}

/// A NULL field.
pub const NULL: &[u8] = &[0xff; 4];

pub(crate) fn push_i64(buf: &mut Vec<u8>, i: i64) {
    field(buf, |b| b.extend_from_slice(&i.to_be_bytes()));
}

pub(crate) fn push_bool(buf: &mut Vec<u8>, v: bool) {
    field(buf, |b| b.push(u8::from(v)));
}

/// A JSON value as its raw text (from NDJSON or a JSON array) for a field of type `ty`.
/// Numbers are parsed from their text (correctly rounded); `json` values are stored as their
/// text, so PostgreSQL's `jsonb` keeps every digit.
pub fn push_raw_value(buf: &mut Vec<u8>, ty: FieldType, raw: &str) -> Result<(), ValueError> {
    let first = raw.as_bytes().first().copied().unwrap_or(b'n');
    match (ty, first) {
        (FieldType::Json, _) => push_json_text(buf, raw),
        (FieldType::String, b'"') => push_text(buf, &json_string(raw)?),
        (FieldType::Timestamp, b'"') => push_timestamp(buf, &json_string(raw)?),
        (FieldType::Integer, b'-' | b'0'..=b'9') => match raw.parse::<i64>() {
            Ok(i) => {
                push_i64(buf, i);
                Ok(())
            }
            Err(_) if raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) => {
                Err(format!("expected an integer, got {}", short(raw)))
            }
            Err(_) => Err(format!(
                "integer {} is out of range (64-bit signed)",
                short(raw)
            )),
        },
        (FieldType::Number, b'-' | b'0'..=b'9') => match raw.parse::<f64>() {
            Ok(f) if f.is_finite() => push_float(buf, f),
            _ => Err(format!("number {} is out of range", short(raw))),
        },
        (FieldType::Boolean, b't' | b'f') => {
            push_bool(buf, first == b't');
            Ok(())
        }
        (ty, _) => Err(format!("expected {}, got {}", describe(ty), kind_of(first))),
    }
}

fn json_string(raw: &str) -> Result<String, ValueError> {
    serde_json::from_str::<String>(raw).map_err(|e| crate::json::describe(&e))
}

/// A `json` field's text: checked strictly (duplicate keys, NUL, depth), stored verbatim
/// (`jsonb`'s binary form is a version byte, 1, and the text, which PostgreSQL parses).
pub(crate) fn push_json_text(buf: &mut Vec<u8>, raw: &str) -> Result<(), ValueError> {
    crate::json::check(raw)?;
    field(buf, |b| {
        b.push(1);
        b.extend_from_slice(raw.as_bytes());
    });
    Ok(())
}

/// A CSV cell (never empty, and for json never `null`: both are nulls) for a field of type `ty`.
pub fn push_csv_value(buf: &mut Vec<u8>, ty: FieldType, s: &str) -> Result<(), ValueError> {
    match ty {
        FieldType::String => push_text(buf, s),
        FieldType::Integer => {
            let i: i64 = s
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, got \"{}\"", short(s)))?;
            push_i64(buf, i);
            Ok(())
        }
        FieldType::Number => {
            let f: f64 = s
                .trim()
                .parse()
                .map_err(|_| format!("expected a number, got \"{}\"", short(s)))?;
            push_float(buf, f)
        }
        FieldType::Boolean => {
            let t = s.trim();
            let b = if t.eq_ignore_ascii_case("true") {
                true
            } else if t.eq_ignore_ascii_case("false") {
                false
            } else {
                return Err(format!("expected true or false, got \"{}\"", short(s)));
            };
            push_bool(buf, b);
            Ok(())
        }
        FieldType::Timestamp => push_timestamp(buf, s.trim()),
        FieldType::Json => {
            // `null` never gets here: the writer makes it a null (held to the field's
            // nullability), as it does an empty cell.
            push_json_text(buf, s.trim())
                .map_err(|e| format!("expected a JSON value, got \"{}\": {e}", short(s)))
        }
    }
}

pub(crate) fn push_float(buf: &mut Vec<u8>, f: f64) -> Result<(), ValueError> {
    if !f.is_finite() {
        return Err("expected a finite number".into());
    }
    // float8's binary form: its IEEE 754 bits, big-endian (every bit kept, -0.0 included).
    field(buf, |b| b.extend_from_slice(&f.to_bits().to_be_bytes()));
    Ok(())
}

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_UNIX: i64 = 946_684_800;

fn push_timestamp(buf: &mut Vec<u8>, s: &str) -> Result<(), ValueError> {
    let t = parse_timestamp(s)?;
    push_i64(buf, pg_micros(t));
    Ok(())
}

/// A timestamp given as microseconds since the Unix epoch (a Parquet column), held to the range
/// of API.md's Limits.
pub(crate) fn push_unix_micros(buf: &mut Vec<u8>, micros: i64) -> Result<(), ValueError> {
    const MIN: i64 = -62_135_596_800 * 1_000_000; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_800 * 1_000_000 - 1; // 9999-12-31T23:59:59.999999Z
    if !(MIN..=MAX).contains(&micros) {
        return Err("timestamp outside 0001-01-01 to 9999-12-31 UTC".into());
    }
    push_i64(buf, micros - PG_EPOCH_UNIX * 1_000_000);
    Ok(())
}

/// A timestamp as PostgreSQL stores it: microseconds since 2000-01-01 UTC, its fraction of a
/// second rounded exactly as PostgreSQL rounds the text it used to be sent (`rint` of the
/// fraction, parsed as a double, times 10^6: ties to even), so binary and text ingest store the
/// same value.
fn pg_micros(t: DateTime<Utc>) -> i64 {
    let nanos = t.timestamp_subsec_nanos();
    let frac_micros = if nanos.is_multiple_of(1000) {
        i64::from(nanos / 1000)
    } else {
        let frac: f64 = format!("0.{nanos:09}").parse().unwrap_or(0.0);
        (frac * 1_000_000.0).round_ties_even() as i64
    };
    (t.timestamp() - PG_EPOCH_UNIX) * 1_000_000 + frac_micros
}

/// An RFC 3339 timestamp within 0001-01-01 and 9999-12-31 UTC (API.md, Limits). A leap second
/// (`:60`) is refused: PostgreSQL would store it as the next minute, changing the value.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, ValueError> {
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(s)
        .map_err(|_| format!("expected an RFC 3339 timestamp, got \"{}\"", short(s)))?
        .with_timezone(&Utc);
    if !(1..=9999).contains(&t.year()) {
        return Err(format!(
            "timestamp \"{}\" is outside 0001-01-01 to 9999-12-31 UTC",
            short(s)
        ));
    }
    if t.timestamp_subsec_nanos() >= 1_000_000_000 {
        return Err(format!(
            "timestamp \"{}\" is a leap second, which cannot be stored",
            short(s)
        ));
    }
    Ok(t)
}

fn describe(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "a string",
        FieldType::Integer => "an integer",
        FieldType::Number => "a number",
        FieldType::Boolean => "a boolean",
        FieldType::Timestamp => "an RFC 3339 timestamp string",
        FieldType::Json => "a JSON value",
    }
}

/// What a JSON value is, from its first byte.
fn kind_of(first: u8) -> &'static str {
    match first {
        b'n' => "null",
        b't' | b'f' => "a boolean",
        b'"' => "a string",
        b'[' => "an array",
        b'{' => "an object",
        _ => "a number",
    }
}

fn short(s: &str) -> String {
    crate::domain::schema::printable(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The payload of the one field in `buf` (None for NULL); the length must match.
    fn payload(buf: &[u8]) -> Option<Vec<u8>> {
        let len = i32::from_be_bytes(buf[..4].try_into().ok()?);
        if len < 0 {
            assert_eq!(buf.len(), 4);
            return None;
        }
        assert_eq!(buf.len(), 4 + len as usize, "field length");
        Some(buf[4..].to_vec())
    }

    fn json_cell(ty: FieldType, v: Value) -> Result<Vec<u8>, ValueError> {
        let mut buf = Vec::new();
        push_raw_value(&mut buf, ty, &v.to_string())?;
        Ok(payload(&buf).unwrap_or_default())
    }

    fn micros(rfc3339: &str) -> Vec<u8> {
        let t = DateTime::parse_from_rfc3339(rfc3339).map(|t| t.with_timezone(&Utc));
        let t = t.unwrap_or_default();
        let m = (t.timestamp() - PG_EPOCH_UNIX) * 1_000_000
            + i64::from(t.timestamp_subsec_nanos() / 1000);
        m.to_be_bytes().to_vec()
    }

    #[test]
    fn text_is_stored_as_it_is() -> Result<(), ValueError> {
        assert_eq!(
            json_cell(FieldType::String, json!("a\tb\nc\\d\re"))?,
            b"a\tb\nc\\d\re"
        );
        assert!(json_cell(FieldType::String, json!("nul\u{0}")).is_err());
        assert_eq!(payload(NULL), None);
        Ok(())
    }

    #[test]
    fn types_are_strict() -> Result<(), ValueError> {
        assert_eq!(
            json_cell(FieldType::Integer, json!(-42))?,
            (-42i64).to_be_bytes()
        );
        assert_eq!(json_cell(FieldType::Boolean, json!(false))?, [0]);
        assert_eq!(json_cell(FieldType::Boolean, json!(true))?, [1]);
        assert!(json_cell(FieldType::String, json!(5)).is_err());
        assert!(json_cell(FieldType::Boolean, json!("true")).is_err());
        Ok(())
    }

    #[test]
    fn wrong_types_are_described() {
        let e = json_cell(FieldType::Integer, json!(1.5))
            .err()
            .unwrap_or_default();
        assert_eq!(e, "expected an integer, got 1.5");
        let e = json_cell(FieldType::Number, json!("3"))
            .err()
            .unwrap_or_default();
        assert_eq!(e, "expected a number, got a string");
        let e = json_cell(FieldType::Timestamp, json!("yesterday"))
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("expected an RFC 3339 timestamp"));
        let e = json_cell(FieldType::Integer, json!(u64::MAX))
            .err()
            .unwrap_or_default();
        assert!(e.contains("out of range"));
    }

    #[test]
    fn normalizes_timestamps_and_floats() -> Result<(), ValueError> {
        assert_eq!(
            json_cell(FieldType::Timestamp, json!("2024-01-02T03:04:05+02:00"))?,
            micros("2024-01-02T01:04:05Z")
        );
        assert_eq!(
            json_cell(FieldType::Timestamp, json!("2000-01-01T00:00:00Z"))?,
            0i64.to_be_bytes()
        );
        assert_eq!(
            json_cell(FieldType::Timestamp, json!("1999-12-31T23:59:59.999999Z"))?,
            (-1i64).to_be_bytes()
        );
        assert_eq!(
            json_cell(FieldType::Number, json!(0.1))?,
            0.1f64.to_bits().to_be_bytes()
        );
        assert_eq!(
            json_cell(FieldType::Number, json!(-0.0))?,
            (-0.0f64).to_bits().to_be_bytes()
        );
        let mut jsonb = vec![1u8];
        jsonb.extend_from_slice(b"{\"a\":[1,\"x\\ty\"]}");
        assert_eq!(
            json_cell(FieldType::Json, json!({"a": [1, "x\ty"]}))?,
            jsonb
        );
        Ok(())
    }

    #[test]
    fn sub_microsecond_fractions_round_as_postgresql_rounds_their_text() {
        let t = |s: &str| parse_timestamp(s).map(pg_micros).unwrap_or(i64::MIN);
        let base = t("2024-01-01T00:00:00Z");
        assert_eq!(t("2024-01-01T00:00:00.000000400Z") - base, 0);
        assert_eq!(t("2024-01-01T00:00:00.000000600Z") - base, 1);
        assert_eq!(t("2024-01-01T00:00:00.123456789Z") - base, 123_457);
        assert_eq!(t("2024-01-01T00:00:00.999999900Z") - base, 1_000_000);
        // A tie goes to even, as rint does (0.0000025 × 10^6 is 2.5 as a double).
        assert_eq!(t("2024-01-01T00:00:00.000002500Z") - base, 2);
        assert_eq!(t("2024-01-01T00:00:00.000001500Z") - base, 2);
        assert_eq!(t("2024-01-01T00:00:00.000000500Z") - base, 0);
        // PostgreSQL itself gives each of these (checked with psql: extract(microseconds …)).
        assert_eq!(t("2024-01-01T00:00:00.999999500Z") - base, 1_000_000);
    }

    #[test]
    fn csv_cells_parse_by_type() -> Result<(), ValueError> {
        let mut buf = Vec::new();
        push_csv_value(&mut buf, FieldType::Boolean, "TRUE")?;
        assert_eq!(payload(&buf), Some(vec![1]));
        let mut buf = Vec::new();
        push_csv_value(&mut buf, FieldType::Integer, " 7")?;
        assert_eq!(payload(&buf), Some(7i64.to_be_bytes().to_vec()));
        assert!(push_csv_value(&mut buf, FieldType::Number, "NaN").is_err());
        assert!(push_csv_value(&mut buf, FieldType::Integer, "7.5").is_err());
        assert!(push_csv_value(&mut buf, FieldType::Boolean, "yes").is_err());
        Ok(())
    }

    #[test]
    fn timestamps_stay_in_range_and_exact() {
        let year_10000 = json_cell(FieldType::Timestamp, json!("9999-12-31T23:59:59-14:00"));
        assert!(year_10000.is_err_and(|e| e.contains("outside 0001-01-01")));
        let leap = json_cell(FieldType::Timestamp, json!("2016-12-31T23:59:60Z"));
        assert!(leap.is_err_and(|e| e.contains("leap second")));
        assert_eq!(
            json_cell(FieldType::Timestamp, json!("0001-01-01T00:00:00Z")).ok(),
            Some(micros("0001-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn numbers_keep_their_value() -> Result<(), ValueError> {
        let mut buf = Vec::new();
        push_raw_value(&mut buf, FieldType::Number, "123456789.12345679")?;
        assert_eq!(
            payload(&buf),
            Some(123456789.12345679f64.to_bits().to_be_bytes().to_vec())
        );
        let mut buf = Vec::new();
        let big = "{\"n\":123456789012345678901234567890123456789}";
        push_raw_value(&mut buf, FieldType::Json, big)?;
        assert_eq!(
            payload(&buf).map(|p| p[1..].to_vec()),
            Some(big.as_bytes().to_vec())
        );
        assert!(push_raw_value(&mut buf, FieldType::Json, "{\"a\":1,\"a\":2}").is_err());
        assert!(push_raw_value(&mut buf, FieldType::Number, "1e400").is_err());
        let e = push_raw_value(&mut buf, FieldType::Json, "{\"n\":1e400}")
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("beyond ±1.7976931348623157e308") && e.contains("as a string"),
            "{e}"
        );
        Ok(())
    }
}
