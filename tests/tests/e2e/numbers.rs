//! Numbers come back bit for bit: random f64 through every ingest format and every export
//! format, and digits inside `json` fields that no f64 could hold.

use arrow_array::{Array, Float64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::spawn_app;

/// 20,000 finite f64: random bit patterns (subnormals and extremes among them) and the edges.
fn values() -> Vec<f64> {
    let mut out = vec![
        0.0,
        -0.0,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        123_456_789.123_456_79,
        0.1,
        1.0 / 3.0,
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < 20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Half of them uniform in bits (every exponent), half of human magnitudes.
        let f = if seed.is_multiple_of(2) {
            f64::from_bits(seed)
        } else {
            (seed >> 11) as f64 / (1u64 << 20) as f64 * if seed & 4 == 0 { 1.0 } else { -1.0 }
        };
        if f.is_finite() {
            out.push(f);
        }
    }
    out
}

/// The text a client sends: the shortest form, or 17 significant digits (which must still
/// round to the same f64).
fn text(i: usize, f: f64) -> String {
    if i.is_multiple_of(3) {
        format!("{f:.16e}")
    } else {
        format!("{f:?}")
    }
}

fn same_bits(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let wrong: Vec<_> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "{what}: {wrong:?}");
}

/// The first column of a Parquet file, every row group, through `values`.
fn first_column<T>(bytes: Vec<u8>, values: impl Fn(&dyn Array) -> Vec<T>) -> Vec<T> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .expect("parquet")
        .build()
        .expect("reader");
    reader
        .flat_map(|batch| values(batch.expect("batch").column(0).as_ref()))
        .collect()
}

fn from_text(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("a number: {s:?}"))
}

#[tokio::test]
async fn random_floats_come_back_bit_for_bit() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "Floats", json!([{"name": "x", "type": "number"}]))
        .await;
    let want = values();
    let ndjson: String = want
        .iter()
        .enumerate()
        .map(|(i, f)| format!("{{\"x\": {}}}\n", text(i, *f)))
        .collect();
    let array = format!(
        "[{}]",
        want.iter()
            .enumerate()
            .map(|(i, f)| format!("{{\"x\": {}}}", text(i, *f)))
            .collect::<Vec<_>>()
            .join(",\n")
    );
    let csv: String = std::iter::once("x\n".to_string())
        .chain(
            want.iter()
                .enumerate()
                .map(|(i, f)| format!("{}\n", text(i, *f))),
        )
        .collect();
    for (ct, body) in [
        ("application/x-ndjson", ndjson),
        ("application/json", array),
        ("text/csv", csv),
    ] {
        let res = app.post_run(&p.key, &wf, ct, body).await;
        let run: Value = res.json().await.expect("json");
        let run_id = run["runId"].as_str().expect("runId").to_string();
        for format in ["csv", "json", "ndjson", "parquet"] {
            let status = app
                .export_and_wait(&p.key, &wf, &json!({"format": format, "runId": run_id}))
                .await;
            let bytes = app.export_file(&status).await;
            let got: Vec<f64> = match format {
                "csv" => String::from_utf8(bytes)
                    .expect("utf-8")
                    .lines()
                    .skip(1)
                    .map(from_text)
                    .collect(),
                "json" => serde_json::from_slice::<Vec<Value>>(&bytes)
                    .expect("json")
                    .iter()
                    .map(|r| from_text(&r["x"].to_string()))
                    .collect(),
                "ndjson" => String::from_utf8(bytes)
                    .expect("utf-8")
                    .lines()
                    .map(|l| {
                        let v: Value = serde_json::from_str(l).expect("json");
                        from_text(&v["x"].to_string())
                    })
                    .collect(),
                _ => first_column(bytes, |col| {
                    let col = col
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .expect("a double column");
                    (0..col.len()).map(|i| col.value(i)).collect::<Vec<_>>()
                }),
            };
            same_bits(&got, &want, &format!("{ct} → {format}"));
        }
    }
}

#[tokio::test]
async fn json_fields_keep_every_digit() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "Big", json!([{"name": "j", "type": "json"}]))
        .await;
    let big = "1234567890123456789012345678901234567890";
    let tiny = "0.1000000000000000000000000000000000000001";
    let raw = format!("{{\"j\": {{\"big\": {big}, \"tiny\": {tiny}, \"neg\": -{big}}}}}\n");
    let csv = format!("j\n\"{{\"\"big\"\": {big}}}\"\n");
    let run1: Value = app
        .post_run(&p.key, &wf, "application/x-ndjson", raw)
        .await
        .json()
        .await
        .expect("json");
    let run2: Value = app
        .post_run(&p.key, &wf, "text/csv", csv)
        .await
        .json()
        .await
        .expect("json");
    for (run, want) in [
        (&run1["runId"], vec![big, tiny]),
        (&run2["runId"], vec![big]),
    ] {
        for format in ["csv", "json", "ndjson", "parquet"] {
            let body = json!({"format": format, "runId": run});
            let status = app.export_and_wait(&p.key, &wf, &body).await;
            let bytes = app.export_file(&status).await;
            let text = if format == "parquet" {
                first_column(bytes, |col| {
                    let col = col
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("json as text");
                    (0..col.len())
                        .map(|i| col.value(i).to_string())
                        .collect::<Vec<_>>()
                })
                .concat()
            } else {
                String::from_utf8(bytes).expect("utf-8")
            };
            for digits in &want {
                assert!(text.contains(digits), "{format}: {text}");
            }
        }
    }
}
