//! Checks one value against its field's type and writes it in PostgreSQL's COPY text format.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

use crate::domain::schema::FieldType;

/// Why a value does not fit its field; the caller adds the line and the field name.
pub type ValueError = String;

/// Appends `s` escaped for COPY text format (backslash, tab, newline, carriage return).
pub fn push_text(buf: &mut Vec<u8>, s: &str) -> Result<(), ValueError> {
    if s.contains('\0') {
        return Err("text may not contain the NUL character (U+0000)".into());
    }
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    Ok(())
}

pub const NULL: &[u8] = b"\\N";

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
                buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
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
            buf.push(first);
            Ok(())
        }
        (ty, _) => Err(format!("expected {}, got {}", describe(ty), kind_of(first))),
    }
}

fn json_string(raw: &str) -> Result<String, ValueError> {
    serde_json::from_str::<String>(raw).map_err(|e| crate::json::describe(&e))
}

/// A `json` field's text: checked strictly (duplicate keys, NUL, depth), stored verbatim.
fn push_json_text(buf: &mut Vec<u8>, raw: &str) -> Result<(), ValueError> {
    crate::json::check(raw)?;
    push_text(buf, raw)
}

/// A CSV cell (never empty: empty cells are nulls) for a field of type `ty`.
pub fn push_csv_value(buf: &mut Vec<u8>, ty: FieldType, s: &str) -> Result<(), ValueError> {
    match ty {
        FieldType::String => push_text(buf, s),
        FieldType::Integer => {
            let i: i64 = s
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, got \"{}\"", short(s)))?;
            buf.extend_from_slice(i.to_string().as_bytes());
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
            let b = match s.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(format!("expected true or false, got \"{}\"", short(s))),
            };
            buf.push(if b { b't' } else { b'f' });
            Ok(())
        }
        FieldType::Timestamp => push_timestamp(buf, s.trim()),
        FieldType::Json => {
            if s.trim() == "null" {
                buf.extend_from_slice(NULL);
                return Ok(());
            }
            push_json_text(buf, s.trim())
                .map_err(|e| format!("expected a JSON value, got \"{}\": {e}", short(s)))
        }
    }
}

fn push_float(buf: &mut Vec<u8>, f: f64) -> Result<(), ValueError> {
    if !f.is_finite() {
        return Err("expected a finite number".into());
    }
    // Debug formatting is the shortest text that parses back to the same f64.
    buf.extend_from_slice(format!("{f:?}").as_bytes());
    Ok(())
}

fn push_timestamp(buf: &mut Vec<u8>, s: &str) -> Result<(), ValueError> {
    let t = parse_timestamp(s)?;
    buf.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
    Ok(())
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

    fn json_cell(ty: FieldType, v: Value) -> Result<String, ValueError> {
        let mut buf = Vec::new();
        push_raw_value(&mut buf, ty, &v.to_string())?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    #[test]
    fn escapes_copy_text() -> Result<(), ValueError> {
        assert_eq!(
            json_cell(FieldType::String, json!("a\tb\nc\\d\re"))?,
            "a\\tb\\nc\\\\d\\re"
        );
        assert!(json_cell(FieldType::String, json!("nul\u{0}")).is_err());
        Ok(())
    }

    #[test]
    fn types_are_strict() -> Result<(), ValueError> {
        assert_eq!(json_cell(FieldType::Integer, json!(-42))?, "-42");
        assert_eq!(json_cell(FieldType::Boolean, json!(false))?, "f");
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
            "2024-01-02T01:04:05Z"
        );
        assert_eq!(json_cell(FieldType::Number, json!(0.1))?, "0.1");
        assert_eq!(json_cell(FieldType::Number, json!(1e300))?, "1e300");
        assert_eq!(
            json_cell(FieldType::Json, json!({"a": [1, "x\ty"]}))?,
            "{\"a\":[1,\"x\\\\ty\"]}"
        );
        Ok(())
    }

    #[test]
    fn csv_cells_parse_by_type() -> Result<(), ValueError> {
        let mut buf = Vec::new();
        push_csv_value(&mut buf, FieldType::Boolean, "TRUE")?;
        push_csv_value(&mut buf, FieldType::Integer, "7")?;
        assert_eq!(buf, b"t7");
        assert!(push_csv_value(&mut buf, FieldType::Number, "NaN").is_err());
        assert!(push_csv_value(&mut buf, FieldType::Integer, "7.5").is_err());
        Ok(())
    }

    #[test]
    fn timestamps_stay_in_range_and_exact() {
        let year_10000 = json_cell(FieldType::Timestamp, json!("9999-12-31T23:59:59-14:00"));
        assert!(year_10000.is_err_and(|e| e.contains("outside 0001-01-01")));
        let leap = json_cell(FieldType::Timestamp, json!("2016-12-31T23:59:60Z"));
        assert!(leap.is_err_and(|e| e.contains("leap second")));
        assert!(json_cell(FieldType::Timestamp, json!("0001-01-01T00:00:00Z")).is_ok());
    }

    #[test]
    fn numbers_keep_their_value() -> Result<(), ValueError> {
        let mut buf = Vec::new();
        push_raw_value(&mut buf, FieldType::Number, "123456789.12345679")?;
        assert_eq!(buf, b"123456789.12345679");
        let mut buf = Vec::new();
        let big = "{\"n\":123456789012345678901234567890123456789}";
        push_raw_value(&mut buf, FieldType::Json, big)?;
        assert_eq!(buf, big.as_bytes());
        assert!(push_raw_value(&mut buf, FieldType::Json, "{\"a\":1,\"a\":2}").is_err());
        assert!(push_raw_value(&mut buf, FieldType::Number, "1e400").is_err());
        Ok(())
    }
}
