use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, TestProject, assert_envelope, spawn_app, spawn_app_with};

fn schema() -> Value {
    json!([
        {"name": "title", "type": "string"},
        {"name": "price", "type": "number", "nullable": true},
        {"name": "qty", "type": "integer"},
        {"name": "ok", "type": "boolean", "nullable": true},
        {"name": "at", "type": "timestamp", "nullable": true},
        {"name": "meta", "type": "json", "nullable": true}
    ])
}

async fn setup(app: &TestApp) -> (TestProject, String) {
    let p = app.create_project("acme").await;
    let wf = app.create_workflow(&p.key, "Products", schema()).await;
    (p, wf)
}

/// The rows every body format below encodes.
fn expected_rows(first_id: i64) -> Vec<Value> {
    vec![
        json!({"_id": first_id, "title": "a, \"quoted\"\nline\ttab \\ 🚀 שלום =1+1", "price": 9.5, "qty": 3,
               "ok": true, "at": "2024-05-01T12:30:00+00:00", "meta": {"tags": ["x", 1], "n": null}}),
        json!({"_id": first_id + 1, "title": "", "price": null, "qty": -9_007_199_254_740_993_i64,
               "ok": null, "at": null, "meta": null}),
    ]
}

const NDJSON: &str = concat!(
    "{\"title\": \"a, \\\"quoted\\\"\\nline\\ttab \\\\ 🚀 שלום =1+1\", \"price\": 9.5, \"qty\": 3, \"ok\": true, ",
    "\"at\": \"2024-05-01T14:30:00+02:00\", \"meta\": {\"tags\": [\"x\", 1], \"n\": null}}\n",
    "\r\n",
    "{\"title\": \"\", \"price\": null, \"qty\": -9007199254740993}\n"
);

async fn run_ok(
    app: &TestApp,
    p: &TestProject,
    wf: &str,
    ct: &str,
    body: impl Into<reqwest::Body>,
) -> Value {
    let res = app.post_run(&p.key, wf, ct, body).await;
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, 201, "{body}");
    body
}

