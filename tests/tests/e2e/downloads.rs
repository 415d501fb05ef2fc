//! Every way of getting the bytes: 302 to presigned S3, streaming, signed links, ranges,
//! retention, and the seed-compatible routes.

use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, TestProject, assert_envelope, spawn_app, spawn_app_with};

async fn completed(
    app: &TestApp,
    name: &str,
    rows: usize,
    format: &str,
) -> (TestProject, String, Value) {
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(
            &p.key,
            name,
            json!([{"name": "n", "type": "integer"}, {"name": "s", "type": "string"}]),
        )
        .await;
    let body: String = (0..rows)
        .map(|n| format!("{{\"n\": {n}, \"s\": \"row {n}, \\\"q\\\"\"}}\n"))
        .collect();
    assert_eq!(
        app.post_run(&p.key, &wf, "application/x-ndjson", body)
            .await
            .status(),
        201
    );
    let status = app
        .export_and_wait(&p.key, &wf, &json!({"format": format}))
        .await;
    assert_eq!(status["status"], "COMPLETED");
    (p, wf, status)
}

/// `GET /v1/exports/{id}/download` without following it: asserts the 302, returns Location.
async fn redirect_location(app: &TestApp, key: &str, id: &str) -> String {
    let res = no_redirects()
        .get(app.url(&format!("/v1/exports/{id}/download")))
        .header("x-api-key", key)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 302);
    res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn all_three_paths_give_the_objects_bytes() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let (p, _, status) = completed(&app, "Products", 20_000, "csv").await;
    let object = app.export_file(&status).await;
    let id = status["exportId"].as_str().expect("id");
    // 1. 302 to a presigned URL (S3), or to the API's own signed link (a local directory),
    //    fetched by a plain HTTP client.
    let location = redirect_location(&app, &p.key, id).await;
    let s3_store = app.settings.store == wharf_shared::config::StoreKind::S3;
    let expected = if s3_store {
        app.settings.s3.endpoint.clone().unwrap_or_default()
    } else {
        format!("{}/v1/exports/{id}/file?expires=", app.address)
    };
    assert!(location.starts_with(&expected), "{location}");
    let s3 = reqwest::get(&location).await.expect("presigned GET");
    assert_eq!(s3.status(), 200);
    assert_eq!(s3.headers()[CONTENT_TYPE], "text/csv; charset=utf-8");
    let cd = s3.headers()[CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        cd.starts_with("attachment; filename=\"Products-") && cd.ends_with(".csv\""),
        "{cd}"
    );
    assert_eq!(s3.bytes().await.expect("body").to_vec(), object);
    // In S3 the object itself carries the headers, so any GET of it does.
    if s3_store {
        let rec = wharf_shared::repo::exports::get_any(&app.pool, wharf_tests::parse(id))
            .await
            .expect("q")
            .expect("rec");
        let store = app.s3_store().await;
        let head = store
            .client()
            .head_object()
            .bucket(store.bucket())
            .key(rec.object_key.expect("key"))
            .send()
            .await
            .expect("head");
        assert_eq!(head.content_type(), Some("text/csv; charset=utf-8"));
        assert_eq!(head.content_disposition(), Some(cd.as_str()));
    }
    // 2. Streamed through the API.
    let res = app
        .get(&format!("/v1/exports/{id}/download?mode=stream"), &p.key)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        res.headers()["content-length"],
        object.len().to_string().as_str()
    );
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    let etag = res.headers()["etag"].to_str().expect("etag").to_string();
    assert_eq!(
        etag,
        format!("\"{}\"", status["sha256"].as_str().expect("sha"))
    );
    assert_eq!(res.headers()[CONTENT_DISPOSITION].to_str().expect("cd"), cd);
    assert_eq!(res.bytes().await.expect("body").to_vec(), object);
    // 3. The signed link, with no key at all.
    let url = status["url"].as_str().expect("url");
    let res = reqwest::get(url).await.expect("sent");
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.expect("body").to_vec(), object);
    // HEAD and If-None-Match.
    let res = app.client.head(url).send().await.expect("sent");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"],
        object.len().to_string().as_str()
    );
    assert!(res.bytes().await.expect("body").is_empty());
    let res = app
        .client
        .get(url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 304);
    // Last-Modified: the export's completion, to the second, on the stream and the link alike;
    // If-Modified-Since at or after it is a 304, before it the file.
    let completed =
        chrono::DateTime::parse_from_rfc3339(status["completedAt"].as_str().expect("completedAt"))
            .expect("a time");
    let http_date = |t: chrono::DateTime<chrono::FixedOffset>| {
        t.with_timezone(&chrono::Utc)
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string()
    };
    let streamed = app
        .get(&format!("/v1/exports/{id}/download?mode=stream"), &p.key)
        .await;
    for res in [&streamed, &reqwest::get(url).await.expect("sent")] {
        assert_eq!(
            res.headers()["last-modified"].to_str().ok(),
            Some(http_date(completed).as_str())
        );
    }
    let since = |t| {
        app.client
            .get(url)
            .header("if-modified-since", http_date(t))
            .send()
    };
    assert_eq!(since(completed).await.expect("sent").status(), 304);
    let before = completed - chrono::Duration::seconds(2);
    assert_eq!(since(before).await.expect("sent").status(), 200);
}

