//! Datasets (API.md "Large exports"): one export built as parts by several workers, its files
//! and manifest, its downloads, and what cancel, a fatal part and a killed worker leave.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{S3Server, TestApp, assert_envelope, spawn_app, spawn_app_with};

/// A workflow of `rows` rows (n, s, country, seen_at), ingested as one streamed NDJSON run:
/// small rows, so a million of them ingest in seconds.
async fn rows_workflow(app: &TestApp, key: &str, rows: u64) -> String {
    use futures::StreamExt;
    let wf = app
        .create_workflow(
            key,
            "Rows",
            json!([{"name": "n", "type": "integer"}, {"name": "s", "type": "string"},
                   {"name": "country", "type": "string", "nullable": true},
                   {"name": "seen_at", "type": "timestamp"}]),
        )
        .await;
    let chunks = futures::stream::iter(0..rows.div_ceil(50_000)).map(move |c| {
        let s: String = (c * 50_000..((c + 1) * 50_000).min(rows))
            .map(|n| {
                let country = ["\"FR\"", "\"DE\"", "\"US/CA\"", "null"][(n % 4) as usize];
                format!(
                    "{{\"n\":{n},\"s\":\"r{n}\",\"country\":{country},\"seen_at\":\"2026-01-0{}T10:00:00Z\"}}\n",
                    1 + n % 3
                )
            })
            .collect();
        Ok::<_, std::io::Error>(bytes::Bytes::from(s))
    });
    let res = app
        .post_run(
            key,
            &wf,
            "application/x-ndjson",
            reqwest::Body::wrap_stream(chunks),
        )
        .await;
    assert_eq!(res.status(), 201, "ingest");
    wf
}