#[tokio::test]
async fn each_body_type_stores_exactly_its_rows() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let (p, wf) = setup(&app).await;
    let array = format!(
        "[{}]",
        NDJSON
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(",\n")
    );
    let csv_body = "title,price,qty,ok,at,meta\n\
        \"a, \"\"quoted\"\"\nline\ttab \\ 🚀 שלום =1+1\",9.5,3,true,2024-05-01T12:30:00Z,\"{\"\"tags\"\": [\"\"x\"\", 1], \"\"n\"\": null}\"\n\
        -,,-9007199254740993,,,\n";
    let mut first_id = 1;
    let mut run_ids = Vec::new();
    for (ct, body) in [
        ("application/x-ndjson", NDJSON.to_string()),
        ("application/json; charset=utf-8", array),
        ("text/csv", csv_body.to_string()),
    ] {
        let created = run_ok(&app, &p, &wf, ct, body).await;
        assert_eq!(created["rowCount"], 2, "{ct}");
        assert_eq!(created["workflowId"], wf.as_str());
        assert!(
            created["executedAt"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        run_ids.push(created["runId"].as_str().expect("runId").to_string());
        let rows = app.stored_rows(&p.id, &wf).await;
        let got: Vec<Value> = rows[rows.len() - 2..].to_vec();
        let mut want = expected_rows(first_id);
        if ct == "text/csv" {
            // In CSV an empty field is null, so row 2 cannot carry an empty (non-null) title.
            want[1]["title"] = json!("-");
        }
        assert_eq!(got, want, "{ct}");
        first_id += 2;
    }
    // Runs list newest first; ids kept increasing across runs.
    let list: Value = app
        .get(&format!("/v1/workflows/{wf}/runs"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    let listed: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["runId"].as_str().expect("id"))
        .collect();
    run_ids.reverse();
    assert_eq!(listed, run_ids);
    assert_eq!(list["nextCursor"], Value::Null);
}

#[tokio::test]
async fn empty_bodies_make_empty_runs_where_the_format_allows() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let (p, wf) = setup(&app).await;
    assert_eq!(
        run_ok(&app, &p, &wf, "application/x-ndjson", "").await["rowCount"],
        0
    );
    assert_eq!(
        run_ok(&app, &p, &wf, "application/json", "[]").await["rowCount"],
        0
    );
    assert_eq!(
        run_ok(&app, &p, &wf, "text/csv", "title,qty\n").await["rowCount"],
        0
    );
    let (_, msg) = assert_envelope(
        app.post_run(&p.key, &wf, "text/csv", "title,qty\n\"\",1\n")
            .await,
        400,
    )
    .await;
    assert!(
        msg.contains("line 2: field \"title\": required"),
        "an empty CSV field is null: {msg}"
    );
    let (_, msg) = assert_envelope(app.post_run(&p.key, &wf, "text/csv", "").await, 400).await;
    assert!(msg.contains("header"), "{msg}");
    let (_, msg) =
        assert_envelope(app.post_run(&p.key, &wf, "application/json", "").await, 400).await;
    assert!(msg.contains("line 1"), "{msg}");
}

#[tokio::test]
async fn bad_rows_reject_the_whole_run_naming_line_and_field() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let (p, wf) = setup(&app).await;
    let good = r#"{"title": "t", "qty": 1}"#;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "application/x-ndjson",
            format!("{good}\n{{\"title\": \"t\", \"qty\": 1, \"color\": 1}}\n"),
            "line 2: field \"color\": unknown field",
        ),
        (
            "application/x-ndjson",
            format!("{good}\n{good}\n{{\"qty\": 1}}\n"),
            "line 3: field \"title\": required",
        ),
        (
            "application/x-ndjson",
            "{\"title\": null, \"qty\": 1}\n".to_string(),
            "line 1: field \"title\": required",
        ),
        (
            "application/x-ndjson",
            format!("{good}\n{{\"title\": \"t\", \"qty\": 1.5}}\n"),
            "line 2: field \"qty\": expected an integer",
        ),
        (
            "application/x-ndjson",
            format!("{good}\n{{\"title\": 5, \"qty\": 1}}\n"),
            "line 2: field \"title\": expected a string",
        ),
        (
            "application/x-ndjson",
            "{\"title\": \"t\", \"qty\": 1, \"at\": \"yesterday\"}\n".to_string(),
            "line 1: field \"at\": expected an RFC 3339",
        ),
        (
            "application/x-ndjson",
            "{\"title\": \"t\", \"qty\": 1, \"ok\": \"true\"}\n".to_string(),
            "line 1: field \"ok\": expected a boolean",
        ),
        (
            "application/x-ndjson",
            format!("{good}\n{{\"title\": \"t\",\n"),
            "line 2",
        ),
        (
            "application/x-ndjson",
            format!("{good}\n[1, 2]\n"),
            "line 2: expected a JSON object",
        ),
        (
            "application/x-ndjson",
            "{\"title\": \"a\\u0000b\", \"qty\": 1}\n".to_string(),
            "line 1: field \"title\": text may not contain the NUL",
        ),
        (
            "application/json",
            format!("[{good},\n{{\"title\": \"t\", \"qty\": \"x\"}}]"),
            "line 2 (array element 2): field \"qty\"",
        ),
        (
            "application/json",
            format!("[{good}, 5]"),
            "(array element 2): expected a JSON object",
        ),
        ("application/json", good.to_string(), "array"),
        ("application/json", format!("[{good}"), "line 1"),
        (
            "text/csv",
            "title,qty\nt,1\nt,x\n".to_string(),
            "line 3: field \"qty\": expected an integer",
        ),
        (
            "text/csv",
            "title,qty\nt,1\n,2\n".to_string(),
            "line 3: field \"title\": required",
        ),
        (
            "text/csv",
            "title,qty,color\nt,1,red\n".to_string(),
            "line 1: field \"color\": unknown field",
        ),
        (
            "text/csv",
            "title\nt\n".to_string(),
            "line 1: field \"qty\": required",
        ),
        (
            "text/csv",
            "title,qty\nt,1\nt,1,extra\n".to_string(),
            "line 3: expected 2 fields",
        ),
        (
            "text/csv",
            "title,qty,title\nt,1,t\n".to_string(),
            "named twice",
        ),
        (
            "text/csv",
            "title,qty,price\nt,1,NaN\n".to_string(),
            "line 2: field \"price\": expected a finite number",
        ),
        (
            "text/csv",
            "title,qty,ok\nt,1,yes\n".to_string(),
            "line 2: field \"ok\": expected true or false",
        ),
    ];
    for (ct, body, needle) in cases {
        let (code, msg) =
            assert_envelope(app.post_run(&p.key, &wf, ct, body.clone()).await, 400).await;
        assert_eq!(code, "INVALID_REQUEST");
        assert!(
            msg.contains(needle),
            "{ct} {body:?}: expected {needle:?} in {msg:?}"
        );
    }
    assert!(
        app.stored_rows(&p.id, &wf).await.is_empty(),
        "a rejected run left rows"
    );
    let runs: Value = app
        .get(&format!("/v1/workflows/{wf}/runs"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(runs["data"], json!([]));
    // Ids are not burnt by rejected runs.
    run_ok(&app, &p, &wf, "application/x-ndjson", format!("{good}\n")).await;
    assert_eq!(app.stored_rows(&p.id, &wf).await[0]["_id"], 1);
}

#[tokio::test]
async fn unknown_content_types_are_415() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let (p, wf) = setup(&app).await;
    for ct in ["text/plain", "application/xml", ""] {
        let res = app
            .client
            .post(app.url(&format!("/v1/workflows/{wf}/runs")))
            .header("x-api-key", &p.key)
            .header("content-type", ct)
            .body("{}")
            .send()
            .await
            .expect("sent");
        let (code, msg) = assert_envelope(res, 415).await;
        assert_eq!(code, "UNSUPPORTED_MEDIA_TYPE");
        assert!(msg.contains("application/x-ndjson"), "{msg}");
    }
}

