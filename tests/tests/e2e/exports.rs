use std::io::Read;

use arrow_array::{
    Array, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, TestProject, assert_envelope, spawn_app};

fn schema() -> Value {
    json!([
        {"name": "title", "type": "string", "nullable": true},
        {"name": "price", "type": "number", "nullable": true},
        {"name": "qty", "type": "integer"},
        {"name": "ok", "type": "boolean", "nullable": true},
        {"name": "at", "type": "timestamp", "nullable": true},
        {"name": "meta", "type": "json", "nullable": true}
    ])
}

/// Rows whose text breaks naive writers, as the exports must reproduce them.
fn tricky_rows() -> Vec<Value> {
    vec![
        json!({"title": "comma, \"quote\" and\nnewline\ttab", "price": 9.5, "qty": 3, "ok": true,
               "at": "2024-05-01T12:30:00.5Z", "meta": {"tags": ["x", 1], "n": null, "deep": {"a": [true]}}}),
        json!({"title": "", "price": null, "qty": -9_007_199_254_740_993_i64, "ok": null, "at": null, "meta": null}),
        json!({"title": "🚀 emoji, שלום RTL, =SUM(A1) leading =", "price": 1e300, "qty": 0, "ok": false,
               "at": "1999-12-31T23:59:59Z", "meta": [1, "two"]}),
        json!({"title": null, "price": -0.000123, "qty": 42, "ok": true, "at": "2024-02-29T00:00:00.000001Z", "meta": "just a string"}),
        json!({"title": "\\backslash\r\ncrlf", "price": 3.0, "qty": 7, "ok": false, "at": "2030-01-01T00:00:00Z", "meta": {}}),
    ]
}

async fn setup(app: &TestApp, rows: &[Value]) -> (TestProject, String) {
    let p = app.create_project("acme").await;
    let wf = app.create_workflow(&p.key, "Products", schema()).await;
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let res = app
        .post_run(&p.key, &wf, "application/x-ndjson", body)
        .await;
    assert_eq!(res.status(), 201);
    (p, wf)
}

/// Rows as a JSON export would show them (every field present; ids from 1).
fn with_ids(rows: &[Value], columns: &[&str]) -> Vec<Value> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let mut o = serde_json::Map::new();
            for c in columns {
                let v = if *c == "_id" {
                    json!(i + 1)
                } else {
                    r.get(*c).cloned().unwrap_or(Value::Null)
                };
                o.insert(c.to_string(), v);
            }
            Value::Object(o)
        })
        .collect()
}

const ALL: [&str; 6] = ["title", "price", "qty", "ok", "at", "meta"];

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Parses CSV back into JSON rows typed by the schema (empty field = null).
fn csv_rows(bytes: &[u8], delimiter: u8) -> (Vec<String>, Vec<Value>) {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(bytes);
    let headers: Vec<String> = rdr
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    let types: std::collections::HashMap<&str, &str> = [
        ("_id", "integer"),
        ("title", "string"),
        ("price", "number"),
        ("qty", "integer"),
        ("ok", "boolean"),
        ("at", "string"),
        ("meta", "json"),
    ]
    .into();
    let rows = rdr
        .records()
        .map(|r| {
            let r = r.expect("record");
            let mut o = serde_json::Map::new();
            for (h, cell) in headers.iter().zip(r.iter()) {
                let v = if cell.is_empty() {
                    Value::Null
                } else {
                    match types[h.as_str()] {
                        "integer" => json!(cell.parse::<i64>().expect("int")),
                        "number" => json!(cell.parse::<f64>().expect("float")),
                        "boolean" => json!(cell.parse::<bool>().expect("bool")),
                        "json" => serde_json::from_str(cell).expect("json"),
                        _ => json!(cell),
                    }
                };
                o.insert(h.clone(), v);
            }
            Value::Object(o)
        })
        .collect();
    (headers, rows)
}

fn json_rows(bytes: &[u8], ndjson: bool) -> Vec<Value> {
    if ndjson {
        std::str::from_utf8(bytes)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    } else {
        serde_json::from_slice::<Vec<Value>>(bytes).expect("json array")
    }
}