/// Polls until the export is finished (`secs` at most).
async fn finished(app: &TestApp, key: &str, id: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s: Value = app
            .get(&format!("/v1/exports/{id}"), key)
            .await
            .json()
            .await
            .expect("json");
        if !matches!(s["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "still running: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bytes_of(app: &TestApp, key: &str, path: &str) -> Vec<u8> {
    let res = app.get(path, key).await;
    assert_eq!(res.status(), 200, "{path}");
    res.bytes().await.expect("body").to_vec()
}

/// Every file of a COMPLETED dataset by `/files/{path}?mode=stream`, in manifest order, each
/// checked against the manifest's size and sha256.
async fn dataset_files(app: &TestApp, key: &str, status: &Value) -> Vec<(String, Vec<u8>)> {
    use sha2::Digest;
    let id = status["exportId"].as_str().expect("id");
    let mut out = Vec::new();
    for f in status["files"].as_array().expect("files") {
        let path = f["path"].as_str().expect("path");
        // The path as a URL's path: its own percent signs encoded.
        let url_path = path.replace('%', "%25");
        let body = bytes_of(
            app,
            key,
            &format!("/v1/exports/{id}/files/{url_path}?mode=stream"),
        )
        .await;
        assert_eq!(f["bytes"].as_u64(), Some(body.len() as u64), "{path}");
        assert_eq!(
            f["sha256"].as_str(),
            Some(hex::encode(sha2::Sha256::digest(&body)).as_str())
        );
        out.push((path.to_string(), body));
    }
    out
}

/// The keys stored under the export's prefix.
async fn stored(app: &TestApp, id: &str) -> Vec<String> {
    let store = app.store().await;
    store.list(&format!("exports/{id}/")).await.expect("list")
}

/// Waits until nothing of the export is stored (its files removed), `secs` at most.
async fn nothing_left(app: &TestApp, id: &str, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = stored(app, id).await;
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "files left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn parquet_rows(bytes: Vec<u8>) -> Vec<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("parquet");
    reader
        .get_row_iter(None)
        .expect("rows")
        .map(|r| r.expect("row").to_string())
        .collect()
}

#[tokio::test]
async fn a_million_rows_in_ten_files_built_by_two_workers_equal_the_single_file() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let p = app.create_project("acme").await;
    let wf = rows_workflow(&app, &p.key, 1_000_000).await;
    let _a = app.spawn_worker_process_with(1, &[]);
    let _b = app.spawn_worker_process_with(1, &[]);
    let body = json!({"format": "csv", "maxRowsPerFile": 100_000, "parallelism": 4});
    let id = app.create_export(&p.key, &wf, &body).await;
    let done = finished(&app, &p.key, &id, 180).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["rowCount"], 1_000_000);
    assert_eq!(done["parts"], json!({"total": 4, "completed": 4}));
    let files = dataset_files(&app, &p.key, &done).await;
    assert_eq!(files.len(), 10);
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths[0], "part-00000.csv");
    assert_eq!(paths[9], "part-00009.csv");
    // Both workers built parts: the ledger says which worker finished each.
    let builders: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT worker_id) FROM jobs WHERE parent_id = $1 AND kind = 'part'",
    )
    .bind(wharf_tests::parse(&id))
    .fetch_one(&db.pool)
    .await
    .expect("q");
    assert_eq!(builders, 2, "both workers built parts");
    // Concatenated (the header once), the files are the single-file export byte for byte.
    let single = app
        .export_and_wait(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    let whole = app.export_file(&single).await;
    let header_len = whole.iter().position(|b| *b == b'\n').expect("header") + 1;
    let mut joined = Vec::with_capacity(whole.len());
    for (i, (_, bytes)) in files.iter().enumerate() {
        assert_eq!(
            &bytes[..header_len],
            &whole[..header_len],
            "a header in every file"
        );
        joined.extend_from_slice(if i == 0 { bytes } else { &bytes[header_len..] });
    }
    assert!(
        joined == whole,
        "the parts concatenated are the single file"
    );
    // The manifest as stored, and as the download gives it (a signed link per file).
    let stored_manifest: Value =
        serde_json::from_slice(&app.object(&format!("exports/{id}/manifest.json")).await)
            .expect("manifest");
    assert_eq!(stored_manifest["rowCount"], 1_000_000);
    assert_eq!(stored_manifest["files"].as_array().map(Vec::len), Some(10));
    let manifest: Value = app
        .get(&format!("/v1/exports/{id}/download?mode=stream"), &p.key)
        .await
        .json()
        .await
        .expect("manifest");
    let url = manifest["files"][3]["url"].as_str().expect("signed url");
    let signed = reqwest::get(url).await.expect("signed link");
    assert_eq!(signed.status(), 200);
    assert_eq!(signed.bytes().await.expect("body").to_vec(), files[3].1);
    // The same request as Parquet: the files' rows, in manifest order, are the single file's.
    let body = json!({"format": "parquet", "maxRowsPerFile": 100_000, "parallelism": 4});
    let id = app.create_export(&p.key, &wf, &body).await;
    let done = finished(&app, &p.key, &id, 180).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let mut rows = Vec::with_capacity(1_000_000);
    for (_, bytes) in dataset_files(&app, &p.key, &done).await {
        rows.extend(parquet_rows(bytes));
    }
    let single = app
        .export_and_wait(&p.key, &wf, &json!({"format": "parquet"}))
        .await;
    let whole = parquet_rows(app.export_file(&single).await);
    assert_eq!(rows.len(), 1_000_000);
    assert!(rows == whole, "row for row the single file's");
}

