//! A workflow's declared, ordered schema and the rules a schema must follow.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};

pub const MAX_FIELDS: usize = 500;
pub const MAX_FIELD_NAME: usize = 64;
pub const MAX_WORKFLOW_NAME: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    Timestamp,
    Json,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
            FieldType::Json => "json",
        }
    }

    fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "string" => FieldType::String,
            "integer" => FieldType::Integer,
            "number" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "timestamp" => FieldType::Timestamp,
            "json" => FieldType::Json,
            _ => return None,
        })
    }

    /// The PostgreSQL column type that stores values of this type.
    pub fn sql_type(self) -> &'static str {
        match self {
            FieldType::String => "text",
            FieldType::Integer => "bigint",
            FieldType::Number => "double precision",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamptz",
            FieldType::Json => "jsonb",
        }
    }
}

/// One field of a workflow's schema, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Field {
    /// 1-64 characters of `[A-Za-z0-9_]`, not starting with `_`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9_]{0,63}$"
    )]
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub nullable: bool,
}

impl Field {
    /// The generated column that stores this field: `c1..cn` by position, so no user-chosen
    /// identifier ever reaches SQL text.
    pub fn column(position: usize) -> String {
        format!("c{}", position + 1)
    }
}

/// Validates a schema given as raw JSON so each error names the exact element at fault.
pub fn parse_schema(raw: &serde_json::Value) -> Result<Vec<Field>> {
    let items = raw
        .as_array()
        .ok_or_else(|| Error::invalid("schema: expected an array of fields"))?;
    if items.is_empty() || items.len() > MAX_FIELDS {
        return Err(Error::invalid(format!(
            "schema: must have between 1 and {MAX_FIELDS} fields, got {}",
            items.len()
        )));
    }
    let mut fields: Vec<Field> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = parse_field(i, item)?;
        if fields.iter().any(|f| f.name == field.name) {
            return Err(Error::invalid(format!(
                "schema[{i}].name: duplicate field name \"{}\"",
                field.name
            )));
        }
        fields.push(field);
    }
    Ok(fields)
}

fn parse_field(i: usize, item: &serde_json::Value) -> Result<Field> {
    let obj = item
        .as_object()
        .ok_or_else(|| Error::invalid(format!("schema[{i}]: expected an object")))?;
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "type" | "nullable"))
    {
        return Err(Error::invalid(format!(
            "schema[{i}]: unknown property \"{}\"",
            printable(key)
        )));
    }
    let name = obj
        .get("name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::invalid(format!("schema[{i}].name: required string")))?;
    validate_field_name(name).map_err(|why| Error::invalid(format!("schema[{i}].name: {why}")))?;
    let type_name = obj
        .get("type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::invalid(format!("schema[{i}].type: required string")))?;
    let field_type = FieldType::parse(type_name).ok_or_else(|| {
        Error::invalid(format!(
            "schema[{i}].type: unknown type \"{}\" (expected string, integer, number, boolean, timestamp or json)",
            printable(type_name)
        ))
    })?;
    let nullable = match obj.get("nullable") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Error::invalid(format!(
                "schema[{i}].nullable: expected a boolean"
            )));
        }
    };
    Ok(Field {
        name: name.to_string(),
        field_type,
        nullable,
    })
}

fn validate_field_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_FIELD_NAME {
        return Err(format!("must be 1 to {MAX_FIELD_NAME} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "\"{}\" may contain only A-Z, a-z, 0-9 and _",
            printable(name)
        ));
    }
    if name.starts_with('_') {
        return Err(format!("\"{name}\" must not start with _ (reserved)"));
    }
    Ok(())
}

/// A workflow name is data: any Unicode text of 1 to 200 characters.
pub fn validate_workflow_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_WORKFLOW_NAME {
        return Err(Error::invalid(format!(
            "name: must be 1 to {MAX_WORKFLOW_NAME} characters, got {chars}"
        )));
    }
    Ok(())
}

/// Echoes client text into an error message safely: control characters escaped, length capped.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: serde_json::Value) -> String {
        parse_schema(&v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn accepts_every_type_and_defaults_nullable_to_false() -> Result<()> {
        let f = parse_schema(&json!([
            {"name": "a", "type": "string"}, {"name": "b", "type": "integer", "nullable": true},
            {"name": "c", "type": "number"}, {"name": "d", "type": "boolean"},
            {"name": "e", "type": "timestamp"}, {"name": "F_1", "type": "json"}
        ]))?;
        assert_eq!(f.len(), 6);
        assert!(!f[0].nullable && f[1].nullable);
        assert_eq!(f[5].field_type, FieldType::Json);
        Ok(())
    }

    #[test]
    fn names_the_bad_element() {
        assert!(err(json!([])).contains("between 1 and 500"));
        assert!(err(json!([{"name": "_id", "type": "string"}])).starts_with("schema[0].name"));
        assert!(err(json!([{"name": "a b", "type": "string"}])).contains("schema[0].name"));
        assert!(
            err(json!([{"name": "a", "type": "string"}, {"name": "a", "type": "string"}]))
                .contains("schema[1].name: duplicate")
        );
        assert!(err(json!([{"name": "a", "type": "float"}])).contains("schema[0].type"));
        assert!(err(json!([{"name": "a", "type": "string", "x": 1}])).contains("unknown property"));
        assert!(err(json!([{"name": "a".repeat(65), "type": "string"}])).contains("1 to 64"));
        let many: Vec<_> = (0..501)
            .map(|i| json!({"name": format!("f{i}"), "type": "string"}))
            .collect();
        assert!(err(json!(many)).contains("got 501"));
    }
}
