//! Export jobs as jobs: progress while running, cancel mid-export, several worker processes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{S3Server, TestApp, TestProject, spawn_app, spawn_app_with};

async fn big_workflow(app: &TestApp, rows: u64) -> (TestProject, String) {
    let p = app.create_project("acme").await;
    let wf = app.wide_workflow(&p.key, rows).await;
    (p, wf)
}

async fn status(app: &TestApp, key: &str, id: &str) -> Value {
    app.get(&format!("/v1/exports/{id}"), key)
        .await
        .json()
        .await
        .expect("json")
}

async fn poll_until(
    app: &TestApp,
    key: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    app.poll_export(key, id, what, pred).await
}

#[tokio::test]
async fn a_running_export_shows_progress_then_completes() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let s3 = S3Server::start().await;
    let app = spawn_app_with(pool, &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let _worker = app.start_worker().await;
    let (p, wf) = big_workflow(&app, 200_000).await;
    // With the object store frozen the upload cannot finish, so the export is caught mid-way.
    s3.pause();
    let res = app
        .post_export(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    let id = res.json::<Value>().await.expect("json")["exportId"]
        .as_str()
        .expect("id")
        .to_string();
    let running = poll_until(&app, &p.key, &id, "progress", |s| {
        s["status"] == "IN_PROGRESS" && s["progress"]["rowsWritten"].as_i64().unwrap_or(0) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = {
        let later = status(&app, &p.key, &id).await;
        if later["status"] == "IN_PROGRESS" {
            later
        } else {
            running
        }
    };
    s3.resume();
    let pr = &running["progress"];
    let percent = pr["percent"].as_f64().expect("percent");
    assert!(
        percent > 0.0 && percent < 100.0,
        "mid-way progress: {running}"
    );
    assert_eq!(pr["rowsTotal"], 200_000);
    assert!(pr["bytesWritten"].as_i64().unwrap_or(0) > 0, "{running}");
    assert!(running["startedAt"].is_string());
    assert_eq!(running["attempts"], 1);
    let done = app.wait_done(&p.key, &id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["rowCount"], 200_000);
    assert_eq!(done["progress"]["percent"], 100.0);
    let file = app.export_file(&done).await;
    assert_eq!(
        file.iter().filter(|b| **b == b'\n').count(),
        200_001,
        "header and every row"
    );
}

#[tokio::test]
async fn cancelling_a_running_export_leaves_no_object() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let s3 = S3Server::start().await;
    let app = spawn_app_with(pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let worker = app.start_worker().await;
    let (p, wf) = big_workflow(&app, 100_000).await;
    s3.pause();
    let res = app
        .post_export(&p.key, &wf, &json!({"format": "ndjson"}))
        .await;
    let id = res.json::<Value>().await.expect("json")["exportId"]
        .as_str()
        .expect("id")
        .to_string();
    // Past one 5 MiB part and the chunks in flight: the store has begun its multipart upload
    // (which hangs on the frozen store) and the encoder waits for it.
    poll_until(&app, &p.key, &id, "a running export", |s| {
        s["status"] == "IN_PROGRESS"
            && s["progress"]["bytesWritten"].as_i64().unwrap_or(0) > 9 << 20
    })
    .await;
    let res = app
        .post_json(&format!("/v1/exports/{id}/cancel"), &p.key, &json!({}))
        .await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "CANCELLED");
    s3.resume();
    // The worker notices at its next heartbeat, stops, and aborts whatever upload it began.
    worker.idle().await;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM export_uploads WHERE state = 'OPEN'")
        .fetch_one(&pool)
        .await
        .expect("q");
    assert_eq!(open, 0, "no upload left open");
    assert!(app.object_keys().await.is_empty(), "no object may remain");
    let after = status(&app, &p.key, &id).await;
    assert_eq!(after["status"], "CANCELLED");
    assert_eq!(after["url"], Value::Null);
    // Cancelling again is harmless.
    let res = app
        .post_json(&format!("/v1/exports/{id}/cancel"), &p.key, &json!({}))
        .await;
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn two_worker_processes_complete_fifty_exports_each_once() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "Small", json!([{"name": "n", "type": "integer"}]))
        .await;
    let body: String = (0..500).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    assert_eq!(
        app.post_run(&p.key, &wf, "application/x-ndjson", body)
            .await
            .status(),
        201
    );
    let mut a = app.spawn_worker_process(2);
    let mut b = app.spawn_worker_process(2);
    let formats = ["csv", "json", "ndjson", "parquet"];
    let mut ids = Vec::new();
    for i in 0..50 {
        let res = app
            .post_export(&p.key, &wf, &json!({"format": formats[i % 4]}))
            .await;
        assert_eq!(res.status(), 202);
        ids.push(
            res.json::<Value>().await.expect("json")["exportId"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    for id in &ids {
        let done = app.wait_done(&p.key, id).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["rowCount"], 500);
        assert_eq!(done["attempts"], 1, "claimed once: {done}");
    }
    a.signal("-TERM");
    b.signal("-TERM");
    assert!(
        a.wait_exit(10) && b.wait_exit(10),
        "workers stop on SIGTERM"
    );
    // Each export was completed by exactly one process, and the logs carry the ids.
    let mut completed: HashMap<String, usize> = HashMap::new();
    for log in [a.log_text(), b.log_text()] {
        for line in log.lines().filter(|l| l.contains("export completed")) {
            let v: Value = serde_json::from_str(line).expect("json log line");
            let span = &v["span"];
            let id = span["export_id"]
                .as_str()
                .or_else(|| v["spans"][0]["export_id"].as_str())
                .unwrap_or_default();
            assert!(
                v["fields"]["rows"].is_number() && v["fields"]["seconds"].is_number(),
                "{line}"
            );
            *completed.entry(id.to_string()).or_default() += 1;
        }
    }
    for id in &ids {
        assert_eq!(
            completed.get(id),
            Some(&1),
            "export {id} completed {:?} times",
            completed.get(id)
        );
    }
    assert_eq!(app.object_keys().await.len(), 50);
}
