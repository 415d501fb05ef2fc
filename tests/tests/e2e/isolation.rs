//! One tenant's cut-short reads and uploads never reach another tenant's answers (issue 21).
//!
//! Tenant A starts streamed reads (`/v4/…/data?limit=0`) and uploads over raw sockets and drops
//! them midway, or stalls them past `WHARF_BODY_TIMEOUT`; then tenant B makes 500 requests one
//! after another on one connection, and every answer must be B's own: B's workflow, B's key
//! list. Before the fix a connection whose COPY was cut short went back to the pool one reply
//! out of step, and B got 404s, 401s, A's keys and panics inside sqlx. Afterwards no backend may
//! be left running a COPY.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, TestProject, spawn_app_with};

const CUTS: usize = 20;
const CHECKS: usize = 500;
/// Rows of tenant A's run: ~21 MB of JSON, far more than the buffers between the COPY and
/// the client hold, so a read cut short is cut mid-COPY.
const A_ROWS: u64 = 50_000;

/// Panics raised inside sqlx (what a connection read out of step does) since the first call.
fn sqlx_panics() -> Arc<AtomicUsize> {
    static COUNT: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    COUNT
        .get_or_init(|| {
            let count = Arc::new(AtomicUsize::new(0));
            let seen = count.clone();
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if info.location().is_some_and(|l| l.file().contains("sqlx")) {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                previous(info);
            }));
            count
        })
        .clone()
}

struct Tenants {
    a: TestProject,
    a_workflow: String,
    b: TestProject,
    b_workflow: String,
    b_keys: Value,
}

async fn tenants(app: &TestApp) -> Tenants {
    let a = app.create_project("tenant-a").await;
    let a_workflow = app.wide_workflow(&a.key, A_ROWS).await;
    let (b, b_workflow) = app.one_row_workflow_in("tenant-b").await;
    app.create_key(&b.key, &["read"]).await;
    let b_keys = key_ids(app, &b.key).await;
    Tenants {
        a,
        a_workflow,
        b,
        b_workflow,
        b_keys,
    }
}

async fn key_ids(app: &TestApp, key: &str) -> Value {
    let res = app.get("/v1/api-keys", key).await;
    assert_eq!(res.status(), 200, "list keys");
    let body: Value = res.json().await.expect("json");
    let mut ids: Vec<String> = body["data"]
        .as_array()
        .expect("a key list")
        .iter()
        .map(|k| k["id"].as_str().expect("key id").to_string())
        .collect();
    ids.sort();
    json!(ids)
}

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

/// Tenant A's whole run as one streamed read, over a raw socket: the request sent, ~130 KB of
/// the answer read.
async fn start_stream(app: &TestApp, t: &Tenants) -> TcpStream {
    let host = host(app);
    let mut s = TcpStream::connect(&host).await.expect("connect");
    let head = format!(
        "GET /v4/workflows/{}/data?limit=0 HTTP/1.1\r\nHost: {host}\r\nx-api-key: {}\r\n\r\n",
        t.a_workflow, t.a.key
    );
    s.write_all(head.as_bytes()).await.expect("send");
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0;
    while got < 130 * 1024 {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "the stream ended after {got} bytes");
        got += n;
    }
    s
}

/// An upload to tenant A's workflow over a raw socket that promises 50 MB and sends ~2 MB.
async fn start_upload(app: &TestApp, t: &Tenants) -> TcpStream {
    let host = host(app);
    let mut s = TcpStream::connect(&host).await.expect("connect");
    let head = format!(
        "POST /v1/workflows/{}/runs HTTP/1.1\r\nHost: {host}\r\nx-api-key: {}\r\n\
         content-type: application/x-ndjson\r\ncontent-length: 50000000\r\n\r\n",
        t.a_workflow, t.a.key
    );
    s.write_all(head.as_bytes()).await.expect("send");
    let filler = "y".repeat(400);
    let chunk: String = (0..1000)
        .map(|n| format!("{{\"n\": {n}, \"text\": \"{filler}\"}}\n"))
        .collect();
    for _ in 0..5 {
        s.write_all(chunk.as_bytes()).await.expect("send rows");
    }
    // Long enough for the rows to reach the COPY.
    tokio::time::sleep(Duration::from_millis(150)).await;
    s
}

