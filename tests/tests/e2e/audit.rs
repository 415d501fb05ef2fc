//! The audit log: who did what, per project, newest first, from the real routes; written off
//! the request's path and never lost on a clean stop.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, assert_envelope, spawn_app_with};

/// The project's log once it holds `n` events (written within a second).
async fn log_of(app: &TestApp, key: &str, query: &str, n: usize) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..60 {
        let res = app.get(&format!("/v1/audit{query}"), key).await;
        assert_eq!(res.status(), 200);
        last = res.json().await.expect("json");
        let data = last["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log never held {n} events: {last}");
}

#[tokio::test]
async fn the_audit_log_names_who_did_what_and_every_download() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let (p, wf) = app.one_row_workflow().await;
    let prefix: String = sqlx::query_scalar("SELECT prefix FROM api_keys WHERE project_id = $1")
        .bind(wharf_tests::parse(&p.id))
        .fetch_one(&app.pool)
        .await
        .expect("the key's prefix");
    // Cancelled before any worker runs it.
    let cancelled = app.create_export(&p.key, &wf, &json!({})).await;
    let res = app
        .post_json(
            &format!("/v1/exports/{cancelled}/cancel"),
            &p.key,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let (reader_id, reader) = app.create_key(&p.key, &["read"]).await;
    let res = app
        .post_json(
            "/v1/webhooks",
            &p.key,
            &json!({"url": "http://127.0.0.1:9/h", "events": ["export.completed"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    // One export, downloaded three ways: a Range through the API, a 302, the signed link.
    let _worker = app.start_worker().await;
    let done = app
        .export_and_wait(&reader, &wf, &json!({"format": "csv"}))
        .await;
    let id = done["exportId"].as_str().expect("id").to_string();
    let res = app
        .request(
            reqwest::Method::GET,
            &format!("/v1/exports/{id}/download?mode=stream"),
            Some(&reader),
            wharf_tests::KeyHeader::ApiKey,
        )
        .header("range", "bytes=0-3")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.expect("body").len(), 4);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = no_redirects
        .get(app.url(&format!("/v1/exports/{id}/download")))
        .header("x-api-key", &reader)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 302);
    let link = done["url"].as_str().expect("signed link");
    let size = reqwest::get(link)
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("body")
        .len();

    let events = log_of(&app, &p.key, "", 8).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "export.downloaded",
            "export.downloaded",
            "export.downloaded",
            "export.created",
            "webhook.created",
            "key.created",
            "export.cancelled",
            "export.created",
        ],
        "newest first: {events:?}"
    );
    let (signed, redirect, ranged) = (&events[0], &events[1], &events[2]);
    assert_eq!(
        (signed["actor"].as_str(), signed["route"].as_str()),
        (Some("signed link"), Some("signed link"))
    );
    assert_eq!(signed["bytes"].as_u64(), Some(size as u64));
    assert_eq!(
        (redirect["route"].as_str(), redirect.get("bytes")),
        (Some("redirect"), None)
    );
    assert_eq!(ranged["route"], "stream");
    assert_eq!(
        (ranged["range"].as_str(), ranged["bytes"].as_u64()),
        (Some("bytes=0-3"), Some(4))
    );
    for e in [signed, redirect, ranged, &events[3]] {
        assert_eq!(e["exportId"], id.as_str(), "{e}");
        assert_eq!(e["client"], "127.0.0.1", "{e}");
    }
    let reader_prefix = &reader[..prefix.len()];
    assert_eq!(
        ranged["actor"], reader_prefix,
        "the reading key, by its prefix"
    );
    assert_eq!(events[3]["actor"], reader_prefix);
    assert_eq!(
        events[5]["actor"],
        prefix.as_str(),
        "the admin key made the key"
    );
    assert_eq!(events[5]["detail"]["keyId"], reader_id.as_str());
    assert_eq!(events[6]["exportId"], cancelled.as_str());
    assert!(
        !events.iter().any(|e| e.to_string().contains(&reader)),
        "no secret in the log"
    );

    // Filters, pages, NDJSON.
    let downloads = log_of(&app, &p.key, "?type=export.downloaded", 3).await;
    assert_eq!(downloads.len(), 3);
    let page: Value = app
        .get("/v1/audit?limit=5", &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(5));
    let cursor = page["nextCursor"].as_str().expect("a next page");
    let rest = log_of(&app, &p.key, &format!("?limit=5&cursor={cursor}"), 3).await;
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0]["id"], events[5]["id"]);
    let since = events[3]["at"].as_str().expect("at");
    let recent = log_of(
        &app,
        &p.key,
        &format!("?since={}", since.replace('+', "%2B")),
        4,
    )
    .await;
    assert_eq!(recent.len(), 4);
    let res = app.get("/v1/audit?format=ndjson", &p.key).await;
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a line"))
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[0]["id"], events[0]["id"]);

    // Held to the contract: admin only, this project only, bad input named.
    let (code, msg) = assert_envelope(app.get("/v1/audit", &reader).await, 403).await;
    assert_eq!(code, "FORBIDDEN", "{msg}");
    for (q, names) in [
        ("?type=export.eaten", "type"),
        ("?since=yesterday", "since"),
        ("?limit=0", "limit"),
        ("?cursor=nope", "cursor"),
        ("?format=xml", "format"),
    ] {
        let (code, msg) =
            assert_envelope(app.get(&format!("/v1/audit{q}"), &p.key).await, 400).await;
        assert_eq!(code, "INVALID_REQUEST");
        assert!(msg.starts_with(names), "{q}: {msg}");
    }
    let other = app.create_project("other").await;
    let theirs: Value = app
        .get("/v1/audit", &other.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        theirs["data"],
        json!([]),
        "another project's log is its own"
    );
}

/// Events still in the writer's buffer when the API is told to stop (SIGTERM) are written
/// before it exits.
#[tokio::test]
async fn a_clean_stop_writes_the_buffered_events() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[]).await;
    let p = app.create_project("stopping").await;
    let mut api = app.spawn_api_process(&[]).await;
    let res = app
        .client
        .post(format!("{}/v1/api-keys", api.address))
        .header("x-api-key", &p.key)
        .json(&json!({"scopes": ["read"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    assert!(api.terminate(20), "a clean exit: {}", api.log_text());
    let written: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE type = 'key.created'")
            .fetch_one(&app.pool)
            .await
            .expect("q");
    assert_eq!(written, 1, "the buffered event was written at stop");
}