/// Reads Parquet back with the parquet crate, checking the physical types on the way.
fn parquet_rows(bytes: Vec<u8>) -> (Vec<Value>, parquet::basic::Compression) {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).expect("parquet file");
    let codec = builder
        .metadata()
        .row_groups()
        .first()
        .map(|rg| rg.column(0).compression());
    let schema = builder.schema().clone();
    assert_eq!(
        schema.field_with_name("qty").expect("qty").data_type(),
        &DataType::Int64
    );
    assert_eq!(
        schema.field_with_name("price").expect("price").data_type(),
        &DataType::Float64
    );
    assert_eq!(
        schema.field_with_name("ok").expect("ok").data_type(),
        &DataType::Boolean
    );
    assert_eq!(
        schema.field_with_name("at").expect("at").data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let mut rows = Vec::new();
    for batch in builder.build().expect("reader") {
        let batch = batch.expect("batch");
        for i in 0..batch.num_rows() {
            let mut o = serde_json::Map::new();
            for (f, col) in schema.fields().iter().zip(batch.columns()) {
                let v = if col.is_null(i) {
                    Value::Null
                } else {
                    match f.name().as_str() {
                        "qty" | "_id" => json!(
                            col.as_any()
                                .downcast_ref::<Int64Array>()
                                .expect("i64")
                                .value(i)
                        ),
                        "price" => json!(
                            col.as_any()
                                .downcast_ref::<Float64Array>()
                                .expect("f64")
                                .value(i)
                        ),
                        "ok" => json!(
                            col.as_any()
                                .downcast_ref::<BooleanArray>()
                                .expect("bool")
                                .value(i)
                        ),
                        "at" => {
                            let us = col
                                .as_any()
                                .downcast_ref::<TimestampMicrosecondArray>()
                                .expect("ts")
                                .value(i);
                            let t = chrono::DateTime::from_timestamp_micros(us).expect("time");
                            json!(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                        }
                        "meta" => serde_json::from_str(
                            col.as_any()
                                .downcast_ref::<StringArray>()
                                .expect("str")
                                .value(i),
                        )
                        .expect("json"),
                        _ => json!(
                            col.as_any()
                                .downcast_ref::<StringArray>()
                                .expect("str")
                                .value(i)
                        ),
                    }
                };
                o.insert(f.name().clone(), v);
            }
            rows.push(Value::Object(o));
        }
    }
    (
        rows,
        codec.unwrap_or(parquet::basic::Compression::UNCOMPRESSED),
    )
}

/// Timestamps compared as instants (formats may differ in fraction digits).
fn normalize(mut rows: Vec<Value>) -> Vec<Value> {
    for r in &mut rows {
        if let Some(at) = r.get_mut("at")
            && let Some(s) = at.as_str()
        {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .expect("rfc3339")
                .timestamp_micros();
            *at = json!(t);
        }
    }
    rows
}

#[tokio::test]
async fn every_format_round_trips_exactly() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let rows = tricky_rows();
    let (p, wf) = setup(&app, &rows).await;
    let want = normalize(with_ids(&rows, &ALL));
    for (format, compression) in [
        ("csv", "none"),
        ("csv", "gzip"),
        ("tsv", "none"),
        ("tsv", "gzip"),
        ("json", "none"),
        ("json", "gzip"),
        ("ndjson", "none"),
        ("ndjson", "gzip"),
        ("parquet", "zstd"),
        ("parquet", "snappy"),
        ("parquet", "none"),
    ] {
        // Each job run in this process: no worker, no polling.
        let status = app
            .export_now(
                &p.key,
                &wf,
                &json!({"format": format, "compression": compression}),
            )
            .await;
        assert_eq!(status["rowCount"], 5, "{format}/{compression}: {status}");
        assert_eq!(status["attempts"], 1);
        let mut bytes = app.export_file(&status).await;
        if compression == "gzip" {
            bytes = gunzip(&bytes);
        }
        let got = match format {
            "csv" | "tsv" => {
                let sep = if format == "tsv" { b'\t' } else { b',' };
                let (headers, got) = csv_rows(&bytes, sep);
                assert_eq!(headers, ALL);
                let text = String::from_utf8(bytes.clone()).expect("utf8");
                let line =
                    ["\"\"", "", "-9007199254740993", "", "", ""].join(&(sep as char).to_string());
                // An empty string is quoted; a null is an empty field.
                assert!(text.contains(&format!("\n{line}\n")), "{format}: {text}");
                if format == "tsv" {
                    assert!(
                        text.starts_with("title\tprice\tqty\tok\tat\tmeta\n"),
                        "{text}"
                    );
                    // The value holding a tab (and a quote, a newline) is quoted, its quotes doubled.
                    assert!(
                        text.contains("\"comma, \"\"quote\"\" and\nnewline\ttab\"\t9.5\t"),
                        "{text}"
                    );
                }
                // CSV cannot tell an empty string from a null once parsed; compare the rest.
                let mut want_csv = want.clone();
                want_csv[1]["title"] = Value::Null;
                assert_eq!(normalize(got), want_csv, "{format}/{compression}");
                continue;
            }
            "json" => json_rows(&bytes, false),
            "ndjson" => json_rows(&bytes, true),
            _ => {
                let (got, codec) = parquet_rows(bytes);
                let expected = match compression {
                    "zstd" => matches!(codec, parquet::basic::Compression::ZSTD(_)),
                    "snappy" => codec == parquet::basic::Compression::SNAPPY,
                    _ => codec == parquet::basic::Compression::UNCOMPRESSED,
                };
                assert!(expected, "{compression}: {codec:?}");
                got
            }
        };
        assert_eq!(normalize(got), want, "{format}/{compression}");
    }
}

