use reqwest::Method;
use serde_json::json;
use wharf_tests::db::TestDb;
use wharf_tests::{ADMIN_TOKEN, KeyHeader, assert_envelope, spawn_app, spawn_app_with};

const BOTH: [KeyHeader; 2] = [KeyHeader::ApiKey, KeyHeader::Bearer];

#[tokio::test]
async fn the_auth_matrix_holds_for_both_header_forms() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let a = app.create_project("acme").await;
    let b = app.create_project("globex").await;
    let wf_b = app
        .create_workflow(&b.key, "B's", json!([{"name": "x", "type": "string"}]))
        .await;
    let (_, read_key) = app.create_key(&a.key, &["read"]).await;
    let (revoked_id, revoked_key) = app.create_key(&a.key, &["read", "write"]).await;
    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{revoked_id}"),
            Some(&a.key),
            KeyHeader::ApiKey,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 204);

    for how in BOTH {
        let send = |method: Method, path: String, key: Option<String>| {
            let rb = app.request(method, &path, key.as_deref(), how);
            async move {
                rb.json(&json!({"name": "n", "schema": [{"name": "x", "type": "string"}]}))
                    .send()
                    .await
                    .expect("sent")
            }
        };
        // A valid key works in this header form.
        let ok = send(Method::GET, "/v1/workflows".into(), Some(a.key.clone())).await;
        assert_eq!(ok.status(), 200, "{how:?}");
        // No key, an unknown key, a revoked key: 401.
        let (code, _) =
            assert_envelope(send(Method::GET, "/v1/workflows".into(), None).await, 401).await;
        assert_eq!(code, "UNAUTHORIZED");
        let (code, _) = assert_envelope(
            send(Method::GET, "/v1/workflows".into(), Some("wh_0000".into())).await,
            401,
        )
        .await;
        assert_eq!(code, "UNAUTHORIZED");
        let (code, _) = assert_envelope(
            send(
                Method::GET,
                "/v1/workflows".into(),
                Some(revoked_key.clone()),
            )
            .await,
            401,
        )
        .await;
        assert_eq!(code, "UNAUTHORIZED", "revoked key, {how:?}");
        // A known key without the scope: 403.
        let (code, msg) = assert_envelope(
            send(Method::POST, "/v1/workflows".into(), Some(read_key.clone())).await,
            403,
        )
        .await;
        assert_eq!(code, "FORBIDDEN");
        assert!(msg.contains("write"), "{msg}");
        let (code, _) = assert_envelope(
            send(Method::POST, "/v1/api-keys".into(), Some(read_key.clone())).await,
            403,
        )
        .await;
        assert_eq!(code, "FORBIDDEN");
        // Another project's resource: 404, never 403.
        for path in [
            format!("/v1/workflows/{wf_b}"),
            format!("/v1/workflows/{wf_b}/runs"),
        ] {
            let (code, _) =
                assert_envelope(send(Method::GET, path, Some(a.key.clone())).await, 404).await;
            assert_eq!(code, "NOT_FOUND");
        }
        let (code, _) = assert_envelope(
            send(
                Method::GET,
                format!("/v1/workflows/{wf_b}"),
                Some(read_key.clone()),
            )
            .await,
            404,
        )
        .await;
        assert_eq!(code, "NOT_FOUND");
    }
    // Ingesting into another project's workflow is 404 too, and stores nothing.
    let res = app
        .post_run(&a.key, &wf_b, "application/x-ndjson", "{\"x\":\"a\"}\n")
        .await;
    assert_envelope(res, 404).await;
    assert!(app.stored_rows(&b.id, &wf_b).await.is_empty());
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request_and_is_project_scoped() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let a = app.create_project("acme").await;
    let b = app.create_project("globex").await;
    let (b_key_id, b_key) = app.create_key(&b.key, &["read"]).await;
    // A cannot revoke B's key: 404, and the key keeps working.
    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{b_key_id}"),
            Some(&a.key),
            KeyHeader::Bearer,
        )
        .send()
        .await
        .expect("sent");
    assert_envelope(res, 404).await;
    assert_eq!(app.get("/v1/workflows", &b_key).await.status(), 200);
    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{b_key_id}"),
            Some(&b.key),
            KeyHeader::Bearer,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 204);
    assert_envelope(app.get("/v1/workflows", &b_key).await, 401).await;
    // Revoking twice: the key is no longer live.
    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{b_key_id}"),
            Some(&b.key),
            KeyHeader::Bearer,
        )
        .send()
        .await
        .expect("sent");
    assert_envelope(res, 404).await;
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let a = app.create_project("acme").await;
    let (_, key) = app.create_key(&a.key, &["read", "write"]).await;
    let stored: Vec<(Vec<u8>, String)> = sqlx::query_as("SELECT key_hash, prefix FROM api_keys")
        .fetch_all(&pool)
        .await
        .expect("query");
    assert_eq!(stored.len(), 2);
    for (hash, prefix) in &stored {
        assert_eq!(hash.len(), 32);
        assert!(
            !hash
                .windows(key.len().min(hash.len()))
                .any(|w| w == key.as_bytes())
        );
        assert!(prefix.len() < 12, "only a short prefix is kept");
    }
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, '') FROM api_keys t")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert!(
        !dump.contains(&key) && !dump.contains(&a.key),
        "a secret is in the table"
    );
}