#[tokio::test]
async fn parquet_parts_hold_the_single_files_rows_in_order_and_zip_holds_them_all() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let p = app.create_project("acme").await;
    let wf = rows_workflow(&app, &p.key, 25_000).await;
    let _w = app.start_worker().await;
    // Sorted by another field: parts cut by position in that order.
    let body =
        json!({"format": "parquet", "maxRowsPerFile": 4_000, "sortBy": "s", "order": "desc"});
    let done = app.export_and_wait(&p.key, &wf, &body).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let files = dataset_files(&app, &p.key, &done).await;
    assert_eq!(files.len(), 7);
    let mut rows = Vec::new();
    for (_, bytes) in &files {
        rows.extend(parquet_rows(bytes.clone()));
    }
    let single = app
        .export_and_wait(
            &p.key,
            &wf,
            &json!({"format": "parquet", "sortBy": "s", "order": "desc"}),
        )
        .await;
    let whole = parquet_rows(app.export_file(&single).await);
    assert_eq!(rows.len(), 25_000);
    assert!(rows == whole, "row for row the single file's");
    // Every file and the manifest as one ZIP.
    let id = done["exportId"].as_str().expect("id");
    let zipped = bytes_of(&app, &p.key, &format!("/v1/exports/{id}/download?mode=zip")).await;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).expect("zip");
    assert_eq!(archive.len(), 8);
    let mut first = Vec::new();
    std::io::Read::read_to_end(
        &mut archive.by_name("part-00000.parquet").expect("entry"),
        &mut first,
    )
    .expect("read");
    assert_eq!(first, files[0].1);
    assert!(archive.by_name("manifest.json").is_ok());
    // A single file has no files of a dataset; a dataset has no file at another path.
    let single_id = single["exportId"].as_str().expect("id");
    let res = app
        .get(
            &format!("/v1/exports/{single_id}/files/part-00000.parquet"),
            &p.key,
        )
        .await;
    assert_envelope(res, 400).await;
    let res = app
        .get(
            &format!("/v1/exports/{id}/files/part-99999.parquet"),
            &p.key,
        )
        .await;
    assert_envelope(res, 404).await;
}

#[tokio::test]
async fn partitions_are_hive_paths_holding_only_their_values() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let p = app.create_project("acme").await;
    let wf = rows_workflow(&app, &p.key, 6_000).await;
    let _w = app.start_worker().await;
    let body =
        json!({"format": "csv", "partitionBy": ["country", {"field": "seen_at", "by": "day"}]});
    let done = app.export_and_wait(&p.key, &wf, &body).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let files = dataset_files(&app, &p.key, &done).await;
    // 4 countries (null one of them) × 3 days.
    assert_eq!(
        files.len(),
        12,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let mut total = 0;
    for (path, bytes) in &files {
        let (country, rest) = path.split_once('/').expect("two levels");
        let (day, name) = rest.split_once('/').expect("a file");
        assert_eq!(name, "part-00000.csv");
        let country = country.strip_prefix("country=").expect("hive key");
        let day = day.strip_prefix("seen_at=").expect("hive key");
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        for row in reader.records() {
            let row = row.expect("csv");
            let want = match country {
                "__null__" => "",
                "US%2FCA" => "US/CA",
                c => c,
            };
            assert_eq!(&row[2], want, "{path}");
            assert!(row[3].starts_with(day), "{path}: {}", &row[3]);
            total += 1;
        }
    }
    assert_eq!(total, 6_000);
    let partition = &done["files"][0]["partition"];
    assert!(partition.get("country").is_some(), "{partition}");
}

#[tokio::test]
async fn dataset_options_are_checked_and_the_error_names_the_field() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(
            &p.key,
            "Typed",
            json!([{"name": "n", "type": "integer"}, {"name": "price", "type": "number"},
                   {"name": "meta", "type": "json"}, {"name": "at", "type": "timestamp"},
                   {"name": "a", "type": "string"}, {"name": "b", "type": "string"},
                   {"name": "c", "type": "string"}, {"name": "d", "type": "string"}]),
        )
        .await;
    for (body, names) in [
        (json!({"maxRowsPerFile": 10}), "maxRowsPerFile"),
        (json!({"maxFileBytes": 1024}), "maxFileBytes"),
        (json!({"parallelism": 0}), "parallelism"),
        (json!({"parallelism": 65}), "parallelism"),
        (json!({"partitionBy": ["meta"]}), "partitionBy[0]"),
        (json!({"partitionBy": ["price"]}), "partitionBy[0]"),
        (json!({"partitionBy": ["at"]}), "partitionBy[0]"),
        (
            json!({"partitionBy": [{"field": "at", "by": "week"}]}),
            "partitionBy[0]",
        ),
        (json!({"partitionBy": ["a", "b", "c", "d"]}), "partitionBy"),
        (json!({"partitionBy": ["nope"]}), "partitionBy[0]"),
        (json!({"partitionBy": []}), "partitionBy"),
    ] {
        let res = app.post_export(&p.key, &wf, &body).await;
        let (code, message) = assert_envelope(res, 400).await;
        assert_eq!(code, "INVALID_REQUEST");
        assert!(message.starts_with(names), "{body}: {message}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM exports")
        .fetch_one(&db.pool)
        .await
        .expect("q");
    assert_eq!(n, 0, "nothing stored");
}