/// B's workflow and B's key list, `CHECKS` times one after another on one connection: every
/// answer is B's own and right.
async fn assert_b_answered_right(app: &TestApp, t: &Tenants) {
    let client = reqwest::Client::new();
    let mut wrong = Vec::new();
    for i in 0..CHECKS {
        let (path, expect) = if i % 2 == 0 {
            (format!("/v1/workflows/{}", t.b_workflow), None)
        } else {
            ("/v1/api-keys".to_string(), Some(&t.b_keys))
        };
        let res = client
            .get(app.url(&path))
            .header("x-api-key", &t.b.key)
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let right = status == 200
            && match expect {
                None => body["id"] == json!(t.b_workflow),
                Some(keys) => {
                    let mut ids: Vec<&str> = body["data"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|k| k["id"].as_str()).collect())
                        .unwrap_or_default();
                    ids.sort();
                    json!(ids) == *keys
                }
            };
        if !right {
            wrong.push(format!("{path}: {status} {body}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {CHECKS} answers to tenant B were wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

/// No backend of the test's database is left running a COPY (within 10 s: a closed
/// connection's backend stops at its next write).
async fn assert_no_copy_running(db: &TestDb) {
    let mut conn = PgConnection::connect_with(&db.options())
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let copies: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND state <> 'idle' AND query ILIKE 'COPY%'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        if copies == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{copies} backends still run a COPY"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    conn.close().await.ok();
}

async fn app_for_cuts(db: &TestDb) -> TestApp {
    spawn_app_with(
        db.pool.clone(),
        &[
            ("WHARF_BODY_TIMEOUT", "1s"),
            ("WHARF_PROJECT_READS", "100"),
            ("WHARF_PROJECT_INGESTS", "100"),
        ],
    )
    .await
}

#[derive(Clone, Copy)]
enum Cut {
    /// The client closes its socket.
    Drop,
    /// The client stops reading (or sending) past the body timeout, then closes.
    Stall,
}

async fn cut(s: TcpStream, how: Cut) {
    if let Cut::Stall = how {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    drop(s);
}

async fn streams_cut_short_leave_other_tenants_alone(how: Cut) {
    let panics = sqlx_panics();
    let before = panics.load(Ordering::SeqCst);
    let db = TestDb::new().await;
    let app = app_for_cuts(&db).await;
    let t = tenants(&app).await;
    for _ in 0..CUTS {
        let s = start_stream(&app, &t).await;
        cut(s, how).await;
    }
    assert_b_answered_right(&app, &t).await;
    assert_no_copy_running(&db).await;
    // A's own reads still come back whole.
    let res = app
        .get(
            &format!("/v4/workflows/{}/data?limit=0", t.a_workflow),
            &t.a.key,
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("the whole run as JSON");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(A_ROWS as usize));
    assert_eq!(panics.load(Ordering::SeqCst), before, "panics inside sqlx");
}

async fn uploads_cut_short_leave_other_tenants_alone(how: Cut) {
    let panics = sqlx_panics();
    let before = panics.load(Ordering::SeqCst);
    let db = TestDb::new().await;
    let app = app_for_cuts(&db).await;
    let t = tenants(&app).await;
    let runs_before = runs_of(&app, &t).await;
    for _ in 0..CUTS {
        let s = start_upload(&app, &t).await;
        cut(s, how).await;
    }
    assert_b_answered_right(&app, &t).await;
    assert_no_copy_running(&db).await;
    assert_eq!(
        runs_of(&app, &t).await,
        runs_before,
        "no cut upload is stored"
    );
    assert_eq!(panics.load(Ordering::SeqCst), before, "panics inside sqlx");
}

async fn runs_of(app: &TestApp, t: &Tenants) -> usize {
    let res = app
        .get(&format!("/v1/workflows/{}/runs", t.a_workflow), &t.a.key)
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    body["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_leave_other_tenants_alone() {
    streams_cut_short_leave_other_tenants_alone(Cut::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_leave_other_tenants_alone() {
    streams_cut_short_leave_other_tenants_alone(Cut::Stall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_uploads_leave_other_tenants_alone() {
    uploads_cut_short_leave_other_tenants_alone(Cut::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_leave_other_tenants_alone() {
    uploads_cut_short_leave_other_tenants_alone(Cut::Stall).await;
}
