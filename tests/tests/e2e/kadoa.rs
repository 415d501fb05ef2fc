//! Kadoa's reads on /v4, as its SDK makes them: workflows listed and fetched, rows paged
//! through synchronously (JSON or CSV, gzip, filters, sort, rowIds), and limit=0 streams.

use std::io::Read;

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, TestProject, spawn_app, spawn_app_with};

const ROWS: i64 = 25_000;

/// `score` is null on every 7th row and repeats (ties broken by `_id`); `name` repeats too.
fn row(i: i64) -> Value {
    json!({
        "n": i,
        "score": if i % 7 == 0 { Value::Null } else { json!((i * 37) % 101) },
        "name": format!("name-{:03}", (i * 13) % 500),
    })
}

async fn setup(app: &TestApp) -> (TestProject, String) {
    let p = app.create_project("kadoa").await;
    let wf = app
        .create_workflow(
            &p.key,
            "Scraped products",
            json!([
                {"name": "n", "type": "integer"},
                {"name": "score", "type": "number", "nullable": true},
                {"name": "name", "type": "string"}
            ]),
        )
        .await;
    let body: String = (1..=ROWS).map(|i| format!("{}\n", row(i))).collect();
    let res = app
        .post_run(&p.key, &wf, "application/x-ndjson", body)
        .await;
    assert_eq!(res.status(), 201);
    (p, wf)
}

async fn get_json(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let res = app.get(path, key).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The ids in the order PostgreSQL sorts by `key` (nulls last ascending, first descending),
/// ties by `_id` ascending.
fn expected_order(key: &str, desc: bool) -> Vec<i64> {
    let mut ids: Vec<i64> = (1..=ROWS).collect();
    let k = |i: i64| row(i)[key].clone();
    ids.sort_by(|a, b| {
        let (ka, kb) = (k(*a), k(*b));
        let ord = match (ka.is_null(), kb.is_null()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => match (ka.as_f64(), kb.as_f64()) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => ka.as_str().cmp(&kb.as_str()),
            },
        };
        let ord = if desc { ord.reverse() } else { ord };
        ord.then(a.cmp(b))
    });
    ids
}

#[tokio::test]
async fn paging_yields_every_row_once_in_order_for_every_sort() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let (p, wf) = setup(&app).await;
    for (sort, key) in [("_id", "n"), ("score", "score"), ("name", "name")] {
        for order in ["asc", "DESC"] {
            let desc = order.eq_ignore_ascii_case("desc");
            let mut ids = Vec::new();
            let mut page = 1;
            loop {
                let (status, body) = get_json(
                    &app,
                    &p.key,
                    &format!(
                        "/v4/workflows/{wf}/data?sortBy={sort}&order={order}&page={page}&limit=1000"
                    ),
                )
                .await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["workflowId"].as_str(), Some(wf.as_str()));
                assert_eq!(body["pagination"]["totalCount"], ROWS);
                assert_eq!(body["pagination"]["totalPages"], 25);
                assert_eq!(body["pagination"]["page"], page);
                assert_eq!(body["pagination"]["limit"], 1000);
                let data = body["data"].as_array().expect("data");
                for r in data {
                    let id = r["_id"].as_i64().expect("_id");
                    assert_eq!(r["n"], id, "the row is the one with that id");
                    assert_eq!(r["score"].as_f64(), row(id)["score"].as_f64());
                    ids.push(id);
                }
                if page >= body["pagination"]["totalPages"].as_i64().unwrap_or(0) {
                    break;
                }
                page += 1;
            }
            let mut want = expected_order(if sort == "_id" { "n" } else { key }, desc);
            if sort == "_id" && desc {
                want = (1..=ROWS).rev().collect();
            }
            assert_eq!(ids.len() as i64, ROWS, "{sort} {order}: every row");
            assert_eq!(ids, want, "{sort} {order}: once each, in order");
        }
    }
    // Past the last page: an empty page with the same figures.
    let (_, body) = get_json(
        &app,
        &p.key,
        &format!("/v4/workflows/{wf}/data?page=26&limit=1000"),
    )
    .await;
    assert_eq!(body["data"], json!([]));
    assert_eq!(body["pagination"]["totalPages"], 25);
}