#[tokio::test]
async fn more_partitions_than_allowed_fail_before_any_file() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let p = app.create_project("acme").await;
    let wf = rows_workflow(&app, &p.key, 10_001).await;
    let id = app
        .create_export(&p.key, &wf, &json!({"partitionBy": ["s"]}))
        .await;
    let outcome = app.run_next_job().await;
    assert!(
        matches!(outcome, wharf_shared::export::Outcome::Failed { .. }),
        "{outcome:?}"
    );
    let s: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["error"]["code"], "TOO_MANY_PARTITIONS", "{s}");
    assert!(stored(&app, &id).await.is_empty());
}

#[tokio::test]
async fn a_part_failing_fatally_fails_the_export_and_leaves_no_file() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let p = app.create_project("acme").await;
    let wf = rows_workflow(&app, &p.key, 8_000).await;
    let body = json!({"format": "ndjson", "maxRowsPerFile": 1_000, "parallelism": 4});
    let id = app.create_export(&p.key, &wf, &body).await;
    let planned = app.run_next_job().await;
    assert!(
        matches!(planned, wharf_shared::export::Outcome::Planned { ref jobs } if jobs.len() == 4),
        "{planned:?}"
    );
    let first = app.run_next_job().await;
    assert!(
        matches!(first, wharf_shared::export::Outcome::PartDone),
        "{first:?}"
    );
    assert_eq!(
        stored(&app, &id).await.len(),
        2,
        "the first part's two files"
    );
    // The schema changed under the export (a column it selects is gone): fatal for a part.
    sqlx::query(
        "UPDATE exports SET params = jsonb_set(params, '{columns}', '[\"gone\"]') WHERE id = $1",
    )
    .bind(wharf_tests::parse(&id))
    .execute(&db.pool)
    .await
    .expect("q");
    let failed = app.run_next_job().await;
    assert!(
        matches!(failed, wharf_shared::export::Outcome::Failed { .. }),
        "{failed:?}"
    );
    let s: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["status"], "FAILED", "{s}");
    assert_eq!(s["error"]["code"], "INVALID_REQUEST");
    let states: Vec<String> =
        sqlx::query_scalar("SELECT status FROM jobs WHERE parent_id = $1 ORDER BY created_at")
            .bind(wharf_tests::parse(&id))
            .fetch_all(&db.pool)
            .await
            .expect("q");
    assert_eq!(states, ["SUCCEEDED", "FAILED", "CANCELLED", "CANCELLED"]);
    assert!(stored(&app, &id).await.is_empty(), "no file left");
    // Nothing else is claimable: the cancelled parts stay cancelled.
    assert!(matches!(
        app.run_next_job().await,
        wharf_shared::export::Outcome::Skipped
    ));
    let res = app.get(&format!("/v1/exports/{id}/download"), &p.key).await;
    assert_envelope(res, 409).await;
}