#[tokio::test]
async fn oversize_bodies_are_413_and_store_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool, &[("WHARF_MAX_RUN_BYTES", "1KiB")]).await;
    let (p, wf) = setup(&app).await;
    let row = "{\"title\": \"t\", \"qty\": 1}\n";
    let big = row.repeat(2048 / row.len() + 1);
    // Declared length over the limit: rejected before reading.
    let (code, msg) = assert_envelope(
        app.post_run(&p.key, &wf, "application/x-ndjson", big.clone())
            .await,
        413,
    )
    .await;
    assert_eq!(code, "PAYLOAD_TOO_LARGE");
    assert!(msg.contains("1024"), "{msg}");
    // Chunked, no declared length: rejected once the limit is crossed.
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(100)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (code, _) = assert_envelope(
        app.post_run(&p.key, &wf, "application/x-ndjson", body)
            .await,
        413,
    )
    .await;
    assert_eq!(code, "PAYLOAD_TOO_LARGE");
    assert!(app.stored_rows(&p.id, &wf).await.is_empty());
    // Just under the limit is fine.
    let fits = row.repeat(1024 / row.len());
    assert_eq!(
        run_ok(&app, &p, &wf, "application/x-ndjson", fits).await["rowCount"],
        1024 / row.len()
    );
}

/// A streamed NDJSON body of `rows` rows; row `bad_line` (1-based), if any, has a string qty.
fn generated_body(rows: u64, bad_line: Option<u64>) -> reqwest::Body {
    const PER_CHUNK: u64 = 10_000;
    let chunks = futures::stream::iter(0..rows.div_ceil(PER_CHUNK)).map(move |c| {
        let mut s = String::with_capacity(PER_CHUNK as usize * 120);
        for line in (c * PER_CHUNK + 1)..=((c + 1) * PER_CHUNK).min(rows) {
            if Some(line) == bad_line {
                s.push_str("{\"title\": \"bad\", \"qty\": \"many\"}\n");
            } else {
                s.push_str(&format!(
                    "{{\"title\": \"product {line}\", \"price\": {}.25, \"qty\": {line}, \"ok\": {}, \"at\": \"2024-01-01T00:00:00Z\"}}\n",
                    line % 1000,
                    line % 2 == 0
                ));
            }
        }
        Ok::<_, std::io::Error>(Bytes::from(s))
    });
    reqwest::Body::wrap_stream(chunks)
}