/// A format added through the registry is whole: its name in the status, its content type
/// and extension on the download, its compressions checked like every format's.
#[tokio::test]
async fn tsv_downloads_as_tab_separated_values() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let (p, wf) = setup(&app, &tricky_rows()).await;
    // No worker: the test runs each job itself.
    let id = app
        .create_export(
            &p.key,
            &wf,
            &json!({"format": "tsv", "columns": ["_id", "qty"]}),
        )
        .await;
    let outcome = app.run_next_job().await;
    assert!(
        matches!(
            outcome,
            wharf_shared::export::Outcome::Completed { rows: 5, .. }
        ),
        "{outcome:?}"
    );
    let status: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], "COMPLETED", "{status}");
    assert_eq!(status["format"], "tsv", "{status}");
    assert_eq!(status["compression"], "none", "{status}");
    let id = status["exportId"].as_str().expect("id");
    let res = app
        .get(&format!("/v1/exports/{id}/download?mode=stream"), &p.key)
        .await;
    assert_eq!(res.status(), 200);
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        header("content-type"),
        "text/tab-separated-values; charset=utf-8"
    );
    let disposition = header("content-disposition");
    assert!(disposition.ends_with(".tsv\""), "{disposition}");
    let body = res.text().await.expect("body");
    assert_eq!(
        body,
        "_id\tqty\n1\t3\n2\t-9007199254740993\n3\t0\n4\t42\n5\t7\n"
    );

    let gz_id = app
        .create_export(
            &p.key,
            &wf,
            &json!({"format": "tsv", "compression": "gzip"}),
        )
        .await;
    app.run_next_job().await;
    let gz: Value = app
        .get(&format!("/v1/exports/{gz_id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    let res = app
        .get(
            &format!(
                "/v1/exports/{}/download?mode=stream",
                gz["exportId"].as_str().expect("id")
            ),
            &p.key,
        )
        .await;
    let disposition = res
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(disposition.ends_with(".tsv.gz\""), "{disposition}");

    let res = app
        .post_export(
            &p.key,
            &wf,
            &json!({"format": "tsv", "compression": "zstd"}),
        )
        .await;
    let (code, message) = assert_envelope(res, 400).await;
    assert_eq!(code, "INVALID_REQUEST");
    assert!(
        message.starts_with("compression: tsv takes none, gzip"),
        "{message}"
    );
}

#[tokio::test]
async fn status_and_dock_status_follow_the_lifecycle() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let rows = tricky_rows();
    let (p, wf) = setup(&app, &rows).await;
    let res = app
        .post_export(&p.key, &wf, &json!({"format": "ndjson"}))
        .await;
    assert_eq!(res.status(), 202);
    let created: Value = res.json().await.expect("json");
    let id = created["exportId"].as_str().expect("id").to_string();
    assert_eq!(created["exportJobId"], created["exportId"]);
    assert_eq!(created["status"], "QUEUED");
    assert_eq!(
        created["statusUrl"],
        format!("{}/v1/exports/{id}", app.address)
    );
    assert_eq!(
        created["downloadUrl"],
        format!("{}/v1/exports/{id}/download", app.address)
    );
    let dock = created["dockStatusId"].as_str().expect("dock").to_string();
    // No worker yet: it stays QUEUED.
    let queued: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(queued["status"], "QUEUED");
    assert_eq!(queued["attempts"], 0);
    assert_eq!(queued["url"], Value::Null);
    let d: Value = app
        .get(&format!("/v1/dock-status/{dock}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            d["status"].as_str(),
            d["jobType"].as_str(),
            d["action"].as_str()
        ),
        (Some("IN_PROGRESS"), Some("EXPORT"), Some("EXPORT"))
    );
    let _worker = app.start_worker().await;
    let done = app.wait_done(&p.key, &id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["progress"]["percent"], 100.0);
    assert_eq!(done["progress"]["rowsWritten"], 5);
    assert!(
        done["startedAt"].is_string()
            && done["completedAt"].is_string()
            && done["executedAt"].is_string()
    );
    assert!(
        done["url"].as_str().is_some_and(
            |u| u.starts_with(&format!("{}/v1/exports/{id}/file?expires=", app.address))
        )
    );
    let exp = chrono::DateTime::parse_from_rfc3339(done["expiresAt"].as_str().expect("expiresAt"))
        .expect("time");
    let days = (exp.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((167..=168).contains(&days), "7 days of retention: {days}h");
    let d: Value = app
        .get(&format!("/v1/dock-status/{dock}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(d["status"], "SUCCESS");
    assert_eq!(d["response"]["downloadUrl"], created["downloadUrl"]);
    // Listed newest first, filterable by status.
    let list: Value = app
        .get(
            &format!("/v1/workflows/{wf}/exports?status=COMPLETED"),
            &p.key,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"][0]["exportId"].as_str(), Some(id.as_str()));
    let list: Value = app
        .get(&format!("/v1/workflows/{wf}/exports?status=FAILED"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"], json!([]));
    assert_envelope(
        app.get(&format!("/v1/workflows/{wf}/exports?status=DONE"), &p.key)
            .await,
        400,
    )
    .await;
    // Cancel of a completed export: 409.
    let res = app
        .post_json(&format!("/v1/exports/{id}/cancel"), &p.key, &json!({}))
        .await;
    assert_eq!(assert_envelope(res, 409).await.0, "CONFLICT");
}