#[tokio::test]
async fn project_bootstrap_needs_the_admin_token() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let body = json!({"slug": "acme", "name": "Acme"});
    let res = app
        .client
        .post(app.url("/v1/projects"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(assert_envelope(res, 401).await.0, "UNAUTHORIZED");
    let res = app
        .client
        .post(app.url("/v1/projects"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .expect("sent");
    let (code, message) = assert_envelope(res, 401).await;
    assert_eq!(code, "UNAUTHORIZED");
    assert!(
        message.contains("admin token") && !message.contains("API key"),
        "{message}"
    );
    let res = app
        .client
        .post(app.url("/v1/projects"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    let created: serde_json::Value = res.json().await.expect("json");
    assert_eq!(created["slug"], "acme");
    assert_eq!(created["name"], "Acme");
    assert_eq!(
        created["apiKey"]["scopes"],
        json!(["read", "write", "admin"])
    );
    assert!(
        created["apiKey"]["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("wh_"))
    );
    // The same slug again: 409.
    let res = app
        .client
        .post(app.url("/v1/projects"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let (code, msg) = assert_envelope(res, 409).await;
    assert_eq!(code, "CONFLICT");
    assert!(msg.contains("slug"), "{msg}");
    let res = app
        .client
        .post(app.url("/v1/projects"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"slug": "Bad Slug", "name": "x"}))
        .send()
        .await
        .expect("sent");
    assert!(assert_envelope(res, 400).await.1.contains("slug"));
}

#[tokio::test]
async fn project_bootstrap_is_disabled_without_an_admin_token() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool, &[("WHARF_ADMIN_TOKEN", "")]).await;
    let res = app
        .client
        .post(app.url("/v1/projects"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"slug": "a", "name": "A"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(assert_envelope(res, 404).await.0, "NOT_FOUND");
}

#[tokio::test]
async fn key_scopes_are_validated() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let a = app.create_project("acme").await;
    for (body, needle) in [
        (json!({"scopes": []}), "scopes"),
        (json!({"scopes": ["root"]}), "scopes[0]"),
        (json!({"scopes": "read"}), "scopes"),
        (json!({}), "scopes"),
    ] {
        let (code, msg) =
            assert_envelope(app.post_json("/v1/api-keys", &a.key, &body).await, 400).await;
        assert_eq!(code, "INVALID_REQUEST");
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (_, write_key) = app.create_key(&a.key, &["write"]).await;
    let wf = app
        .create_workflow(&write_key, "w", json!([{"name": "x", "type": "string"}]))
        .await;
    // write does not imply read: scopes are independent, only admin implies the others.
    assert_envelope(
        app.get(&format!("/v1/workflows/{wf}"), &write_key).await,
        403,
    )
    .await;
}

/// Keys are cached per API process (WHARF_KEY_CACHE_TTL), and a revoke reaches every process
/// through PostgreSQL at once, not when the cache entry ages out.
#[tokio::test]
async fn a_revoked_key_stops_working_on_every_api_process_at_once() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool.clone(), &[("WHARF_KEY_CACHE_TTL", "60s")]).await;
    let other = app.second_api().await;
    let p = app.create_project("acme").await;
    let get = |key: String| {
        let client = app.client.clone();
        let url = format!("{other}/v1/workflows");
        async move {
            client
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    };
    // The cache answers: a key revoked behind Wharf's back still works on a process that
    // verified it (so the revoke route's notification is what makes revocation immediate).
    let (quiet_id, quiet) = app.create_key(&p.key, &["read"]).await;
    assert_eq!(get(quiet.clone()).await, 200);
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid")
        .bind(&quiet_id)
        .execute(&pool)
        .await
        .expect("revoked quietly");
    assert_eq!(get(quiet).await, 200, "a verified key is cached");

    let (id, key) = app.create_key(&p.key, &["read"]).await;
    assert_eq!(get(key.clone()).await, 200);
    let res = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            Some(&p.key),
            KeyHeader::ApiKey,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 204);
    let revoked = std::time::Instant::now();
    let mut status = get(key.clone()).await;
    while status == 200 && revoked.elapsed() < std::time::Duration::from_secs(2) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        status = get(key.clone()).await;
    }
    println!(
        "revocation reached the other API process after {:?}",
        revoked.elapsed()
    );
    assert_eq!(status, 401, "the revoked key still works elsewhere");
    assert!(revoked.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(get(key).await, 401, "and stays refused");
}