#[tokio::test]
async fn ranges_resume_to_the_same_sha256() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let (p, _, status) = completed(&app, "Ranges", 5_000, "ndjson").await;
    let object = app.export_file(&status).await;
    let size = object.len();
    let id = status["exportId"].as_str().expect("id");
    let path = format!("/v1/exports/{id}/download?mode=stream");
    let range = |r: String| {
        let rb = app
            .client
            .get(app.url(&path))
            .header("x-api-key", &p.key)
            .header("range", r);
        async move { rb.send().await.expect("sent") }
    };
    for (spec, want) in [
        ("bytes=0-0".to_string(), &object[..1]),
        (
            format!("bytes={}-{}", size - 1, size - 1),
            &object[size - 1..],
        ),
        ("bytes=100-199".to_string(), &object[100..200]),
        ("bytes=-50".to_string(), &object[size - 50..]),
        (format!("bytes={}-", size - 10), &object[size - 10..]),
        (format!("bytes=10-{}", size + 1000), &object[10..]),
    ] {
        let res = range(spec.clone()).await;
        assert_eq!(res.status(), 206, "{spec}");
        let cr = res.headers()["content-range"]
            .to_str()
            .expect("cr")
            .to_string();
        assert!(cr.ends_with(&format!("/{size}")), "{spec}: {cr}");
        assert_eq!(res.bytes().await.expect("body").to_vec(), want, "{spec}");
    }
    // Conditional requests: a weak tag matches for If-None-Match; If-Range with a stale tag
    // gets the whole file; a failed If-Match is 412.
    let etag = format!("\"{}\"", status["sha256"].as_str().expect("sha"));
    let conditional = |name: &'static str, value: String, range: Option<&'static str>| {
        let mut rb = app
            .client
            .get(app.url(&path))
            .header("x-api-key", &p.key)
            .header(name, value);
        if let Some(r) = range {
            rb = rb.header("range", r);
        }
        async move { rb.send().await.expect("sent") }
    };
    let res = conditional("if-none-match", format!("W/{etag}"), None).await;
    assert_eq!(res.status(), 304);
    let res = conditional("if-range", "\"stale\"".into(), Some("bytes=0-9")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.expect("body").len(), size);
    let res = conditional("if-range", etag.clone(), Some("bytes=0-9")).await;
    assert_eq!(res.status(), 206);
    let res = conditional("if-range", format!("W/{etag}"), Some("bytes=0-9")).await;
    assert_eq!(res.status(), 200, "a weak tag never matches If-Range");
    let res = conditional("if-match", "\"other\"".into(), None).await;
    assert_envelope(res, 412).await;
    let res = conditional("if-match", etag.clone(), None).await;
    assert_eq!(res.status(), 200);
    for bad in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 5, size + 9),
        "bytes=-0".to_string(),
    ] {
        let res = range(bad.clone()).await;
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes */{size}").as_str(),
            "{bad}"
        );
        assert_envelope(res, 416).await;
    }
    // A download cut at an offset and resumed from it reproduces the file.
    let cut = size / 3;
    let mut resumed = range(format!("bytes=0-{}", cut - 1))
        .await
        .bytes()
        .await
        .expect("body")
        .to_vec();
    resumed.extend(
        range(format!("bytes={cut}-"))
            .await
            .bytes()
            .await
            .expect("body")
            .to_vec(),
    );
    assert_eq!(
        hex::encode(Sha256::digest(&resumed)),
        status["sha256"].as_str().expect("sha")
    );
}

fn sign(
    export_id: &str,
    workflow_id: &str,
    format: &str,
    expires: i64,
    kid: &str,
    secret: &str,
) -> (String, String) {
    let key = wharf_shared::config::SigningKey {
        kid: kid.into(),
        secret: secret.to_string().into(),
    };
    let claims = wharf_shared::signing::LinkClaims {
        export_id: wharf_tests::parse(export_id),
        workflow_id: wharf_tests::parse(workflow_id),
        format,
        expires,
        path: None,
    };
    (kid.to_string(), wharf_shared::signing::sign(&key, &claims))
}

