//! Checks one value against its field's type and writes it in PostgreSQL's COPY text format.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde_json::Value;

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

/// A JSON value (from NDJSON or a JSON array) for a field of type `ty`.
pub fn push_json_value(buf: &mut Vec<u8>, ty: FieldType, v: &Value) -> Result<(), ValueError> {
    match (ty, v) {
        (FieldType::String, Value::String(s)) => push_text(buf, s),
        (FieldType::Integer, Value::Number(n)) => match n.as_i64() {
            Some(i) => {
                buf.extend_from_slice(i.to_string().as_bytes());
                Ok(())
            }
            None if n.is_f64() => Err(format!("expected an integer, got {n}")),
            None => Err(format!("integer {n} is out of range (64-bit signed)")),
        },
        (FieldType::Number, Value::Number(n)) => match n.as_f64() {
            Some(f) => push_float(buf, f),
            None => Err(format!("number {n} is out of range")),
        },
        (FieldType::Boolean, Value::Bool(b)) => {
            buf.push(if *b { b't' } else { b'f' });
            Ok(())
        }
        (FieldType::Timestamp, Value::String(s)) => push_timestamp(buf, s),
        (FieldType::Json, v) => {
            check_no_nul(v)?;
            let text = serde_json::to_string(v).map_err(|e| e.to_string())?;
            push_text(buf, &text)
        }
        (ty, v) => Err(format!("expected {}, got {}", describe(ty), kind_of(v))),
    }
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
            let v: Value = serde_json::from_str(s)
                .map_err(|_| format!("expected a JSON value, got \"{}\"", short(s)))?;
            if v.is_null() {
                buf.extend_from_slice(NULL);
                return Ok(());
            }
            push_json_value(buf, FieldType::Json, &v)
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
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(s)
        .map_err(|_| format!("expected an RFC 3339 timestamp, got \"{}\"", short(s)))?
        .with_timezone(&Utc);
    if t.year() < 1 {
        return Err(format!("timestamp \"{}\" is before year 1", short(s)));
    }
    buf.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
    Ok(())
}

fn check_no_nul(v: &Value) -> Result<(), ValueError> {
    let bad = match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => return a.iter().try_for_each(check_no_nul),
        Value::Object(o) => {
            if o.keys().any(|k| k.contains('\0')) {
                true
            } else {
                return o.values().try_for_each(check_no_nul);
            }
        }
        _ => false,
    };
    if bad {
        Err("JSON text may not contain the NUL character (U+0000)".into())
    } else {
        Ok(())
    }
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

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn short(s: &str) -> String {
    crate::domain::schema::printable(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_cell(ty: FieldType, v: Value) -> Result<String, ValueError> {
        let mut buf = Vec::new();
        push_json_value(&mut buf, ty, &v)?;
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
}
