//! Guessing is throttled (issue 21): wrong credentials per client address (`WHARF_AUTH_FAILURES`,
//! answered 429 before any lookup), live keys per project, long polls per project.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{ADMIN_TOKEN, TestApp, assert_envelope, spawn_app, spawn_app_with};

/// `GET /ops` with HTTP Basic `admin:password`; its status.
async fn ops_with(app: &TestApp, password: &str) -> u16 {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"));
    let res = app
        .client
        .get(app.url("/ops"))
        .header("authorization", format!("Basic {basic}"))
        .send()
        .await
        .expect("sent");
    res.status().as_u16()
}

/// `POST /v1/projects` with `token` as the admin token; its status.
async fn create_project_with(app: &TestApp, token: &str) -> u16 {
    let res = app
        .client
        .post(app.url("/v1/projects"))
        .bearer_auth(token)
        .json(&json!({"slug": "x", "name": "X"}))
        .send()
        .await
        .expect("sent");
    res.status().as_u16()
}

#[tokio::test]
async fn wrong_credentials_from_one_address_are_throttled_before_any_lookup() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_AUTH_FAILURES", "5/min")]).await;
    let p = app.create_project("guess").await;
    for i in 0..5 {
        let res = app.get("/v1/workflows", &format!("wh_guess{i:040}")).await;
        assert_eq!(res.status(), 401, "failure {i} is answered as before");
    }
    // The budget is spent: the next wrong key, a right key, a wrong admin token and a wrong
    // /ops password from this address are all 429 with Retry-After, without a lookup.
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let res = app.get("/v1/workflows", "wh_guess-again").await;
        assert_eq!(res.status(), 429);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "throttled answers are cheap"
    );
    let res = app.get("/v1/workflows", &p.key).await;
    let retry: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let (code, message) = assert_envelope(res, 429).await;
    assert_eq!(code, "RATE_LIMITED");
    assert!(message.contains("WHARF_AUTH_FAILURES"), "{message}");
    assert_eq!(
        create_project_with(&app, "not-the-admin-token-not-the-admin-token").await,
        429
    );
    assert_eq!(ops_with(&app, "wrong").await, 429);
}

#[tokio::test]
async fn wrong_admin_tokens_and_ops_passwords_count_as_failures() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_AUTH_FAILURES", "3/min")]).await;
    for _ in 0..2 {
        assert_eq!(ops_with(&app, "wrong").await, 401);
    }
    // A browser's first visit (no credentials) is no failure.
    let res = app.client.get(app.url("/ops")).send().await.expect("sent");
    assert_eq!(res.status(), 401);
    assert_eq!(create_project_with(&app, "wrong-admin-token").await, 401);
    assert_eq!(
        create_project_with(&app, ADMIN_TOKEN).await,
        429,
        "three failures spent the budget"
    );
}

#[tokio::test]
async fn a_project_holds_at_most_1000_live_keys() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let p = app.create_project("keys").await;
    // 998 more live keys (and revoked ones, which do not count), straight into the table.
    sqlx::query(
        "INSERT INTO api_keys (id, project_id, key_hash, prefix, scopes, revoked_at)
         SELECT gen_random_uuid(), $1, sha256(convert_to('k' || g, 'UTF8')), 'wh_x', '{read}',
                CASE WHEN g > 998 THEN now() END
         FROM generate_series(1, 1100) g",
    )
    .bind(wharf_tests::parse(&p.id))
    .execute(&db.pool)
    .await
    .expect("insert keys");
    app.create_key(&p.key, &["read"]).await;
    let res = app
        .post_json("/v1/api-keys", &p.key, &json!({"scopes": ["read"]}))
        .await;
    let (code, message) = assert_envelope(res, 409).await;
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("1000 live API keys"), "{message}");
    // Revoking one makes room again.
    let listed: Value = app
        .get("/v1/api-keys?limit=200", &p.key)
        .await
        .json()
        .await
        .expect("json");
    let victim = listed["data"]
        .as_array()
        .and_then(|keys| {
            keys.iter()
                .find(|k| k["revokedAt"].is_null() && k["prefix"] == "wh_x")
        })
        .and_then(|k| k["id"].as_str())
        .expect("a live key to revoke")
        .to_string();
    let res = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{victim}"),
            Some(&p.key),
            wharf_tests::KeyHeader::ApiKey,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 204);
    app.create_key(&p.key, &["read"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_holds_at_most_500_long_polls() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let (p, wf) = app.one_row_workflow().await;
    // No worker: the export stays QUEUED and every poll waits its whole time.
    let id = app.create_export(&p.key, &wf, &json!({})).await;
    let client = reqwest::Client::new();
    let url = app.url(&format!("/v1/exports/{id}?wait=5"));
    let polls: Vec<_> = (0..501)
        .map(|_| {
            let req = client.get(&url).header("x-api-key", &p.key).send();
            tokio::spawn(async move {
                let res = req.await.expect("sent");
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    // Another project's poll is not affected while the 500 wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (q, wf_q) = app.one_row_workflow_in("other").await;
    let other = app.create_export(&q.key, &wf_q, &json!({})).await;
    let res = app
        .get(&format!("/v1/exports/{other}?wait=1"), &q.key)
        .await;
    assert_eq!(res.status(), 200);
    let mut answered = std::collections::BTreeMap::new();
    let mut refusal = Value::Null;
    for poll in polls {
        let (status, body) = poll.await.expect("joined");
        *answered.entry(status).or_insert(0) += 1;
        if status == 429 {
            refusal = body;
        }
    }
    assert_eq!(
        answered,
        [(200, 500), (429, 1)].into_iter().collect(),
        "500 waited, the 501st was refused"
    );
    assert_eq!(refusal["error"]["code"], "RATE_LIMITED");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("long polls")),
        "{refusal}"
    );
}
