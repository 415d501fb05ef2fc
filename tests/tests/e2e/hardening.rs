//! Inputs that once gave a 500 (API.md, Limits): each is a 400 naming the field, and none is
//! logged as an error. The HTTP layer's own answers are in the envelope too.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::process::raw_exchange;
use wharf_tests::{ADMIN_TOKEN, TestApp, assert_envelope, spawn_app};

/// Sends a request to `base` and returns (status, body).
async fn call(
    app: &TestApp,
    base: &str,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = app
        .client
        .request(method, format!("{base}{path}"))
        .header("x-api-key", key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let res = rb.send().await.expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn inputs_postgres_would_refuse_are_400_naming_the_field() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let api = app.spawn_api_process(&[("WHARF_RATE_LIMIT", "0")]).await;
    let base = api.address.clone();
    let p = app.create_project("acme").await;
    let (_, reader) = app.create_key(&p.key, &["read"]).await;
    let wf = app
        .create_workflow(
            &p.key,
            "W",
            json!([{"name": "s", "type": "string"}, {"name": "at", "type": "timestamp", "nullable": true},
                   {"name": "j", "type": "json", "nullable": true}]),
        )
        .await;
    assert_eq!(
        app.post_run(&p.key, &wf, "text/csv", "s\nx\n")
            .await
            .status(),
        201
    );
    let exports = format!("/v1/workflows/{wf}/exports");
    let nul = "a\u{0}b";
    let filter_cases = [
        (
            json!({"filters": [{"field": "s", "op": "eq", "value": nul}]}),
            "filters[0].value",
        ),
        (
            json!({"filters": [{"field": "s", "op": "contains", "value": nul}]}),
            "filters[0].value",
        ),
        (
            json!({"filters": [{"field": "s", "op": "in", "value": ["ok", nul]}]}),
            "filters[0].value[1]",
        ),
        (
            json!({"filters": [{"field": "j", "op": "eq", "value": {nul: 1}}]}),
            "filters[0].value",
        ),
    ];
    for (body, field) in filter_cases {
        let (status, res) = call(&app, &base, Method::POST, &exports, &reader, Some(body)).await;
        assert_eq!(status, 400, "{res}");
        assert!(
            message(&res).contains(field) && message(&res).contains("NUL"),
            "{res}"
        );
    }
    let kadoa = format!(
        "/v4/workflows/{wf}/data/export?wait=0&filters=%5B%7B%22field%22%3A%22s%22%2C%22op%22%3A%22eq%22%2C%22value%22%3A%22a%5Cu0000%22%7D%5D"
    );
    let (status, res) = call(&app, &base, Method::GET, &kadoa, &reader, None).await;
    assert_eq!(status, 400, "{res}");
    assert!(
        message(&res).starts_with("filters") && message(&res).contains("NUL"),
        "{res}"
    );

    let body = json!({"name": nul, "schema": [{"name": "a", "type": "string"}]});
    let (status, res) = call(
        &app,
        &base,
        Method::POST,
        "/v1/workflows",
        &p.key,
        Some(body),
    )
    .await;
    assert_eq!(status, 400, "{res}");
    assert!(
        message(&res).contains("name: text may not contain the NUL"),
        "{res}"
    );
    let res = app
        .client
        .post(format!("{base}/v1/projects"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"slug": "nul", "name": nul}))
        .send()
        .await
        .expect("sent");
    let (_, msg) = assert_envelope(res, 400).await;
    assert!(msg.contains("name: text may not contain the NUL"), "{msg}");
    let res = app
        .client
        .get(format!(
            "{base}/projects/a%00b/export/download/exp_{}",
            "0".repeat(32)
        ))
        .bearer_auth(&p.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(message(&body).contains("project"), "{body}");

    // Year 10000 in UTC, in NDJSON and in CSV.
    let runs = format!("{base}/v1/workflows/{wf}/runs");
    for (ct, body, place) in [
        (
            "application/x-ndjson",
            "{\"s\": \"x\", \"at\": \"9999-12-31T23:59:59-14:00\"}\n".to_string(),
            "line 1: field \"at\"",
        ),
        (
            "text/csv",
            "s,at\nx,9999-12-31T23:59:59-14:00\n".to_string(),
            "line 2: field \"at\"",
        ),
    ] {
        let res = app
            .client
            .post(&runs)
            .header("x-api-key", &p.key)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .expect("sent");
        let (_, msg) = assert_envelope(res, 400).await;
        assert!(
            msg.starts_with(place) && msg.contains("outside 0001-01-01 to 9999-12-31"),
            "{msg}"
        );
    }

    // A row PostgreSQL cannot fit in a page: 500 string fields of 300 varied characters.
    let fields: Vec<Value> = (0..500)
        .map(|i| json!({"name": format!("f{i}"), "type": "string", "nullable": true}))
        .collect();
    let wide = app.create_workflow(&p.key, "Wide", json!(fields)).await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
        .chars()
        .collect();
    let mut row = serde_json::Map::new();
    for i in 0..500 {
        let text: String = (0..300)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                alphabet[(seed % 64) as usize]
            })
            .collect();
        row.insert(format!("f{i}"), Value::String(text));
    }
    let ok_row = json!({"f0": "short"});
    let body = format!("{ok_row}\n{}\n{ok_row}\n{ok_row}\n", Value::Object(row));
    let res = app
        .client
        .post(format!("{base}/v1/workflows/{wide}/runs"))
        .header("x-api-key", &p.key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("sent");
    let (_, msg) = assert_envelope(res, 400).await;
    assert!(
        msg.starts_with("line 2: the row is too wide to store"),
        "{msg}"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        api.error_lines(),
        Vec::<String>::new(),
        "nothing logged as ERROR"
    );
}

