use reqwest::Method;
use serde_json::json;
use wharf_tests::db::TestDb;
use wharf_tests::{KeyHeader, assert_envelope, spawn_app};

#[tokio::test]
async fn every_error_is_in_the_envelope_with_the_request_id() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    // Unknown route, wrong method, malformed JSON, wrong content type: all enveloped.
    let res = app.get("/v1/nothing-here", &p.key).await;
    assert_eq!(assert_envelope(res, 404).await.0, "NOT_FOUND");
    let res = app
        .request(
            Method::PUT,
            "/v1/workflows",
            Some(&p.key),
            KeyHeader::ApiKey,
        )
        .send()
        .await
        .expect("sent");
    let status = res.status().as_u16();
    assert!(status == 404 || status == 405, "{status}");
    assert_envelope(res, status).await;
    let res = app
        .request(
            Method::POST,
            "/v1/workflows",
            Some(&p.key),
            KeyHeader::ApiKey,
        )
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    let (code, msg) = assert_envelope(res, 400).await;
    assert_eq!(code, "INVALID_REQUEST");
    assert!(msg.contains("JSON"), "{msg}");
    let res = app
        .request(
            Method::POST,
            "/v1/workflows",
            Some(&p.key),
            KeyHeader::ApiKey,
        )
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(assert_envelope(res, 415).await.0, "UNSUPPORTED_MEDIA_TYPE");
    // An oversize JSON body on a JSON route: 413.
    let huge = json!({"name": "x".repeat(2 << 20), "schema": []});
    let res = app.post_json("/v1/workflows", &p.key, &huge).await;
    assert_eq!(assert_envelope(res, 413).await.0, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn request_ids_are_echoed_or_minted() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let res = app
        .client
        .get(app.url("/v1/workflows"))
        .header("x-request-id", "my-trace-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("my-trace-42")
    );
    let (code, _) = assert_envelope(res, 401).await;
    assert_eq!(code, "UNAUTHORIZED");
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let minted = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(minted.starts_with("req_") && minted.len() > 10, "{minted}");
    // An id that could break a header or a log line is replaced, not echoed.
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a b\tc")
        .send()
        .await
        .expect("sent");
    let id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(id.starts_with("req_"), "{id}");
}