#[tokio::test]
async fn a_million_row_ndjson_body_ingests_in_one_request() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let (p, wf) = setup(&app).await;
    let created = run_ok(
        &app,
        &p,
        &wf,
        "application/x-ndjson",
        generated_body(1_000_000, None),
    )
    .await;
    assert_eq!(created["rowCount"], 1_000_000);
    let wf_rec = wharf_shared::repo::workflows::get(
        &pool,
        wharf_tests::parse(&p.id),
        wharf_tests::parse(&wf),
    )
    .await
    .expect("q")
    .expect("wf");
    let run_id = wharf_tests::parse(created["runId"].as_str().expect("runId"));
    assert_eq!(
        wharf_shared::repo::runs::stored_rows(&pool, &wf_rec, run_id)
            .await
            .expect("count"),
        1_000_000
    );
    let (min, max, qty_sum): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT min(_id), max(_id), sum(c3)::bigint FROM {}",
        wf_rec.table_name
    )))
    .fetch_one(&pool)
    .await
    .expect("query");
    assert_eq!((min, max), (1, 1_000_000));
    assert_eq!(qty_sum, 1_000_000 * 1_000_001 / 2);
}

#[tokio::test]
async fn a_bad_row_late_in_a_large_body_stores_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let (p, wf) = setup(&app).await;
    let res = app
        .post_run(
            &p.key,
            &wf,
            "application/x-ndjson",
            generated_body(1_000_000, Some(900_000)),
        )
        .await;
    let (code, msg) = assert_envelope(res, 400).await;
    assert_eq!(code, "INVALID_REQUEST");
    assert!(
        msg.contains("line 900000") && msg.contains("\"qty\""),
        "{msg}"
    );
    assert!(app.stored_rows(&p.id, &wf).await.is_empty());
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&pool)
        .await
        .expect("q");
    assert_eq!(runs, 0);
    let next: i64 = sqlx::query_scalar("SELECT next_row_id FROM workflows")
        .fetch_one(&pool)
        .await
        .expect("q");
    assert_eq!(next, 1);
}

/// Peak resident memory (VmHWM, kB) of the PostgreSQL backends serving this test's database.
async fn backends_peak_kb(pool: &sqlx::PgPool) -> u64 {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            .fetch_all(pool)
            .await
            .expect("backends");
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn wide_rows_do_not_pile_up_in_the_database_backend() {
    // PostgreSQL buffers up to 1,000 binary COPY tuples whatever their size; Wharf ends each
    // COPY after 16 MiB so a run of wide rows cannot make a backend hold hundreds of MB.
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "Wide", json!([{"name": "s", "type": "string"}]))
        .await;
    let rows = 160u64;
    let text = "x".repeat(900_000);
    let body = futures::stream::iter(0..rows)
        .map(move |_| Ok::<_, std::io::Error>(Bytes::from(format!("{{\"s\": \"{text}\"}}\n"))));
    let res = app
        .client
        .post(app.url(&format!("/v1/workflows/{wf}/runs")))
        .header("x-api-key", &p.key)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let peak_mb = backends_peak_kb(&pool).await / 1024;
    // 160 rows × 900 KB is 144 MB: held at once without the split, ~16 MB with it.
    assert!(
        peak_mb > 0,
        "PostgreSQL's backends must be readable in /proc (the tests' PostgreSQL is local)"
    );
    assert!(
        peak_mb < 90,
        "a backend reached {peak_mb} MB ingesting 144 MB of wide rows"
    );
}

#[tokio::test]
async fn a_json_null_in_a_csv_cell_is_held_to_the_field_being_nullable() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(
            &p.key,
            "Docs",
            json!([{"name": "doc", "type": "json"}, {"name": "extra", "type": "json", "nullable": true}]),
        )
        .await;
    let res = app
        .client
        .post(app.url(&format!("/v1/workflows/{wf}/runs")))
        .header("x-api-key", &p.key)
        .header("content-type", "text/csv")
        .body("doc,extra\n{\"a\": 1},null\nnull,{}\n")
        .send()
        .await
        .expect("sent");
    let (_, msg) = assert_envelope(res, 400).await;
    assert!(msg.starts_with("line 3: field \"doc\": required"), "{msg}");
    // Nullable: `null` is a null, as an empty cell is.
    let res = app
        .client
        .post(app.url(&format!("/v1/workflows/{wf}/runs")))
        .header("x-api-key", &p.key)
        .header("content-type", "text/csv")
        .body("doc,extra\n{\"a\": 1},null\n")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
}