#[tokio::test]
async fn json_bodies_are_strict() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "W", json!([{"name": "n", "type": "number"}, {"name": "j", "type": "json", "nullable": true}]))
        .await;
    let send = |path: String, ct: &'static str, body: &'static str| {
        app.client
            .post(app.url(&path))
            .header("x-api-key", &p.key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    // Duplicate keys, in a request body and in rows (top level and inside a json field).
    let res = send(
        "/v1/workflows".into(),
        "application/json",
        r#"{"name": "a", "name": "b", "schema": [{"name": "x", "type": "string"}]}"#,
    )
    .await
    .expect("sent");
    let (_, msg) = assert_envelope(res, 400).await;
    assert!(msg.contains("duplicate key \"name\""), "{msg}");
    let runs = format!("/v1/workflows/{wf}/runs");
    let res = send(
        runs.clone(),
        "application/x-ndjson",
        "{\"n\": 1, \"n\": 2}\n",
    )
    .await
    .expect("sent");
    let (_, msg) = assert_envelope(res, 400).await;
    assert_eq!(msg, "line 1: field \"n\": given twice in the object");
    let res = send(
        runs.clone(),
        "application/json",
        "[{\"n\": 1, \"j\": {\"a\": 1, \"a\": 2}}]",
    )
    .await
    .expect("sent");
    let (_, msg) = assert_envelope(res, 400).await;
    assert!(
        msg.starts_with("line 1 (array element 1): field \"j\"")
            && msg.contains("duplicate key \"a\""),
        "{msg}"
    );
    // Nesting deeper than 128.
    let deep: &'static str = Box::leak(
        format!(
            "{{\"n\": 1, \"j\": {}{}}}\n",
            "[".repeat(200),
            "]".repeat(200)
        )
        .into_boxed_str(),
    );
    let res = send(runs.clone(), "application/x-ndjson", deep)
        .await
        .expect("sent");
    let (_, msg) = assert_envelope(res, 400).await;
    assert!(msg.contains("nested deeper than 128"), "{msg}");
    // Bodies of the wrong shape name no Rust type.
    for body in ["[]", "null", "{\"filters\": [[]]}", "{\"rowIds\": [\"x\"]}"] {
        let res = send(
            format!("/v1/workflows/{wf}/exports"),
            "application/json",
            body,
        )
        .await
        .expect("sent");
        let (_, msg) = assert_envelope(res, 400).await;
        assert!(
            !msg.contains("struct") && !msg.contains("i64") && !msg.contains("ExportRequest"),
            "{body}: {msg}"
        );
    }
}

