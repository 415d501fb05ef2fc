use super::*;
use crate::error::Result;
use serde_json::json;

fn fields() -> Vec<Field> {
    serde_json::from_value(json!([
        {"name": "title", "type": "string"}, {"name": "price", "type": "number", "nullable": true},
        {"name": "meta", "type": "json", "nullable": true}, {"name": "ok", "type": "boolean"}
    ]))
    .unwrap_or_default()
}

fn err(req: Value) -> String {
    let req: ExportRequest = match serde_json::from_value(req) {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    req.validate(&fields())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn defaults() -> Result<()> {
    let spec = ExportRequest::default().validate(&fields())?;
    assert_eq!(
        (spec.format, spec.compression, spec.order),
        (Format::Csv, Compression::None, Order::Asc)
    );
    assert_eq!(spec.sort_by, "_id");
    assert_eq!(spec.columns, ["title", "price", "meta", "ok"]);
    let pq = ExportRequest {
        format: Some(Format::Parquet),
        ..Default::default()
    }
    .validate(&fields())?;
    assert_eq!(pq.compression, Compression::Zstd);
    Ok(())
}

#[test]
fn errors_name_the_part() {
    assert!(
        err(json!({"filters": [{"field": "nope", "op": "eq", "value": 1}]}))
            .starts_with("filters[0]: field")
    );
    assert!(
        err(json!({"filters": [{"field": "price", "op": "eq", "value": "x"}]}))
            .contains("filters[0]: value")
    );
    assert!(
        err(json!({"filters": [{"field": "price", "op": "is_null", "value": 1}]}))
            .contains("no value")
    );
    assert!(
        err(json!({"filters": [{"field": "price", "op": "contains", "value": "1"}]}))
            .contains("op: contains")
    );
    assert!(
        err(json!({"filters": [{"field": "ok", "op": "gt", "value": true}]})).contains("op: gt")
    );
    assert!(
        err(json!({"filters": [{"field": "title", "op": "in", "value": ["a", 2]}]}))
            .contains("value[1]")
    );
    assert!(err(json!({"sortBy": "price;drop table"})).starts_with("sortBy"));
    assert!(err(json!({"columns": ["title", "title"]})).starts_with("columns[1]"));
    assert!(err(json!({"format": "parquet", "compression": "gzip"})).starts_with("compression"));
    assert!(err(json!({"format": "csv", "compression": "zstd"})).starts_with("compression"));
    assert!(err(json!({"rowIds": []})).starts_with("rowIds"));
}

#[test]
fn dispositions_are_header_safe() {
    let name = file_name(
        "a\"b\r\nSet-Cookie: x",
        chrono::NaiveDate::MIN,
        Format::Csv,
        Compression::None,
    );
    assert!(!name.contains(['"', '\r', '\n']));
    let d = content_disposition("Ñandú 价格-2024-01-01.csv");
    assert!(d.is_ascii());
    assert!(
        d.contains("filename*=UTF-8''%C3%91and%C3%BA%20%E4%BB%B7%E6%A0%BC-2024-01-01.csv"),
        "{d}"
    );
}

#[test]
fn format_characters_cannot_spoof_the_name() {
    let name = file_name(
        "invoice\u{202E}fdp.exe\u{200B}",
        chrono::NaiveDate::MIN,
        Format::Csv,
        Compression::None,
    );
    assert!(name.starts_with("invoicefdp.exe-"), "{name}");
    let d = content_disposition("a\u{2066}b.csv");
    assert_eq!(d, "attachment; filename=\"ab.csv\"");
}
