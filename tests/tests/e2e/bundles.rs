//! Bundles (a workflow's or a project's definitions and data as one ZIP) and imports, through
//! the native, Kore.ai and Zangtable routes, against the real services.

use std::io::{Read, Write};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use sha2::Digest;
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, TestProject, spawn_app};

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

/// Two runs' worth of rows whose text breaks naive writers; `salt` varies them per workflow.
fn rows(salt: i64, run: i64) -> String {
    let rows = [
        json!({"title": format!("comma, \"quote\" and\nnewline\ttab {salt}"), "price": 9.5, "qty": salt * 10 + run, "ok": true,
               "at": "2024-05-01T12:30:00.123456Z", "meta": {"tags": ["x", 1], "n": null, "big": 12345678901234567890123_u128.to_string()}}),
        json!({"title": "", "price": null, "qty": -9_007_199_254_740_993_i64, "ok": null, "at": null, "meta": null}),
        json!({"title": "🚀 emoji, שלום RTL, =SUM(A1)", "price": 1e300, "qty": run, "ok": false,
               "at": "0001-01-01T00:00:00Z", "meta": [1.5e-7, "two", 1.0]}),
        json!({"title": null, "price": -0.0, "qty": 42, "ok": true, "at": "9999-12-31T23:59:59.999999Z", "meta": "s"}),
        json!({"title": "\\backslash\r\ncrlf\u{202e}", "price": 0.1, "qty": 7, "ok": false, "at": "2030-01-01T00:00:00Z", "meta": {}}),
    ];
    rows.iter()
        .take(3 + run as usize)
        .map(|r| format!("{r}\n"))
        .collect()
}

/// A project with 3 workflows of every field type, 2 runs each.
pub(crate) async fn project_with_data(app: &TestApp, slug: &str) -> (TestProject, Vec<String>) {
    let p = app.create_project(slug).await;
    let mut wfs = Vec::new();
    for (i, name) in ["Products", "Prices ünïcode", "Third/one \"quoted\""]
        .iter()
        .enumerate()
    {
        let wf = app.create_workflow(&p.key, name, schema()).await;
        for run in 0..2 {
            let res = app
                .post_run(&p.key, &wf, "application/x-ndjson", rows(i as i64, run))
                .await;
            assert_eq!(res.status(), 201, "run stored");
        }
        wfs.push(wf);
    }
    (p, wfs)
}

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Posts a bundle to /v1/imports and waits for the import to end; returns its status.
pub(crate) async fn import(app: &TestApp, key: &str, bundle: Vec<u8>, query: &str) -> Value {
    let res = app
        .client
        .post(app.url(&format!("/v1/imports{query}")))
        .header("x-api-key", key)
        .header("content-type", "application/zip")
        .body(bundle)
        .send()
        .await
        .expect("sent");
    let (status, created) = json_of(res).await;
    assert_eq!(status, 202, "import accepted: {created}");
    assert_eq!(created["status"], "QUEUED");
    let id = created["importId"].as_str().expect("importId").to_string();
    wait_import(app, key, &id).await
}

