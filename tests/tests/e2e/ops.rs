use serde_json::Value;
use wharf_tests::db::TestDb;
use wharf_tests::{assert_envelope, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness_check_the_real_services() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let res = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    let body: Value = res.json().await.expect("json");
    // The queue is checked when it is a service of its own (Redis); in PostgreSQL it is the
    // database's check.
    let mut want = serde_json::json!({"postgres": "ok"});
    if app.settings.redis_url.is_some() {
        want["redis"] = "ok".into();
    }
    let store = match app.settings.store {
        wharf_shared::config::StoreKind::S3 => "s3",
        wharf_shared::config::StoreKind::Dir(_) => "dir",
    };
    want[store] = "ok".into();
    assert_eq!(body["checks"], want, "{body}");
}

#[tokio::test]
async fn readiness_names_the_service_that_is_down() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    // Nothing listens on these ports.
    let app = spawn_app_with(
        pool,
        &[
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("WHARF_TEST_UNUSED", ""),
        ],
    )
    .await;
    let res = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    let (code, msg) = assert_envelope(res, 503).await;
    assert_eq!(code, "SERVICE_UNAVAILABLE");
    assert!(
        msg.contains("redis") && !msg.contains("postgres") && !msg.contains("s3"),
        "{msg}"
    );
}

async fn served_document(app: &wharf_tests::TestApp) -> Value {
    let res = app.client.get(app.url("/openapi.json")).send().await;
    res.expect("sent").json().await.expect("json")
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let doc = served_document(&app).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/projects", "post"),
        ("/v1/api-keys", "post"),
        ("/v1/api-keys/{keyId}", "delete"),
        ("/v1/workflows", "post"),
        ("/v1/workflows", "get"),
        ("/v1/workflows/{workflowId}", "get"),
        ("/v1/workflows/{workflowId}/runs", "post"),
        ("/v1/workflows/{workflowId}/runs", "get"),
        ("/v1/workflows/{workflowId}/exports", "post"),
        ("/v1/workflows/{workflowId}/exports", "get"),
        ("/v1/exports/{exportId}", "get"),
        ("/v1/exports/{exportId}/cancel", "post"),
        ("/v1/dock-status/{dockStatusId}", "get"),
        ("/v1/exports/{exportId}/download", "get"),
        ("/v1/exports/{exportId}/file", "get"),
        ("/v4/workflows/{workflowId}/data/export", "get"),
        ("/v4/workflows/{workflowId}/data/exports/{exportId}", "get"),
        ("/projects/{project}/export/download/{exportId}", "get"),
        ("/ops", "get"),
        ("/v1/imports", "post"),
        ("/v1/imports/{importId}", "get"),
        ("/api/public/workflows/{workflowId}/export", "post"),
        ("/api/public/dock-status/{dockStatusId}", "get"),
        ("/api/public/uploadfile", "post"),
        ("/api/public/workflows/import", "post"),
        ("/api/public/workflows/{workflowId}/import", "post"),
        ("/projects/{project}/export", "post"),
        ("/projects/{project}/exports", "get"),
        ("/projects/{project}/exports/{exportId}", "get"),
        ("/v4/workflows", "get"),
        ("/v4/workflows/{workflowId}", "get"),
        ("/v4/workflows/{workflowId}/data", "get"),
        ("/v1/exports/{exportId}/download", "head"),
        ("/v1/exports/{exportId}/file", "head"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
        ("/v1/webhooks/{webhookId}/test", "post"),
        (
            "/v1/webhooks/{webhookId}/deliveries/{deliveryId}/retry",
            "post",
        ),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    // Every operation has its own id (a generated client names its methods by them).
    let mut ids: Vec<String> = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(!id.is_empty(), "{method} {path}: no operationId");
            assert!(
                !ids.contains(&id),
                "{method} {path}: operationId {id} twice"
            );
            ids.push(id);
        }
    }
    assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("wharf_exports{status=\"queued\"} 0"),
        "{metrics}"
    );
}

/// The repository carries the reference it serves: `docs/openapi.json` is the document
/// `/openapi.json` answers (regenerate it with `WHARF_WRITE_OPENAPI=1` on this test), and
/// `/docs` renders every operation of it as a page for people.
#[tokio::test]
async fn the_repository_carries_the_served_reference_and_docs_renders_every_route() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let served = served_document(&app).await;
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var("WHARF_WRITE_OPENAPI").is_ok_and(|v| v == "1") {
        let text = serde_json::to_string_pretty(&served).expect("json");
        std::fs::write(&file, text + "\n").expect("docs/openapi.json written");
    }
    let carried: Value = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    assert!(
        carried == served,
        "docs/openapi.json differs from the served document: regenerate it with \
         WHARF_WRITE_OPENAPI=1 cargo test --test e2e the_repository_carries"
    );
    let res = app.client.get(app.url("/docs")).send().await.expect("sent");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let page = res.text().await.expect("text");
    let paths = served["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let escaped = path.replace('&', "&amp;");
        assert!(
            page.contains(&format!("<code>{escaped}</code>")),
            "{path} on /docs"
        );
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                page.contains(&format!(
                    "<section id=\"{id}\"><h3><span class=\"m\">{}</span>",
                    method.to_uppercase()
                )),
                "{method} {path} ({id}) on /docs"
            );
        }
    }
    assert!(page.contains("href=\"/openapi.json\""));
}
