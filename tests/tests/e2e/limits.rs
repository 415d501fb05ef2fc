//! API.md, Limits: no tenant can starve another, and memory is bounded by a row, not a body.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::process::{RawResponse, raw_exchange};
use wharf_tests::{TestApp, assert_envelope, spawn_app, spawn_app_with};

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let i = ((ms.len() as f64) * 0.99).ceil() as usize;
    ms[i.saturating_sub(1).min(ms.len() - 1)]
}

fn upload_head(path: &str, key: &str, content_type: &str, length: u64) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {length}"
    )
}

/// One NDJSON line every 300 ms for `lines` lines, of a body declared 100 MB long.
async fn slow_upload(
    address: String,
    path: String,
    key: String,
    lines: usize,
) -> Option<RawResponse> {
    let chunks = (0..lines)
        .map(|i| format!("{{\"n\": {i}}}\n").into_bytes())
        .collect();
    raw_exchange(
        &address,
        &upload_head(&path, &key, "application/x-ndjson", 100_000_000),
        chunks,
        Duration::from_millis(300),
        Duration::from_secs(30),
    )
    .await
}

#[tokio::test]
async fn slow_uploads_of_one_project_do_not_slow_another() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool, &[("WHARF_BODY_TIMEOUT", "2s")]).await;
    let _worker = app.start_worker().await;
    let hog = app.create_project("hog").await;
    let calm = app.create_project("calm").await;
    let schema = json!([{"name": "n", "type": "integer"}]);
    let hog_wf = app.create_workflow(&hog.key, "Hog", schema.clone()).await;
    let calm_wf = app.create_workflow(&calm.key, "Calm", schema).await;
    let res = app
        .post_run(&calm.key, &calm_wf, "application/x-ndjson", "{\"n\": 1}\n")
        .await;
    assert_eq!(res.status(), 201);

    // 30 uploads that trickle one line every 300 ms (they would run ~6 s, then stall).
    let path = format!("/v1/workflows/{hog_wf}/runs");
    let uploads: Vec<_> = (0..30)
        .map(|_| {
            tokio::spawn(slow_upload(
                app.address.clone(),
                path.clone(),
                hog.key.clone(),
                20,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Meanwhile another project's status, list and create calls.
    let mut ms = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        let created = app.post_export(&calm.key, &calm_wf, &json!({})).await;
        assert_eq!(created.status(), 202);
        let id = created.json::<Value>().await.expect("json")["exportId"]
            .as_str()
            .expect("id")
            .to_string();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        assert_eq!(
            app.get(&format!("/v1/exports/{id}"), &calm.key)
                .await
                .status(),
            200
        );
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let list = format!("/v1/workflows/{calm_wf}/exports?limit=5");
        assert_eq!(app.get(&list, &calm.key).await.status(), 200);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let worst = p99(ms.clone());
    println!(
        "another project's calls during 30 slow uploads: {} calls, p99 {worst:.1} ms, max {:.1} ms",
        ms.len(),
        ms.iter().copied().fold(0.0, f64::max)
    );
    assert!(worst < 1000.0, "p99 {worst} ms");

    // Past WHARF_PROJECT_INGESTS (4) the uploads were refused at once; the rest stalled and
    // got 408 once the body sent nothing for WHARF_BODY_TIMEOUT. Nothing was stored.
    let mut statuses = Vec::new();
    for u in uploads {
        let res = u.await.expect("task").expect("an answer");
        if res.status == 429 {
            assert!(res.header("retry-after").is_some(), "{res:?}");
            assert!(res.body.contains("WHARF_PROJECT_INGESTS"), "{}", res.body);
        }
        statuses.push(res.status);
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused, 26, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [429, 408].contains(s)),
        "{statuses:?}"
    );
    assert_no_runs(&app, &hog.key, &hog_wf).await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool, &[("WHARF_BODY_TIMEOUT", "1s")]).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "W", json!([{"name": "n", "type": "integer"}]))
        .await;
    let started = Instant::now();
    let res = raw_exchange(
        &app.address,
        &upload_head(
            &format!("/v1/workflows/{wf}/runs"),
            &p.key,
            "text/csv",
            1000,
        ),
        vec![b"n\n1\n".to_vec()],
        Duration::ZERO,
        Duration::from_secs(10),
    )
    .await
    .expect("an answer");
    assert_eq!(res.status, 408, "{res:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(res.header("connection").as_deref(), Some("close"));
    let body: Value = serde_json::from_str(&res.body).expect("json");
    assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("WHARF_BODY_TIMEOUT")),
        "{body}"
    );
    // A JSON body that stalls is refused the same way.
    let res = raw_exchange(
        &app.address,
        &upload_head("/v1/workflows", &p.key, "application/json", 1000),
        vec![b"{\"name\": ".to_vec()],
        Duration::ZERO,
        Duration::from_secs(10),
    )
    .await
    .expect("an answer");
    assert_eq!(res.status, 408, "{res:?}");
}

/// A body of one 50 MB row (and a newline), sent in 64 KiB chunks.
fn one_huge_row(prefix: &str, suffix: &str) -> (Vec<Vec<u8>>, u64) {
    let mut chunks = vec![prefix.as_bytes().to_vec()];
    let filler = vec![b'a'; 64 * 1024];
    for _ in 0..800 {
        chunks.push(filler.clone());
    }
    chunks.push(suffix.as_bytes().to_vec());
    let len = chunks.iter().map(|c| c.len() as u64).sum();
    (chunks, len)
}