#[tokio::test]
async fn signed_links_resist_tampering_and_rotate() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    // k2 signs; k1 (the previous secret) still verifies.
    let app = spawn_app_with(
        pool,
        &[("WHARF_SIGNING_KEYS", "k2:the-new-secret,k1:test-secret-one")],
    )
    .await;
    let _worker = app.start_worker().await;
    let (p, wf, status) = completed(&app, "Signed", 10, "json").await;
    let id = status["exportId"].as_str().expect("id");
    let url = status["url"].as_str().expect("url").to_string();
    assert!(url.contains("kid=k2"), "{url}");
    assert_eq!(reqwest::get(&url).await.expect("sent").status(), 200);
    let later = chrono::Utc::now().timestamp() + 600;
    let file = |e: String, kid: &str, sig: &str| {
        app.url(&format!(
            "/v1/exports/{}/file?expires={e}&kid={kid}&sig={sig}",
            id
        ))
    };
    let other = uuid::Uuid::now_v7().to_string();
    let (kid, good) = sign(id, &wf, "json", later, "k1", "test-secret-one");
    assert_eq!(
        reqwest::get(file(later.to_string(), &kid, &good))
            .await
            .expect("sent")
            .status(),
        200,
        "rotated-out key still verifies"
    );
    let mut flipped = good.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).expect("hex");
    let cases = [
        file(later.to_string(), "k1", &flipped),
        file((later + 1).to_string(), "k1", &good),
        file(later.to_string(), "k2", &good),
        app.url(&format!(
            "/v1/exports/{other}/file?expires={later}&kid=k1&sig={good}"
        )),
        file(
            later.to_string(),
            "k1",
            &sign(id, &other, "json", later, "k1", "test-secret-one").1,
        ),
        file(
            later.to_string(),
            "k1",
            &sign(id, &wf, "csv", later, "k1", "test-secret-one").1,
        ),
        file(
            later.to_string(),
            "k0",
            &sign(id, &wf, "json", later, "k0", "removed-secret").1,
        ),
        file(
            (later - 1200).to_string(),
            "k1",
            &sign(id, &wf, "json", later - 1200, "k1", "test-secret-one").1,
        ),
        app.url(&format!("/v1/exports/{id}/file")),
        app.url(&format!(
            "/v1/exports/not-a-uuid/file?expires={later}&kid=k1&sig={good}"
        )),
        // The same values in another spelling: only the printed form verifies.
        file(format!("0{later}"), "k1", &good),
        file(format!("+{later}"), "k1", &good),
        file(later.to_string(), "k1", &good.to_uppercase()),
        app.url(&format!(
            "/v1/exports/{}/file?expires={later}&kid=k1&sig={good}",
            id.to_uppercase()
        )),
        app.url(&format!(
            "/v1/exports/{id}/file?kid=k1&expires={later}&sig={good}"
        )),
        app.url(&format!(
            "/v1/exports/{id}/file?expires={later}&kid=k1&sig={good}&x=1"
        )),
        // Validly signed, but further ahead than WHARF_LINK_TTL (1 h).
        file(
            (later + 86_400 * 365).to_string(),
            "k1",
            &sign(
                id,
                &wf,
                "json",
                later + 86_400 * 365,
                "k1",
                "test-secret-one",
            )
            .1,
        ),
    ];
    for (i, u) in cases.iter().enumerate() {
        let res = reqwest::get(u).await.expect("sent");
        let (code, _) = assert_envelope(res, 403).await;
        assert_eq!(code, "FORBIDDEN", "case {i}: {u}");
    }
    // The status URL is re-signed on every read.
    let again: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert!(again["urlExpiresAt"].is_string());
}

#[tokio::test]
async fn hostile_and_unicode_names_give_safe_headers() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let p = app.create_project("acme").await;
    for (name, check) in [("a\"b\r\nSet-Cookie: x", "ascii"), ("Ñandú 价格", "utf8")] {
        let wf = app
            .create_workflow(&p.key, name, json!([{"name": "n", "type": "integer"}]))
            .await;
        assert_eq!(
            app.post_run(&p.key, &wf, "application/x-ndjson", "{\"n\": 1}\n")
                .await
                .status(),
            201
        );
        let status = app.export_and_wait(&p.key, &wf, &json!({})).await;
        let res = reqwest::get(status["url"].as_str().expect("url"))
            .await
            .expect("sent");
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("set-cookie").is_none());
        let cd = res.headers()[CONTENT_DISPOSITION]
            .to_str()
            .expect("ascii header")
            .to_string();
        assert!(
            cd.starts_with("attachment; filename=\"") && !cd.contains(['\r', '\n']),
            "{cd}"
        );
        assert_eq!(cd.matches('"').count(), 2, "{cd}");
        if check == "utf8" {
            assert!(
                cd.contains("filename*=UTF-8''%C3%91and%C3%BA%20%E4%BB%B7%E6%A0%BC-"),
                "{cd}"
            );
        }
    }
}