async fn wait_import(app: &TestApp, key: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = json_of(app.get(&format!("/v1/imports/{id}"), key).await).await;
        assert_eq!(status, 200, "{body}");
        if !matches!(body["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "import still {body}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A database bundle of the project of `admin_key` (slug `slug`), by Zangtable's route.
pub(crate) async fn database_bundle(app: &TestApp, slug: &str, admin_key: &str) -> Vec<u8> {
    let (status, body) = json_of(
        app.post_json(
            &format!("/projects/{slug}/export"),
            admin_key,
            &json!({"scope": "database"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let exp = body["data"]["export_id"].as_str().expect("export_id");
    assert!(exp.starts_with("exp_") && exp.len() == 36, "{exp}");
    let id = uuid::Uuid::parse_str(&exp[4..]).expect("hex id");
    let done = app.wait_done(admin_key, &id.to_string()).await;
    assert_eq!(done["format"], "bundle");
    assert_eq!(done["scope"], "database");
    app.export_file(&done).await
}

pub(crate) fn open(bundle: &[u8]) -> zip::ZipArchive<std::io::Cursor<Vec<u8>>> {
    zip::ZipArchive::new(std::io::Cursor::new(bundle.to_vec())).expect("a ZIP any reader opens")
}

pub(crate) fn entry(
    archive: &mut zip::ZipArchive<std::io::Cursor<Vec<u8>>>,
    name: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    archive
        .by_name(name)
        .unwrap_or_else(|_| panic!("{name} in the bundle"))
        .read_to_end(&mut out)
        .expect("reads, CRC checked");
    out
}

async fn run_ids(app: &TestApp, key: &str, wf: &str) -> Vec<(String, String)> {
    let (_, body) = json_of(app.get(&format!("/v1/workflows/{wf}/runs"), key).await).await;
    let mut runs: Vec<(String, String)> = body["data"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["runId"].as_str().expect("id").to_string(),
                r["executedAt"].as_str().expect("executedAt").to_string(),
            )
        })
        .collect();
    runs.reverse(); // oldest first
    runs
}

async fn export_bytes(app: &TestApp, key: &str, wf: &str, body: Value) -> Vec<u8> {
    let done = app.export_and_wait(key, wf, &body).await;
    app.export_file(&done).await
}

#[tokio::test]
async fn a_database_bundle_imports_into_another_project_and_exports_the_same_bytes() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _w = app.start_worker().await;
    let (a, a_wfs) = project_with_data(&app, "acme").await;
    let bundle = database_bundle(&app, "acme", &a.key).await;

    // An independent reader: every file the manifest lists is there with its sha256 and size,
    // and every run is a Parquet file with `_id` first and the run's rows.
    let mut archive = open(&bundle);
    let manifest: Value =
        serde_json::from_slice(&entry(&mut archive, "manifest.json")).expect("json");
    assert_eq!(manifest["format"], "wharf-bundle");
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["scope"], "database");
    assert_eq!(manifest["source"]["project"], "acme");
    let listed = manifest["workflows"].as_array().expect("workflows");
    assert_eq!(listed.len(), 3);
    for (w, wf) in listed.iter().zip(&a_wfs) {
        assert_eq!(w["id"].as_str(), Some(wf.as_str()));
        let def = entry(&mut archive, w["definition"].as_str().expect("definition"));
        assert_eq!(
            w["definitionSha256"].as_str(),
            Some(hex::encode(sha2::Sha256::digest(&def)).as_str())
        );
        let def: Value = serde_json::from_slice(&def).expect("definition json");
        let mut expected = schema();
        expected[2]["nullable"] = json!(false);
        assert_eq!(def["schema"], expected);
        let runs = w["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 2);
        for (i, r) in runs.iter().enumerate() {
            let file = entry(&mut archive, r["file"].as_str().expect("file"));
            assert_eq!(r["bytes"].as_u64(), Some(file.len() as u64));
            assert_eq!(
                r["sha256"].as_str(),
                Some(hex::encode(sha2::Sha256::digest(&file)).as_str())
            );
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file))
                .expect("parquet")
                .build()
                .expect("reader");
            let mut n = 0;
            for batch in reader {
                let batch = batch.expect("batch");
                assert_eq!(batch.schema().field(0).name(), "_id");
                assert_eq!(batch.num_columns(), 7);
                n += batch.num_rows();
            }
            assert_eq!(n, 3 + i);
            assert_eq!(r["rowCount"].as_u64(), Some(n as u64));
        }
    }

    // Into another project: every run comes back with its executedAt, and every export of it
    // (CSV and Parquet) is byte for byte the original's.
    let b = app.create_project("beta").await;
    let done = import(&app, &b.key, bundle, "").await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let made = done["workflows"].as_array().expect("workflows");
    assert_eq!(made.len(), 3);
    for (m, original) in made.iter().zip(&a_wfs) {
        assert_eq!(m["sourceId"].as_str(), Some(original.as_str()));
        assert_eq!(m["runs"], 2);
        let copy = m["workflowId"].as_str().expect("workflowId");
        let (_, wf_a) = json_of(app.get(&format!("/v1/workflows/{original}"), &a.key).await).await;
        let (_, wf_b) = json_of(app.get(&format!("/v1/workflows/{copy}"), &b.key).await).await;
        assert_eq!(wf_a["name"], wf_b["name"]);
        assert_eq!(wf_a["schema"], wf_b["schema"]);
        let (runs_a, runs_b) = (
            run_ids(&app, &a.key, original).await,
            run_ids(&app, &b.key, copy).await,
        );
        assert_eq!(runs_a.len(), 2);
        for ((ra, ea), (rb, eb)) in runs_a.iter().zip(&runs_b) {
            assert_eq!(ea, eb, "executedAt kept");
            for body in [
                json!({"format": "csv"}),
                json!({"format": "parquet"}),
                json!({"format": "ndjson", "columns": ["title", "meta", "at", "price"]}),
            ] {
                let mut body_a = body.clone();
                body_a["runId"] = json!(ra);
                let mut body_b = body.clone();
                body_b["runId"] = json!(rb);
                assert_eq!(
                    export_bytes(&app, &a.key, original, body_a).await,
                    export_bytes(&app, &b.key, copy, body_b).await,
                    "{body} of run {ra} and its import {rb}"
                );
            }
        }
    }
}

fn multipart(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "wharf-test-boundary-7d1e";
    let mut body = Vec::new();
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nimport\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/zip\r\n\r\n"
    )
    .ok();
    body.extend_from_slice(bytes);
    write!(body, "\r\n--{boundary}--\r\n").ok();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn kore_dock(app: &TestApp, key: &str, ds: &str, until: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) =
            json_of(app.get(&format!("/api/public/dock-status/{ds}"), key).await).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == until || body["status"] == "FAILED" {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "dock status {body}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_kore_flow_exports_a_workflow_uploads_it_and_imports_it_back() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let p = app.create_project("kore").await;
    let wf = app.create_workflow(&p.key, "Leads", schema()).await;
    assert_eq!(
        app.post_run(&p.key, &wf, "application/x-ndjson", rows(1, 1))
            .await
            .status(),
        201
    );
    let (_, read) = app.create_key(&p.key, &["read"]).await;

    // No worker yet: the export is IN_PROGRESS and its link answers 409 until it is ready.
    let (status, job) = json_of(
        app.post_json(
            &format!("/api/public/workflows/{wf}/export"),
            &read,
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["jobType"], "WORKFLOWS");
    assert_eq!(job["action"], "EXPORT");
    assert_eq!(job["status"], "IN_PROGRESS");
    assert_eq!(job["workflowId"].as_str(), Some(wf.as_str()));
    let ds = job["dockStatusId"]
        .as_str()
        .expect("dockStatusId")
        .to_string();
    assert!(ds.starts_with("ds-"), "{ds}");
    assert!(
        job["exportJobId"]
            .as_str()
            .expect("exportJobId")
            .starts_with("workflow-ej-")
    );
    let url = job["response"]["downloadUrl"]
        .as_str()
        .expect("downloadUrl")
        .to_string();
    assert_eq!(
        app.client.get(&url).send().await.expect("sent").status(),
        409
    );
    let early = kore_dock(&app, &read, &ds, "IN_PROGRESS").await;
    assert_eq!(early["_id"].as_str(), Some(ds.as_str()));

    let _w = app.start_worker().await;
    let done = kore_dock(&app, &read, &ds, "SUCCESS").await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    // The bare UUID is accepted too.
    let bare = kore_dock(&app, &read, &ds[3..], "SUCCESS").await;
    assert_eq!(bare["_id"], done["_id"]);
    let res = app
        .client
        .get(done["response"]["downloadUrl"].as_str().expect("url"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200, "the link needs no key");
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/zip")
    );
    let disposition = res
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        disposition.contains("Leads-") && disposition.contains(".wharf.zip"),
        "{disposition}"
    );
    let bundle = res.bytes().await.expect("bytes").to_vec();
    let manifest: Value =
        serde_json::from_slice(&entry(&mut open(&bundle), "manifest.json")).expect("manifest");
    assert_eq!(manifest["scope"], "workflow");

    // Upload (write scope), then import as a new workflow.
    let (ct, form) = multipart("leads.wharf.zip", &bundle);
    let upload = |key: String, form: Vec<u8>, ct: String| {
        app.client
            .post(app.url("/api/public/uploadfile"))
            .header("x-api-key", key)
            .header("content-type", ct)
            .body(form)
            .send()
    };
    let denied = upload(read.clone(), form.clone(), ct.clone())
        .await
        .expect("sent");
    assert_eq!(denied.status(), 403, "a read key cannot upload");
    let (status, file) = json_of(upload(p.key.clone(), form, ct).await.expect("sent")).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(
        file["hash"].as_str(),
        Some(hex::encode(sha2::Sha256::digest(&bundle)).as_str())
    );
    assert_eq!(file["fileName"], "leads.wharf.zip");
    let file_id = file["fileId"].as_str().expect("fileId");

    let (status, job) = json_of(
        app.post_json(
            "/api/public/workflows/import",
            &p.key,
            &json!({"workflowDataFileId": file_id, "workflowName": "Leads (copy)"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["action"], "IMPORT");
    assert_eq!(job["status"], "IN_PROGRESS");
    let ds = job["dockStatusId"].as_str().expect("ds");
    let done = kore_dock(&app, &p.key, ds, "SUCCESS").await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    let copy = done["workflowId"]
        .as_str()
        .expect("the new workflow")
        .to_string();
    assert_ne!(copy, wf);
    let (_, w) = json_of(app.get(&format!("/v1/workflows/{copy}"), &p.key).await).await;
    assert_eq!(w["name"], "Leads (copy)");
    assert_eq!(
        app.stored_rows(&p.id, &copy).await,
        app.stored_rows(&p.id, &wf).await,
        "the same rows, ids and all"
    );

    // Into the existing workflow: its runs are added.
    let (status, job) = json_of(
        app.post_json(
            &format!("/api/public/workflows/{wf}/import"),
            &p.key,
            &json!({"workflowDataFileId": file_id}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{job}");
    let done = kore_dock(
        &app,
        &p.key,
        job["dockStatusId"].as_str().expect("ds"),
        "SUCCESS",
    )
    .await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(run_ids(&app, &p.key, &wf).await.len(), 2);
    assert_eq!(app.stored_rows(&p.id, &wf).await.len(), 8);

    // A bundle of another schema into it: FAILED with the first difference named.
    let other = app
        .create_workflow(&p.key, "Other", json!([{"name": "n", "type": "integer"}]))
        .await;
    let (_, job) = json_of(
        app.post_json(
            &format!("/api/public/workflows/{other}/import"),
            &p.key,
            &json!({"workflowDataFileId": file_id}),
        )
        .await,
    )
    .await;
    let failed = kore_dock(
        &app,
        &p.key,
        job["dockStatusId"].as_str().expect("ds"),
        "SUCCESS",
    )
    .await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["error"]["code"], "SCHEMA_MISMATCH", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("schema[0]"),
        "{failed}"
    );
}

#[tokio::test]
async fn zangtable_project_exports_hold_schema_and_database_scopes_to_admin_keys() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _w = app.start_worker().await;
    let (p, wfs) = project_with_data(&app, "zang").await;
    let (_, read) = app.create_key(&p.key, &["read"]).await;

    let (status, body) = json_of(
        app.post_json(
            "/projects/zang/export",
            &read,
            &json!({"scope": "table", "table": "Products", "format": "csv"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["data"]["status"], "queued");
    assert_eq!(body["data"]["scope"], "table");
    let table_exp = body["data"]["export_id"].as_str().expect("id").to_string();
    for scope in ["schema", "database"] {
        let (status, body) = json_of(
            app.post_json("/projects/zang/export", &read, &json!({"scope": scope}))
                .await,
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["ok"], false);
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, body) = json_of(
        app.post_json("/projects/zang/export", &p.key, &json!({"scope": "schema"}))
            .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let schema_exp = body["data"]["export_id"].as_str().expect("id").to_string();

    // Status by exp_ id, in the envelope; the admin's scopes hidden from a read key.
    let wait = |key: String, id: String| {
        let app = &app;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let (status, body) =
                    json_of(app.get(&format!("/projects/zang/exports/{id}"), &key).await).await;
                assert_eq!(status, 200, "{body}");
                if body["data"]["status"] == "completed" {
                    return body;
                }
                assert!(std::time::Instant::now() < deadline, "{body}");
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
        }
    };
    let table = wait(read.clone(), table_exp.clone()).await;
    assert_eq!(
        table["data"]["export_id"].as_str(),
        Some(table_exp.as_str())
    );
    assert_eq!(table["data"]["format"], "csv");
    assert!(table["data"]["row_count"].as_i64() == Some(4), "{table}");
    let schema_done = wait(p.key.clone(), schema_exp.clone()).await;
    assert_eq!(schema_done["data"]["scope"], "schema");
    let (status, _) = json_of(
        app.get(&format!("/projects/zang/exports/{schema_exp}"), &read)
            .await,
    )
    .await;
    assert_eq!(status, 403);

    let (_, listed) = json_of(app.get("/projects/zang/exports", &read).await).await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["export_id"].as_str())
        .collect();
    assert_eq!(ids, vec![table_exp.as_str()], "{listed}");
    let (_, listed) = json_of(app.get("/projects/zang/exports", &p.key).await).await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));

    // Downloads by exp_ id: the schema bundle is the admin's; it holds definitions, no runs.
    let dl = |key: String, id: String| {
        app.client
            .get(app.url(&format!("/projects/zang/export/download/{id}")))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(
        dl(read.clone(), schema_exp.clone())
            .await
            .expect("sent")
            .status(),
        403
    );
    let csv = dl(read.clone(), table_exp).await.expect("sent");
    assert_eq!(csv.status(), 200);
    let res = dl(p.key.clone(), schema_exp).await.expect("sent");
    assert_eq!(res.status(), 200);
    let bundle = res.bytes().await.expect("bytes").to_vec();
    let mut archive = open(&bundle);
    let manifest: Value =
        serde_json::from_slice(&entry(&mut archive, "manifest.json")).expect("json");
    assert_eq!(manifest["scope"], "schema");
    let listed = manifest["workflows"].as_array().expect("workflows");
    assert_eq!(listed.len(), wfs.len());
    assert!(listed.iter().all(|w| w["runs"] == json!([])));
    assert_eq!(
        archive.len(),
        wfs.len() + 1,
        "definitions and the manifest only"
    );
}

/// Rewrites a bundle: `edit` sees each entry (name, bytes) and returns what to write instead
/// (None drops it); `extra` entries are appended (deflated when `deflate`).
pub(crate) fn rewrite(
    bundle: &[u8],
    edit: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>,
    extra: &[(&str, Vec<u8>, bool)],
) -> Vec<u8> {
    let mut archive = open(bundle);
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut e = archive.by_index(i).expect("entry");
        let name = e.name().expect("name").to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).expect("read");
        if let Some((name, bytes)) = edit(&name, bytes) {
            out.start_file(name, stored).expect("start");
            out.write_all(&bytes).expect("write");
        }
    }
    for (name, bytes, deflate) in extra {
        let opts = if *deflate {
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
        } else {
            stored
        };
        out.start_file(*name, opts).expect("start");
        out.write_all(bytes).expect("write");
    }
    out.finish().expect("finish").into_inner()
}

pub(crate) fn edit_manifest(bundle: &[u8], change: impl Fn(&mut Value)) -> Vec<u8> {
    rewrite(
        bundle,
        |name, bytes| {
            if name == "manifest.json" {
                let mut m: Value = serde_json::from_slice(&bytes).expect("manifest");
                change(&mut m);
                Some((name.into(), serde_json::to_vec(&m).expect("json")))
            } else {
                Some((name.into(), bytes))
            }
        },
        &[],
    )
}

#[tokio::test]
async fn a_malformed_bundle_fails_its_import_with_a_code_and_writes_nothing() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _w = app.start_worker().await;
    let (a, _) = project_with_data(&app, "acme").await;
    let good = database_bundle(&app, "acme", &a.key).await;
    let manifest: Value =
        serde_json::from_slice(&entry(&mut open(&good), "manifest.json")).expect("manifest");
    let first_run = manifest["workflows"][0]["runs"][0]["file"]
        .as_str()
        .expect("file")
        .to_string();
    let definition = manifest["workflows"][0]["definition"]
        .as_str()
        .expect("definition")
        .to_string();

    // `title` made not nullable in the definition: a run with a null title no
    // longer fits (the definition's sha256 updated, so only the row can be blamed).
    let strict = {
        let def: Value =
            serde_json::from_slice(&entry(&mut open(&good), &definition)).expect("definition");
        let mut def = def.clone();
        def["schema"][0]["nullable"] = json!(false);
        let bytes = serde_json::to_vec(&def).expect("json");
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        let with_def = rewrite(
            &good,
            |name, b| {
                Some((
                    name.into(),
                    if name == definition { bytes.clone() } else { b },
                ))
            },
            &[],
        );
        edit_manifest(&with_def, |m| {
            m["workflows"][0]["definitionSha256"] = json!(sha)
        })
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not a zip", b"PK? no, just text".to_vec(), "BUNDLE_INVALID"),
        (
            "version 2",
            edit_manifest(&good, |m| m["version"] = json!(2)),
            "BUNDLE_VERSION",
        ),
        (
            "a missing run file",
            rewrite(
                &good,
                |name, b| (name != first_run).then(|| (name.into(), b)),
                &[],
            ),
            "BUNDLE_INVALID",
        ),
        (
            "a checksum mismatch",
            edit_manifest(&good, |m| {
                m["workflows"][1]["runs"][1]["sha256"] = json!("0".repeat(64))
            }),
            "CHECKSUM_MISMATCH",
        ),
        ("a row that does not fit", strict, "SCHEMA_MISMATCH"),
        (
            "a zip bomb",
            rewrite(
                &good,
                |n, b| Some((n.into(), b)),
                &[("padding.bin", vec![0u8; 64 << 20], true)],
            ),
            "BUNDLE_TOO_LARGE",
        ),
        (
            "a path with ..",
            rewrite(
                &good,
                |n, b| Some((n.into(), b)),
                &[("../../etc/evil", b"x".to_vec(), false)],
            ),
            "BUNDLE_INVALID",
        ),
    ];
    let b = app.create_project("beta").await;
    for (what, bundle, code) in cases {
        let done = import(&app, &b.key, bundle, "").await;
        assert_eq!(done["status"], "FAILED", "{what}: {done}");
        assert_eq!(done["error"]["code"], code, "{what}: {done}");
        assert!(
            !done["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{what}: a message"
        );
        assert_eq!(done["workflows"], json!([]), "{what}");
        let (_, listed) = json_of(app.get("/v1/workflows", &b.key).await).await;
        assert_eq!(listed["data"], json!([]), "{what}: no workflow created");
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs r JOIN workflows w ON w.id = r.workflow_id WHERE w.project_id = $1")
        .bind(wharf_tests::parse(&b.id))
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(runs, 0, "no run written by any refused import");

    // Scopes and tenancy: imports are the admin's, and another project's import is a 404.
    let (_, read) = app.create_key(&b.key, &["read", "write"]).await;
    let res = app
        .client
        .post(app.url("/v1/imports"))
        .header("x-api-key", &read)
        .header("content-type", "application/zip")
        .body(good.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 403);
    let res = app
        .client
        .post(app.url("/v1/imports"))
        .header("x-api-key", &b.key)
        .header("content-type", "text/csv")
        .body("a\n1\n")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 415);
    let done = import(&app, &b.key, good, "").await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let id = done["importId"].as_str().expect("id");
    let (status, _) = json_of(app.get(&format!("/v1/imports/{id}"), &a.key).await).await;
    assert_eq!(status, 404, "another project's import");
    let (status, _) = json_of(app.get(&format!("/v1/exports/{id}"), &b.key).await).await;
    assert_eq!(status, 404, "an import is not an export");
}

#[tokio::test]
async fn a_worker_killed_mid_import_leaves_nothing_and_the_retry_completes_it() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let a = app.create_project("acme").await;
    let wf = app.wide_workflow(&a.key, 100_000).await;
    let bundle = {
        let _w = app.start_worker().await;
        let (_, job) = json_of(
            app.post_json(
                &format!("/api/public/workflows/{wf}/export"),
                &a.key,
                &json!({}),
            )
            .await,
        )
        .await;
        let ds = job["dockStatusId"].as_str().expect("ds").to_string();
        let done = kore_dock(&app, &a.key, &ds, "SUCCESS").await;
        let id = done["exportJobId"].as_str().expect("id")["workflow-ej-".len()..].to_string();
        let status = app.wait_done(&a.key, &id).await;
        app.export_file(&status).await
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let b = app.create_project("beta").await;
    let res = app
        .client
        .post(app.url("/v1/imports"))
        .header("x-api-key", &b.key)
        .header("content-type", "application/zip")
        .body(bundle)
        .send()
        .await
        .expect("sent");
    let (status, created) = json_of(res).await;
    assert_eq!(status, 202, "{created}");
    let id = created["importId"].as_str().expect("id").to_string();
    let fast = [("WHARF_LEASE", "3s"), ("WHARF_REQUEUE_AFTER", "2s")];
    let mut first = app.spawn_worker_process_with(1, &fast);
    // Killed while its COPY into the new workflow's table runs: mid-write.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let copying: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'active' AND query LIKE 'COPY rows_%FROM STDIN%'",
        )
        .fetch_one(&app.pool)
        .await
        .expect("q");
        if copying > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the import never began writing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    first.signal("-KILL");
    assert!(first.wait_exit(5));
    let (_, listed) = json_of(app.get("/v1/workflows", &b.key).await).await;
    assert_eq!(
        listed["data"],
        json!([]),
        "nothing of the killed attempt is visible"
    );

    let _second = app.spawn_worker_process_with(1, &fast);
    let done = wait_import(&app, &b.key, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["attempts"], 2, "the crash counts as an attempt");
    let made = done["workflows"].as_array().expect("workflows");
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["rows"], 100_000);
    let (_, listed) = json_of(app.get("/v1/workflows", &b.key).await).await;
    assert_eq!(
        listed["data"].as_array().map(Vec::len),
        Some(1),
        "one workflow, not two"
    );
    let copy = made[0]["workflowId"].as_str().expect("id");
    assert_eq!(
        app.stored_rows(&b.id, copy).await,
        app.stored_rows(&a.id, &wf).await
    );
}
