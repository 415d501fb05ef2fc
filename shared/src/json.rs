//! Strict JSON, for every body a client sends: a duplicate key in any object is an error (not
//! last-wins), nesting is capped at 128 levels (serde_json's own recursion limit), and no text
//! may hold U+0000 (PostgreSQL cannot store it). Numbers parse to the nearest f64
//! (`float_roundtrip`); `json` fields keep their text, so their digits survive.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::domain::schema::printable;

/// Nesting beyond this is refused (API.md, Limits). serde_json enforces the same number.
pub const MAX_DEPTH: usize = 128;

const NUL: &str = "text may not contain the NUL character (U+0000)";

/// Parses a whole document strictly into a `Value`.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de).map_err(|e| describe(&e))?;
    de.end().map_err(|e| describe(&e))?;
    Ok(value)
}

/// Checks JSON text strictly without building it (a `json` field's value).
pub fn check(text: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    Check.deserialize(&mut de).map_err(|e| describe(&e))?;
    de.end().map_err(|e| describe(&e))
}

/// A client-facing description of a parse error: what and where, never a Rust type name.
pub fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        return format!("JSON is nested deeper than {MAX_DEPTH} levels");
    }
    if e.is_data() {
        // Our own messages (duplicate key, NUL), each led by the path to the bad part.
        let msg = strip_position(&text);
        return msg.strip_prefix(": ").unwrap_or(msg).to_string();
    }
    if e.is_eof() {
        return "the JSON ends too early".into();
    }
    if text.starts_with("number out of range") {
        // Valid JSON, but past what a reader can hold as a number (an IEEE 754 double, as
        // JavaScript, Python's json and this parser read it): stored, it could not be read
        // back as the number it says.
        return format!(
            "a number at line {} column {} is beyond ±1.7976931348623157e308, the largest a \
             JSON reader holds as a number; write it as a string",
            e.line(),
            e.column()
        );
    }
    format!("invalid JSON at line {} column {}", e.line(), e.column())
}

/// Builds a `Value`, refusing duplicate keys and NUL anywhere.
pub struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        no_nul(v)?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        no_nul(&v)?;
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq
            .next_element_seed(Strict)
            .map_err(|e| within(&format!("[{}]", out.len()), e))?
        {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            no_nul(&key)?;
            if out.contains_key(&key) {
                return Err(duplicate(&key));
            }
            let value = map
                .next_value_seed(Strict)
                .map_err(|e| within(&printable(&key), e))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Like `Strict` but builds nothing: for text that is stored as it is.
struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Check)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        no_nul(v)
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while seq
            .next_element_seed(Check)
            .map_err(|e| within(&format!("[{i}]"), e))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            no_nul(&key)?;
            if seen.contains(&key) {
                return Err(duplicate(&key));
            }
            map.next_value_seed(Check)
                .map_err(|e| within(&printable(&key), e))?;
            seen.insert(key);
        }
        Ok(())
    }
}

// Our own errors start with ": " (or with a path and then ": "), so `within` can lead them
// with the key or index they were found under: `filters[0].value: text may not ...`.
fn no_nul<E: de::Error>(s: &str) -> Result<(), E> {
    if s.contains('\0') {
        Err(E::custom(format!(": {NUL}")))
    } else {
        Ok(())
    }
}

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format!(
        ": duplicate key \"{}\" in an object",
        printable(key)
    ))
}

fn within<E: de::Error>(step: &str, e: E) -> E {
    let text = e.to_string();
    let msg = strip_position(&text);
    if msg.starts_with(": ") || msg.starts_with('[') {
        E::custom(format!("{step}{msg}"))
    } else if msg.starts_with(|c: char| c.is_alphanumeric() || c == '_')
        && msg.contains(": ")
        && (msg.contains(NUL) || msg.contains("duplicate key"))
    {
        E::custom(format!("{step}.{msg}"))
    } else {
        e
    }
}

/// serde_json's " at line L column C" suffix, removed.
fn strip_position(text: &str) -> &str {
    text.rsplit_once(" at line ").map_or(text, |(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        assert!(parse(br#"{"a":1,"a":2}"#).is_err_and(|e| e == "duplicate key \"a\" in an object"));
        let nested = parse(br#"{"x":[{"b":1,"b":1}]}"#).err().unwrap_or_default();
        assert_eq!(nested, "x[0]: duplicate key \"b\" in an object");
        assert!(check(r#"{"x":{"c":1,"c":2}}"#).is_err_and(|e| e.contains("\"c\"")));
        assert!(parse(br#"{"a":1,"b":{"a":2}}"#).is_ok());
    }

    #[test]
    fn nul_is_refused_in_keys_and_values() {
        let e = parse(br#"{"f":[{"value":"x\u0000"}]}"#)
            .err()
            .unwrap_or_default();
        assert_eq!(e, format!("f[0].value: {NUL}"));
        assert!(check(r#"{"\u0000":1}"#).is_err_and(|e| e.contains("NUL")));
    }

    #[test]
    fn depth_is_capped() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(check(&deep).is_err_and(|e| e.contains("nested deeper")));
        let ok = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn floats_parse_to_the_nearest_f64() -> Result<(), String> {
        let v = parse(b"123456789.12345679")?;
        assert_eq!(v.as_f64(), Some(123456789.12345679_f64));
        assert_eq!(
            format!("{:?}", v.as_f64().unwrap_or_default()),
            "123456789.12345679"
        );
        Ok(())
    }

    #[test]
    fn errors_name_no_types() {
        let e = parse(b"{\"a\": }").err().unwrap_or_default();
        assert!(e.starts_with("invalid JSON at line 1"), "{e}");
    }
}