#[tokio::test]
async fn a_cancelled_dataset_leaves_no_file() {
    let db = TestDb::new().await;
    let s3 = S3Server::start().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let p = app.create_project("acme").await;
    let wf = rows_workflow(&app, &p.key, 30_000).await;
    let body = json!({"format": "csv", "maxRowsPerFile": 5_000, "parallelism": 3});
    let id = app.create_export(&p.key, &wf, &body).await;
    // Planned, and one part's files written.
    app.run_next_job().await;
    assert!(matches!(
        app.run_next_job().await,
        wharf_shared::export::Outcome::PartDone
    ));
    assert_eq!(stored(&app, &id).await.len(), 2);
    // Another part under way in a worker process, held mid-upload.
    s3.pause();
    let _w = app.spawn_worker_process_with(1, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE parent_id = $1 AND status = 'RUNNING'",
        )
        .bind(wharf_tests::parse(&id))
        .fetch_one(&db.pool)
        .await
        .expect("q");
        if running > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no part started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = app
        .post_json(&format!("/v1/exports/{id}/cancel"), &p.key, &json!({}))
        .await;
    assert_eq!(res.status(), 202);
    s3.resume();
    nothing_left(&app, &id, 30).await;
    let parts: Vec<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE parent_id = $1")
        .bind(wharf_tests::parse(&id))
        .fetch_all(&db.pool)
        .await
        .expect("q");
    assert!(
        parts.iter().all(|s| s == "SUCCEEDED" || s == "CANCELLED"),
        "{parts:?}"
    );
    // What the cancelled part was writing went too, once it heard (no file ever reappears).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(stored(&app, &id).await.is_empty());
    let res = app.get(&format!("/v1/exports/{id}/download"), &p.key).await;
    assert_envelope(res, 409).await;
}

#[tokio::test]
async fn a_worker_killed_mid_part_is_replaced_and_only_its_part_is_redone() {
    let db = TestDb::new().await;
    let s3 = S3Server::start().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let p = app.create_project("acme").await;
    let wf = rows_workflow(&app, &p.key, 200_000).await;
    let fast = [("WHARF_LEASE", "3s"), ("WHARF_REQUEUE_AFTER", "2s")];
    let body = json!({"format": "csv", "maxRowsPerFile": 20_000, "parallelism": 4});
    let id = app.create_export(&p.key, &wf, &body).await;
    let mut a = app.spawn_worker_process_with(1, &fast);
    app.poll_export(&p.key, &id, "a part done", |s| {
        s["parts"]["completed"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    s3.pause();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("-KILL");
    assert!(a.wait_exit(5));
    let _b = app.spawn_worker_process_with(2, &fast);
    s3.resume();
    let done = finished(&app, &p.key, &id, 120).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["rowCount"], 200_000);
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM jobs WHERE parent_id = $1 ORDER BY created_at")
            .bind(wharf_tests::parse(&id))
            .fetch_all(&db.pool)
            .await
            .expect("q");
    assert_eq!(attempts.len(), 4);
    assert_eq!(
        attempts[0], 1,
        "the finished part is not redone: {attempts:?}"
    );
    assert_eq!(
        attempts.iter().filter(|a| **a == 2).count(),
        1,
        "{attempts:?}"
    );
    let files = dataset_files(&app, &p.key, &done).await;
    assert_eq!(files.len(), 10);
    // No orphan: once the janitor looked, the prefix holds the files and the manifest only.
    let ctx = wharf_worker::startup::context(&app.settings, db.pool.clone()).await;
    wharf_worker::janitor::abort_orphans(&ctx, Duration::ZERO)
        .await
        .expect("janitor");
    let mut keys = stored(&app, &id).await;
    keys.sort();
    let mut want: Vec<String> = files
        .iter()
        .map(|(p, _)| format!("exports/{id}/{p}"))
        .chain([format!("exports/{id}/manifest.json")])
        .collect();
    want.sort();
    assert_eq!(keys, want);
    let rows: usize = files
        .iter()
        .map(|(_, b)| b.iter().filter(|c| **c == b'\n').count() - 1)
        .sum();
    assert_eq!(rows, 200_000);
}