#[tokio::test]
async fn not_ready_failed_and_expired_downloads_use_their_codes() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool.clone(), &[("WHARF_EXPORT_TTL", "1s")]).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "Short", json!([{"name": "n", "type": "integer"}]))
        .await;
    assert_eq!(
        app.post_run(&p.key, &wf, "application/x-ndjson", "{\"n\": 1}\n")
            .await
            .status(),
        201
    );
    // Not ready (no worker yet): 409 EXPORT_NOT_READY on the 302 route.
    let res = app.post_export(&p.key, &wf, &json!({})).await;
    let id = res.json::<Value>().await.expect("json")["exportId"]
        .as_str()
        .expect("id")
        .to_string();
    let (code, msg) = assert_envelope(
        app.get(&format!("/v1/exports/{id}/download"), &p.key).await,
        409,
    )
    .await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("EXPORT_NOT_READY", "Export is not yet completed")
    );
    // Cancelled: 409 EXPORT_CANCELLED.
    let res = app
        .post_export(&p.key, &wf, &json!({"format": "json"}))
        .await;
    let cancelled = res.json::<Value>().await.expect("json")["exportId"]
        .as_str()
        .expect("id")
        .to_string();
    app.post_json(
        &format!("/v1/exports/{cancelled}/cancel"),
        &p.key,
        &json!({}),
    )
    .await;
    let (code, _) = assert_envelope(
        app.get(&format!("/v1/exports/{cancelled}/download"), &p.key)
            .await,
        409,
    )
    .await;
    assert_eq!(code, "EXPORT_CANCELLED");
    let worker = app.start_worker().await;
    let done = app.wait_done(&p.key, &id).await;
    let url = done["url"].as_str().expect("url").to_string();
    drop(worker);
    let key = wharf_shared::repo::exports::get_any(&pool, wharf_tests::parse(&id))
        .await
        .expect("q")
        .expect("rec")
        .object_key
        .expect("key");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // Past expiresAt: EXPIRED at once, before the janitor runs, on every route.
    let s: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["status"], "EXPIRED");
    let ctx = wharf_worker::startup::context(&app.settings, pool.clone()).await;
    assert_eq!(wharf_worker::janitor::sweep(&ctx).await.expect("sweep"), 1);
    assert_eq!(
        wharf_worker::janitor::sweep(&ctx).await.expect("sweep"),
        0,
        "idempotent"
    );
    assert!(!app.object_keys().await.contains(&key), "object deleted");
    for path in [
        format!("/v1/exports/{id}/download"),
        format!("/v1/exports/{id}/download?mode=stream"),
        format!("/v4/workflows/{wf}/data/exports/{id}"),
    ] {
        let (code, _) = assert_envelope(app.get(&path, &p.key).await, 410).await;
        assert_eq!(code, "EXPORT_EXPIRED", "{path}");
    }
    let (code, _) = assert_envelope(reqwest::get(&url).await.expect("sent"), 410).await;
    assert_eq!(code, "EXPORT_EXPIRED");
    let res = app
        .client
        .get(app.url(&format!(
            "/projects/acme/export/download/exp_{}",
            wharf_tests::parse(&id).simple()
        )))
        .bearer_auth(&p.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 410);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["ok"], false);
    assert_eq!(body["data"], Value::Null);
    assert_eq!(body["error"]["code"], "export_expired");
    assert!(
        body["request_id"].is_string() && body["meta"]["generated_at"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn the_seed_routes_behave_as_documented() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(
            &p.key,
            "Kadoa",
            json!([{"name": "price", "type": "number"}, {"name": "t", "type": "string"}]),
        )
        .await;
    let body: String = (0..30)
        .map(|n| format!("{{\"price\": {n}, \"t\": \"r{n}\"}}\n"))
        .collect();
    let run: Value = app
        .post_run(&p.key, &wf, "application/x-ndjson", body)
        .await
        .json()
        .await
        .expect("json");
    let filters = urlencode(r#"[{"field":"price","op":"gte","value":10}]"#);
    let res = app.get(&format!("/v4/workflows/{wf}/data/export?format=json&filters={filters}&sortBy=price&order=desc&rowIds=10,12,13,30"), &p.key).await;
    assert_eq!(res.status(), 200);
    let k: Value = res.json().await.expect("json");
    assert_eq!(k["workflowId"], wf.as_str());
    assert_eq!(k["runId"], run["runId"]);
    assert_eq!(k["format"], "json");
    assert_eq!(k["rowCount"], 3);
    assert!(k["executedAt"].is_string() && k["expiresAt"].is_string());
    let file = reqwest::get(k["url"].as_str().expect("url"))
        .await
        .expect("sent");
    assert_eq!(file.status(), 200);
    let rows: Vec<Value> = file.json().await.expect("json");
    assert_eq!(
        rows,
        vec![
            json!({"price": 29.0, "t": "r29"}),
            json!({"price": 12.0, "t": "r12"}),
            json!({"price": 11.0, "t": "r11"})
        ]
    );
    // Kadoa download: the bytes as an attachment.
    let export_id = k["exportId"].as_str().expect("exportId");
    let res = app
        .get(
            &format!("/v4/workflows/{wf}/data/exports/{export_id}"),
            &p.key,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()[CONTENT_DISPOSITION]
            .to_str()
            .expect("cd")
            .starts_with("attachment;")
    );
    // Bad params 400, malformed ids 400, unknown ids 404.
    for bad in [
        format!("/v4/workflows/{wf}/data/export?filters=notjson"),
        format!("/v4/workflows/{wf}/data/export?rowIds=1,x"),
        format!("/v4/workflows/{wf}/data/export?format=xml"),
        format!("/v4/workflows/{wf}/data/export?bogus=1"),
        "/v4/workflows/not-a-uuid/data/export".to_string(),
        format!("/v4/workflows/{wf}/data/exports/nope"),
    ] {
        assert_envelope(app.get(&bad, &p.key).await, 400).await;
    }
    let unknown = uuid::Uuid::now_v7();
    assert_envelope(
        app.get(&format!("/v4/workflows/{unknown}/data/export"), &p.key)
            .await,
        404,
    )
    .await;
    assert_envelope(
        app.get(
            &format!("/v4/workflows/{wf}/data/export?runId={unknown}"),
            &p.key,
        )
        .await,
        404,
    )
    .await;
    assert_envelope(
        app.get(
            &format!("/v4/workflows/{wf}/data/exports/{unknown}"),
            &p.key,
        )
        .await,
        404,
    )
    .await;
    // Project-scoped download: bytes, echoed operation headers, its own envelope on errors.
    let res = app
        .client
        .get(app.url(&format!(
            "/projects/acme/export/download/exp_{}",
            wharf_tests::parse(export_id).simple()
        )))
        .bearer_auth(&p.key)
        .header("X-Operation-Key", "edit-profile-email")
        .header("X-Operation-Run-Id", "oprun_client_20260602_001")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-operation-key"], "edit-profile-email");
    assert_eq!(
        res.headers()["x-operation-run-id"],
        "oprun_client_20260602_001"
    );
    assert!(
        res.headers()[CONTENT_DISPOSITION]
            .to_str()
            .expect("cd")
            .starts_with("attachment;")
    );
    for path in [
        "/projects/acme/export/download/exp_123".to_string(),
        format!("/projects/other/export/download/{export_id}"),
    ] {
        let res = app
            .client
            .get(app.url(&path))
            .bearer_auth(&p.key)
            .header("X-Operation-Key", "k")
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["x-operation-key"], "k");
        let body: Value = res.json().await.expect("json");
        assert_eq!(
            (body["ok"].clone(), body["error"]["code"].clone()),
            (json!(false), json!("not_found")),
            "{body}"
        );
    }
    let res = app
        .client
        .get(app.url(&format!("/projects/acme/export/download/{export_id}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.expect("json")["error"]["code"],
        "unauthorized"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn presigned_urls_use_the_public_endpoint() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    // The service reaches S3 at 127.0.0.1; clients are told to use "localhost".
    let internal =
        std::env::var("WHARF_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into());
    let public = internal.replace("127.0.0.1", "localhost");
    let app = spawn_app_with(pool, &[("WHARF_S3_PUBLIC_ENDPOINT", &public)]).await;
    let _worker = app.start_worker().await;
    let (p, _, status) = completed(&app, "Public", 10, "csv").await;
    let object = app.export_file(&status).await;
    let id = status["exportId"].as_str().expect("id");
    let location = redirect_location(&app, &p.key, id).await;
    assert!(location.starts_with(&public), "{location}");
    assert_eq!(
        reqwest::get(&location)
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body")
            .to_vec(),
        object
    );
}