#[tokio::test]
async fn one_huge_row_is_413_and_memory_stays_flat() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let api = app.spawn_api_process(&[]).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "W", json!([{"name": "s", "type": "string"}]))
        .await;
    let path = format!("/v1/workflows/{wf}/runs");
    let cases = [
        ("application/x-ndjson", "{\"s\": \"", "\"}\n", "line 1"),
        ("text/csv", "s\n\"", "\"\n", "line 2"),
        (
            "application/json",
            "[{\"s\": \"x\"},\n{\"s\": \"",
            "\"}]",
            "line 2 (array element 2)",
        ),
    ];
    for (ct, prefix, suffix, place) in cases {
        let (chunks, len) = one_huge_row(prefix, suffix);
        let res = raw_exchange(
            &api.address,
            &upload_head(&path, &p.key, ct, len),
            chunks,
            Duration::ZERO,
            Duration::from_secs(60),
        )
        .await
        .expect("an answer");
        assert_eq!(res.status, 413, "{ct}: {res:?}");
        let body: Value = serde_json::from_str(&res.body).expect("json");
        assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(&format!(
                "{place}: a row is larger than the limit of 1048576 bytes"
            )),
            "{ct}: {msg}"
        );
    }
    let peak = api.peak_rss();
    println!(
        "wharf-api peak RSS after three 50 MB rows: {} MB",
        peak >> 20
    );
    assert!(peak > 0 && peak < 200 << 20, "peak RSS {peak}");
    assert_no_runs(&app, &p.key, &wf).await;
}

#[tokio::test]
async fn a_burst_of_creates_is_rate_limited_and_others_still_start() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool, &[("WHARF_RATE_LIMIT", "50/s,100")]).await;
    let _worker = app.start_worker().await;
    let busy = app.create_project("busy").await;
    let other = app.create_project("other").await;
    let schema = json!([{"name": "n", "type": "integer"}]);
    let busy_wf = app.create_workflow(&busy.key, "Busy", schema.clone()).await;
    let other_wf = app.create_workflow(&other.key, "Other", schema).await;
    for (p, wf) in [(&busy, &busy_wf), (&other, &other_wf)] {
        let res = app.post_run(&p.key, wf, "text/csv", "n\n1\n2\n").await;
        assert_eq!(res.status(), 201);
    }
    let (_, reader) = app.create_key(&busy.key, &["read"]).await;

    // 300 creates within about a second, from one read key.
    let started = Instant::now();
    let creates: Vec<_> = (0..300)
        .map(|i| {
            let url = app.url(&format!("/v1/workflows/{busy_wf}/exports"));
            let (key, client) = (reader.clone(), app.client.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 3)).await;
                client
                    .post(url)
                    .header("x-api-key", key)
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("sent")
            })
        })
        .collect();
    let mut accepted = 0;
    let mut limited = 0;
    for c in creates {
        let res = c.await.expect("task");
        match res.status().as_u16() {
            202 => accepted += 1,
            429 => {
                let retry: u64 = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .expect("Retry-After");
                assert!((1..=2).contains(&retry), "{retry}");
                let (code, _) = assert_envelope(res, 429).await;
                assert_eq!(code, "RATE_LIMITED");
                limited += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    println!(
        "300 creates in {:.2} s: {accepted} accepted, {limited} refused with 429",
        started.elapsed().as_secs_f64()
    );
    assert!(limited > 0 && accepted >= 100, "{accepted} / {limited}");

    // Another project's export starts within a second, though the queue holds the burst.
    let created: Value = app
        .post_export(&other.key, &other_wf, &json!({}))
        .await
        .json()
        .await
        .expect("json");
    let id = created["exportId"].as_str().expect("id");
    let done = app.wait_done(&other.key, id).await;
    let at =
        |k: &str| chrono::DateTime::parse_from_rfc3339(done[k].as_str().expect(k)).expect("time");
    let waited = (at("startedAt") - at("createdAt")).as_seconds_f64();
    println!(
        "another project's export started {:.0} ms after its create",
        waited * 1000.0
    );
    assert!(waited < 1.0, "{waited} s");
}

#[tokio::test]
async fn queued_exports_per_project_are_capped() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool, &[("WHARF_PROJECT_QUEUE_MAX", "3")]).await;
    let (p, wf) = app.one_row_workflow().await;
    for _ in 0..3 {
        assert_eq!(app.post_export(&p.key, &wf, &json!({})).await.status(), 202);
    }
    let res = app.post_export(&p.key, &wf, &json!({})).await;
    assert!(res.headers().get("retry-after").is_some());
    let (code, msg) = assert_envelope(res, 429).await;
    assert_eq!(code, "RATE_LIMITED");
    assert!(msg.contains("WHARF_PROJECT_QUEUE_MAX"), "{msg}");
}

#[tokio::test]
async fn uploads_take_no_connection_before_their_first_rows() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool.clone(), &[("WHARF_BODY_TIMEOUT", "1s")]).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "W", json!([{"name": "n", "type": "integer"}]))
        .await;
    let path = format!("/v1/workflows/{wf}/runs");
    let upload = tokio::spawn(slow_upload(app.address.clone(), path, p.key.clone(), 6));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // While the upload trickles, nobody holds the workflow's row lock.
    let locked: Option<i64> =
        sqlx::query_scalar("SELECT next_row_id FROM workflows WHERE id = $1 FOR UPDATE NOWAIT")
            .bind(wharf_tests::parse(&wf))
            .fetch_optional(&pool)
            .await
            .expect("the workflow is not locked by the upload");
    assert!(locked.is_some());
    let res = upload.await.expect("task").expect("an answer");
    // The declared length never arrives: the body stalls and is refused, nothing stored.
    assert_eq!(res.status, 408, "{res:?}");
    assert_no_runs(&app, &p.key, &wf).await;
}

async fn assert_no_runs(app: &TestApp, key: &str, wf: &str) {
    let runs: Value = app
        .get(&format!("/v1/workflows/{wf}/runs"), key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(runs["data"], json!([]), "nothing stored");
}