#[tokio::test]
async fn the_http_layer_answers_in_the_envelope() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    // Unknown method on a known path: 405 with Allow.
    let res = app
        .request(
            Method::DELETE,
            "/v1/workflows",
            Some(&p.key),
            wharf_tests::KeyHeader::ApiKey,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
    let (code, _) = assert_envelope(res, 405).await;
    assert_eq!(code, "METHOD_NOT_ALLOWED");
    // Every response: nosniff; API answers carrying secrets: no-store.
    let res = app
        .post_json("/v1/api-keys", &p.key, &json!({"scopes": ["read"]}))
        .await;
    assert_eq!(
        res.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    // An over-long URI and too many headers.
    let long = format!("/v1/workflows?cursor={}", "a".repeat(9000));
    let res = app.get(&long, &p.key).await;
    let (code, msg) = assert_envelope(res, 414).await;
    assert_eq!(code, "INVALID_REQUEST");
    assert!(msg.contains("8192"), "{msg}");
    let mut rb = app
        .client
        .get(app.url("/v1/workflows"))
        .header("x-api-key", &p.key);
    for i in 0..70 {
        rb = rb.header(format!("x-extra-{i}"), "1");
    }
    let (_, msg) = assert_envelope(rb.send().await.expect("sent"), 431).await;
    assert!(msg.contains("headers"), "{msg}");
    // What the HTTP library refuses before a request exists (API.md, Errors) is answered by
    // the library as it ships (unmodified upstream actix-http): both Content-Length and
    // Transfer-Encoding, a header with a bad byte (400), more than its 96 headers, a request
    // head over its 128 KiB (431). No handler runs, and the server goes on serving.
    let many: String = (0..100).map(|i| format!("\r\nx-h{i}: 1")).collect();
    let cases = [
        (
            "POST /v1/workflows HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked"
                .to_string(),
            400,
        ),
        (
            "GET /v1/workflows HTTP/1.1\r\nHost: x\r\nx-bad: a\u{1}b".to_string(),
            400,
        ),
        (format!("GET /v1/workflows HTTP/1.1\r\nHost: x{many}"), 431),
        (
            format!(
                "GET /v1/workflows?c={} HTTP/1.1\r\nHost: x",
                "a".repeat(200_000)
            ),
            431,
        ),
    ];
    for (head, status) in cases {
        let res = raw_exchange(
            &app.address,
            &head,
            vec![b"0\r\n\r\n".to_vec()],
            Duration::ZERO,
            Duration::from_secs(5),
        )
        .await
        .expect("an answer");
        assert_eq!(res.status, status, "{res:?}");
        assert!(!res.body.contains("workflows"), "no handler ran: {res:?}");
        let after = app.get("/v1/workflows", &p.key).await;
        assert_eq!(after.status(), 200, "the server goes on serving");
    }
}

#[tokio::test]
async fn keys_are_listed_and_the_last_admin_key_stays() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    let (reader_id, _) = app.create_key(&p.key, &["read"]).await;
    let list: Value = app
        .get("/v1/api-keys", &p.key)
        .await
        .json()
        .await
        .expect("json");
    let keys = list["data"].as_array().expect("data");
    assert_eq!(keys.len(), 2, "{list}");
    assert_eq!(keys[0]["id"], reader_id.as_str(), "newest first");
    for k in keys {
        let mut names: Vec<&str> = k
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "createdAt",
                "id",
                "lastUsedAt",
                "prefix",
                "revokedAt",
                "scopes"
            ]
        );
        assert!(
            k["prefix"]
                .as_str()
                .is_some_and(|s| s.starts_with("wh_") && s.len() == 9)
        );
    }
    assert!(!list.to_string().contains(&p.key), "no secret listed");
    let admin_id = keys[1]["id"].as_str().expect("id").to_string();
    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{admin_id}"),
            Some(&p.key),
            wharf_tests::KeyHeader::ApiKey,
        )
        .send()
        .await
        .expect("sent");
    let (code, msg) = assert_envelope(res, 409).await;
    assert_eq!(code, "CONFLICT");
    assert!(msg.contains("last admin key"), "{msg}");
    // With a second admin key, the first can go.
    let (_, second) = app.create_key(&p.key, &["admin"]).await;
    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{admin_id}"),
            Some(&second),
            wharf_tests::KeyHeader::ApiKey,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 204);
    let list: Value = app
        .get("/v1/api-keys", &second)
        .await
        .json()
        .await
        .expect("json");
    let revoked = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|k| k["id"] == admin_id.as_str())
        .cloned();
    assert!(revoked.is_some_and(|k| k["revokedAt"].is_string()));
    let (status, _) = call(
        &app,
        &app.address,
        Method::GET,
        "/v1/workflows",
        &p.key,
        None,
    )
    .await;
    assert_eq!(status, 401, "the revoked key no longer works");
}