#[tokio::test]
async fn filters_row_ids_csv_and_gzip_combine_with_paging() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let (p, wf) = setup(&app).await;
    let filters = urlencode(&json!([{"field": "score", "op": "gte", "value": 50}]).to_string());
    let want: Vec<i64> = (1..=ROWS)
        .filter(|i| row(*i)["score"].as_f64().is_some_and(|s| s >= 50.0))
        .collect();
    // Filtered and sorted by _id: pages 1, 2, 3 … seek by key (and page 7 alone by skipping).
    let mut ids = Vec::new();
    let mut page = 1;
    loop {
        let (status, body) = get_json(
            &app,
            &p.key,
            &format!("/v4/workflows/{wf}/data?filters={filters}&page={page}&limit=999"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["pagination"]["totalCount"], want.len());
        ids.extend(
            body["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|r| r["_id"].as_i64().unwrap_or(0)),
        );
        if page >= body["pagination"]["totalPages"].as_i64().unwrap_or(0) {
            break;
        }
        page += 1;
    }
    assert_eq!(ids, want);
    let fresh = spawn_app(db.pool.clone()).await; // no remembered keys: page 7 by skipping
    let (_, body) = get_json(
        &fresh,
        &p.key,
        &format!("/v4/workflows/{wf}/data?filters={filters}&page=7&limit=999"),
    )
    .await;
    let page7: Vec<i64> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["_id"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(page7, want[6 * 999..(7 * 999).min(want.len())].to_vec());

    // rowIds and a filter, as CSV: parsed with the csv crate, header first.
    let row_ids: Vec<String> = (1..=60).map(|i| (i * 3).to_string()).collect();
    let path = format!(
        "/v4/workflows/{wf}/data?format=CSV&rowIds={}&filters={filters}&limit=10&page=2&order=ASC&includeAnomalies=true",
        row_ids.join(",")
    );
    let res = app.get(&path, &p.key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/csv; charset=utf-8")
    );
    let total: usize = res
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let in_both: Vec<i64> = (1..=60)
        .map(|i| i * 3)
        .filter(|i| want.contains(i))
        .collect();
    assert_eq!(total, in_both.len());
    let csv_bytes = res.bytes().await.expect("body").to_vec();
    let mut rdr = csv::Reader::from_reader(csv_bytes.as_slice());
    assert_eq!(
        rdr.headers().expect("header").iter().collect::<Vec<_>>(),
        vec!["_id", "n", "score", "name"]
    );
    let got: Vec<i64> = rdr
        .records()
        .map(|r| r.expect("record")[0].parse().expect("id"))
        .collect();
    assert_eq!(got, in_both[10..20.min(in_both.len())].to_vec());

    // gzip=true: Content-Encoding gzip, the same bytes once decompressed.
    let res = app
        .client
        .get(app.url(&format!("{path}&gzip=true")))
        .header("x-api-key", &p.key)
        .header("accept-encoding", "identity")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let packed = res.bytes().await.expect("body");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(packed.as_ref())
        .read_to_end(&mut plain)
        .expect("gzip");
    assert_eq!(plain, csv_bytes);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn parameters_limits_streams_and_workflow_reads() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_PROJECT_READS", "1")]).await;
    let (p, wf) = setup(&app).await;

    for (query, what) in [
        ("limit=10001", "limit"),
        ("page=x", "page"),
        ("page=0", "pages start at 1"),
        ("format=parquet", "format"),
        ("gzip=maybe", "gzip"),
        ("order=sideways", "order"),
        ("colour=blue", "colour"),
        ("sortBy=nope", "nope"),
        ("runId=not-a-uuid", "runId"),
    ] {
        let (status, body) =
            get_json(&app, &p.key, &format!("/v4/workflows/{wf}/data?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(what),
            "{query}: the message names {what}: {body}"
        );
    }
    let (status, _) = get_json(
        &app,
        &p.key,
        &format!("/v4/workflows/{wf}/data?runId={}", uuid::Uuid::now_v7()),
    )
    .await;
    assert_eq!(status, 404, "an unknown run");

    // limit=0: every selected row, streamed.
    let (status, body) = get_json(&app, &p.key, &format!("/v4/workflows/{wf}/data?limit=0")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().map(Vec::len), Some(ROWS as usize));
    assert_eq!(body["pagination"]["totalPages"], 1);

    // WHARF_PROJECT_READS=1: a stream the client is not reading (42 MB, more than any socket
    // buffer holds) keeps the project's one slot.
    let wide = app.wide_workflow(&p.key, 100_000).await;
    let held = app
        .client
        .get(app.url(&format!("/v4/workflows/{wide}/data?limit=0")))
        .header("x-api-key", &p.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(held.status(), 200);
    let (status, body) = get_json(&app, &p.key, &format!("/v4/workflows/{wf}/data?limit=5")).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("WHARF_PROJECT_READS")
    );
    let all: Value = held.json().await.expect("the whole stream, valid JSON");
    assert_eq!(all["data"].as_array().map(Vec::len), Some(100_000));
    let (status, _) = get_json(&app, &p.key, &format!("/v4/workflows/{wf}/data?limit=5")).await;
    assert_eq!(status, 200, "the slot is back once the stream ended");

    // Workflows in Kadoa's shape.
    let other = app
        .create_workflow(
            &p.key,
            "Another list",
            json!([{"name": "x", "type": "string"}]),
        )
        .await;
    let (status, one) = get_json(&app, &p.key, &format!("/v4/workflows/{wf}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "Scraped products");
    assert_eq!(one["state"], "ACTIVE");
    assert_eq!(one["totalRecords"], ROWS);
    assert!(one["finishedAt"].is_string());
    assert_eq!(
        one["schema"][1],
        json!({"name": "score", "type": "number", "nullable": true})
    );
    let (_, list) = get_json(&app, &p.key, "/v4/workflows?limit=1").await;
    assert_eq!(
        list["pagination"],
        json!({"totalCount": 3, "page": 1, "totalPages": 3, "limit": 1})
    );
    assert_eq!(
        list["workflows"][0]["id"].as_str(),
        Some(other.as_str()),
        "newest first"
    );
    let (_, list) = get_json(&app, &p.key, "/v4/workflows?limit=1&skip=2").await;
    assert_eq!(list["pagination"]["page"], 3);
    assert_eq!(list["workflows"][0]["id"].as_str(), Some(wf.as_str()));
    let (_, found) = get_json(&app, &p.key, "/v4/workflows?search=SCRAPED").await;
    assert_eq!(found["pagination"]["totalCount"], 1);
    assert_eq!(found["workflows"][0]["totalRecords"], ROWS);

    // Tenancy: another project's key sees nothing of these.
    let q = app.create_project("other").await;
    for path in [
        format!("/v4/workflows/{wf}"),
        format!("/v4/workflows/{wf}/data"),
    ] {
        let (status, _) = get_json(&app, &q.key, &path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, theirs) = get_json(&app, &q.key, "/v4/workflows").await;
    assert_eq!(theirs["pagination"]["totalCount"], 0);
}

#[tokio::test]
async fn an_sdk_style_python_client_pages_through_everything() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let (p, wf) = setup(&app).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kadoa-pager.py");
    let (base, key) = (app.address.clone(), p.key.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .args([&base, &key, &wf, "1000"])
            .output()
    })
    .await
    .expect("joined")
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["rows"], ROWS);
    assert_eq!(summary["pages"], 25);
    let ids: Vec<i64> = summary["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>());
}
