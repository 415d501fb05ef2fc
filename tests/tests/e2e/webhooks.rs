//! Webhooks with a real HTTP receiver in the test: signed, at least once (retried with backoff,
//! surviving a killed worker), and never sent into private or metadata addresses unless allowed.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::receiver::{Receiver, verify};
use wharf_tests::{TestApp, spawn_app_with};

async fn register(app: &TestApp, key: &str, url: &str, events: Value) -> (u16, Value) {
    let res = app
        .post_json("/v1/webhooks", key, &json!({"url": url, "events": events}))
        .await;
    let code = res.status().as_u16();
    (code, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn deliveries_are_signed_and_retried_until_the_receiver_takes_them() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let rx = Receiver::start(vec![Some(500), Some(503), Some(200)]).await;
    let (p, wf) = app.one_row_workflow().await;
    let (code, hook) = register(
        &app,
        &p.key,
        &rx.url,
        json!(["export.completed", "export.failed"]),
    )
    .await;
    assert_eq!(code, 201, "{hook}");
    let secret = hook["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"));
    let (_, listed) = json_get(&app, &p.key, "/v1/webhooks").await;
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown once"
    );

    let _worker = app.start_worker().await;
    let done = app.export_and_wait(&p.key, &wf, &json!({})).await;
    rx.wait_for(3, Duration::from_secs(20)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (headers, body) = rx.get(i);
        assert!(
            verify(&secret, &headers["wharf-signature"], &body),
            "attempt {i}: the signature verifies"
        );
        assert!(!verify("whsec_other", &headers["wharf-signature"], &body));
        let event: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(event["type"], "export.completed");
        assert_eq!(event["data"]["exportId"], done["exportId"]);
        assert_eq!(event["data"]["status"], "COMPLETED");
        assert_eq!(event["data"]["sha256"], done["sha256"]);
        assert_eq!(
            headers["wharf-event-id"],
            event["id"].as_str().unwrap_or_default()
        );
        ids.push(event["id"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        ids[0].starts_with("evt_") && ids.iter().all(|i| *i == ids[0]),
        "one event, three attempts: {ids:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, d) = json_get(
        &app,
        &p.key,
        &format!(
            "/v1/webhooks/{}/deliveries",
            hook["id"].as_str().unwrap_or_default()
        ),
    )
    .await;
    assert_eq!(d["data"][0]["state"], "DELIVERED", "{d}");
    assert_eq!(d["data"][0]["attempts"], 3);
    assert_eq!(d["data"][0]["lastStatusCode"], 200);
    assert_eq!(rx.count(), 3, "delivered once it was taken");
}

async fn json_get(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let res = app.get(path, key).await;
    let code = res.status().as_u16();
    (code, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn urls_on_private_or_metadata_addresses_are_refused() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[]).await;
    let p = app.create_project("acme").await;
    let events = json!(["export.completed"]);
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/",
        "http://[::1]/",
        "http://localhost:8080/",
    ] {
        let (code, body) = register(&app, &p.key, url, events.clone()).await;
        assert_eq!(code, 400, "{url}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("url"),
            "{body}"
        );
    }
    for (url, ev) in [
        ("ftp://example.com/", json!(["export.completed"])),
        ("http://u:p@example.com/", json!(["export.completed"])),
        ("http://example.com/", json!(["export.started"])),
        ("http://example.com/", json!([])),
    ] {
        let (code, _) = register(&app, &p.key, url, ev).await;
        assert_eq!(code, 400, "{url}");
    }
    let (_, read) = app.create_key(&p.key, &["read", "write"]).await;
    let (code, _) = register(&app, &read, "http://example.com/", events.clone()).await;
    assert_eq!(code, 403);

    // Even with private addresses allowed, metadata and link-local ones are not.
    let open = spawn_app_with(db.pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let (code, _) = register(
        &open,
        &p.key,
        "http://169.254.169.254/latest/meta-data",
        events.clone(),
    )
    .await;
    assert_eq!(code, 400);
    let (code, hook) = register(&open, &p.key, "http://127.0.0.1:9/x", events).await;
    assert_eq!(code, 201, "{hook}");
    let id = hook["id"].as_str().unwrap_or_default();
    assert_eq!(
        open.request(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            Some(&p.key),
            wharf_tests::KeyHeader::ApiKey
        )
        .send()
        .await
        .expect("sent")
        .status(),
        204
    );
    let (code, _) = json_get(&open, &p.key, &format!("/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(code, 404, "removed");
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_still_delivers() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    // The first attempt is held open, unanswered, until its worker dies.
    let rx = Receiver::start(vec![None]).await;
    let (p, wf) = app.one_row_workflow().await;
    let (code, _) = register(&app, &p.key, &rx.url, json!(["export.completed"])).await;
    assert_eq!(code, 201);
    let env = [
        ("WHARF_LEASE", "3s"),
        ("WHARF_REQUEUE_AFTER", "2s"),
        ("WHARF_WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    let mut first = app.spawn_worker_process_with(1, &env);
    let id = app.create_export(&p.key, &wf, &json!({})).await;
    assert_eq!(app.wait_done(&p.key, &id).await["status"], "COMPLETED");
    rx.wait_for(1, Duration::from_secs(20)).await;
    first.signal("-KILL");
    assert!(first.wait_exit(5));
    let _second = app.spawn_worker_process_with(1, &env);
    rx.wait_for(2, Duration::from_secs(30)).await;
    let (a, b) = (rx.get(0), rx.get(1));
    assert_eq!(
        a.0["wharf-event-id"], b.0["wharf-event-id"],
        "the same event, again"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state: String = sqlx::query_scalar("SELECT state FROM webhook_deliveries")
            .fetch_one(&app.pool)
            .await
            .expect("q");
        if state == "DELIVERED" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 21: one tenant's 13 dead receivers with 40 events each (520 deliveries that each hang
/// for the 10 s timeout) once held every delivery slot and delayed another project's webhook by
/// 170 s. Now each endpoint has one delivery in flight and a project at most a quarter of the
/// slots: the other project's event arrives within 2 s of its export completing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_receivers_of_one_project_delay_no_other_project() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let dead = Receiver::start(vec![None; 10_000]).await;
    let (a, wf_a) = app.one_row_workflow_in("noisy").await;
    for i in 0..13 {
        let url = format!("{}?endpoint={i}", dead.url);
        let (code, _) = register(&app, &a.key, &url, json!(["export.completed"])).await;
        assert_eq!(code, 201);
    }
    let _worker = app.start_worker().await;
    let body = json!({});
    let ids: Vec<String> =
        futures::future::join_all((0..40).map(|_| app.create_export(&a.key, &wf_a, &body))).await;
    for id in &ids {
        assert_eq!(app.wait_done(&a.key, id).await["status"], "COMPLETED");
    }
    // The dead receivers are holding their deliveries open now.
    dead.wait_for(8, Duration::from_secs(10)).await;
    let in_flight: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE busy_until > now()")
            .fetch_one(&app.pool)
            .await
            .expect("q");
    assert!(
        in_flight <= 8,
        "{in_flight} endpoints of one project in flight"
    );

    let rx = Receiver::start(vec![]).await;
    let (b, wf_b) = app.one_row_workflow_in("quiet").await;
    let (code, _) = register(&app, &b.key, &rx.url, json!(["export.completed"])).await;
    assert_eq!(code, 201);
    let done = app.export_and_wait(&b.key, &wf_b, &json!({})).await;
    let completed = std::time::Instant::now();
    rx.wait_for(1, Duration::from_secs(2)).await;
    let (_, body) = rx.get(0);
    let event: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(event["data"]["exportId"], done["exportId"]);
    eprintln!(
        "the other project's webhook arrived {} ms after its export completed",
        completed.elapsed().as_millis()
    );
    // One receiver at a time per endpoint: no endpoint of A got a second request.
    let per_endpoint = dead.count();
    assert!(
        per_endpoint <= 13,
        "{per_endpoint} requests to 13 endpoints"
    );
}

/// An endpoint that fails three times in a row is paused as a whole: its other queued events
/// are not tried one after another, each costing a slot.
#[tokio::test]
async fn an_endpoint_failing_repeatedly_is_backed_off_as_a_whole() {
    use wharf_shared::repo::webhooks;
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let rx = Receiver::start(vec![]).await;
    let (p, _) = app.one_row_workflow().await;
    let (code, hook) = register(&app, &p.key, &rx.url, json!(["export.completed"])).await;
    assert_eq!(code, 201);
    let hook_id = wharf_tests::parse(hook["id"].as_str().expect("id"));
    sqlx::query(
        "WITH job AS (
             INSERT INTO jobs (id, kind, project_id, max_attempts, due_at)
             SELECT gen_random_uuid(), 'webhook', $2, 1000, now() FROM generate_series(1, 5)
             RETURNING id)
         INSERT INTO webhook_deliveries (id, event_id, webhook_id, project_id, event_type, job_id)
         SELECT id, gen_random_uuid(), $1, $2, 'export.completed', gen_random_uuid() FROM job",
    )
    .bind(hook_id)
    .bind(wharf_tests::parse(&p.id))
    .execute(&app.pool)
    .await
    .expect("deliveries");
    for n in 1..=3 {
        let claimed = webhooks::claim_due(&app.pool, "test", 10, 8, 30.0)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "one delivery per endpoint at a time");
        let again = webhooks::claim_due(&app.pool, "test", 10, 8, 30.0)
            .await
            .expect("claim");
        assert!(again.is_empty(), "the endpoint is busy");
        let failure = webhooks::Failure {
            status: Some(500),
            error: "the receiver answered 500",
            retry_secs: 0.0,
            dead: false,
        };
        assert!(
            webhooks::failed(&app.pool, &claimed[0], &failure)
                .await
                .expect("failed")
        );
        let paused: bool = sqlx::query_scalar(
            "SELECT paused_until IS NOT NULL AND paused_until > now() FROM webhooks WHERE id = $1",
        )
        .bind(hook_id)
        .fetch_one(&app.pool)
        .await
        .expect("q");
        assert_eq!(paused, n >= 3, "after failure {n}");
    }
    let claimed = webhooks::claim_due(&app.pool, "test", 10, 8, 30.0)
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "paused: no delivery of it is tried");
    // A success ends the pause and the count.
    sqlx::query("UPDATE webhooks SET paused_until = now() WHERE id = $1")
        .bind(hook_id)
        .execute(&app.pool)
        .await
        .expect("q");
    let claimed = webhooks::claim_due(&app.pool, "test", 10, 8, 30.0)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    // Outcomes are fenced on the claim's lease: a stale one records nothing.
    let mut stale = claimed[0].clone();
    stale.lease_token = Some(uuid::Uuid::new_v4());
    assert!(
        !webhooks::delivered(&app.pool, &stale, 200)
            .await
            .expect("delivered")
    );
    assert!(
        webhooks::delivered(&app.pool, &claimed[0], 200)
            .await
            .expect("delivered")
    );
    let (job, state): (String, String) = sqlx::query_as(
        "SELECT j.status, d.state FROM jobs j JOIN webhook_deliveries d ON d.id = j.id
         WHERE j.id = $1 AND j.kind = 'webhook'",
    )
    .bind(claimed[0].id)
    .fetch_one(&app.pool)
    .await
    .expect("q");
    assert_eq!((job.as_str(), state.as_str()), ("SUCCEEDED", "DELIVERED"));
    let failures: i32 = sqlx::query_scalar("SELECT failures FROM webhooks WHERE id = $1")
        .bind(hook_id)
        .fetch_one(&app.pool)
        .await
        .expect("q");
    assert_eq!(failures, 0);
}

/// Python with the `standardwebhooks` library: `WHARF_TEST_PYTHON` (scripts/test makes a
/// virtualenv of the test tools in its cache), else `python3` if it has it.
fn python() -> String {
    std::env::var("WHARF_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the Standard Webhooks library, unchanged, verifies what the receiver got.
fn standardwebhooks_verifies(secret: &str, got: &wharf_tests::receiver::Got) -> Result<(), String> {
    let (headers, body) = got;
    let script = "import json,sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        a = json.loads(sys.stdin.read())\n\
        Webhook(a['secret']).verify(a['body'], a['headers'])\n";
    let input = json!({
        "secret": secret,
        "body": String::from_utf8_lossy(body),
        "headers": headers,
    });
    let mut child = std::process::Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; scripts/test makes WHARF_TEST_PYTHON", python()));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(input.to_string().as_bytes())
            .expect("to python");
    }
    let out = child.wait_with_output().expect("python ran");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// Every delivery carries the Standard Webhooks headers, which the `standardwebhooks` library
/// verifies unchanged; the event's data is the export's whole status (its links included, the
/// signed one downloading the file with no key); a test event is answered with the receiver's
/// status; a delivery can be sent again.
#[tokio::test]
async fn standard_webhooks_verify_and_deliveries_can_be_tested_and_retried() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let rx = Receiver::start(vec![Some(200), Some(418)]).await;
    let (p, wf) = app.one_row_workflow().await;
    let (code, hook) = register(&app, &p.key, &rx.url, json!(["export.completed"])).await;
    assert_eq!(code, 201, "{hook}");
    let secret = hook["secret"].as_str().expect("secret").to_string();
    let hook_id = hook["id"].as_str().expect("id").to_string();

    // A test event: sent at once, the receiver's answer returned; then one it refuses.
    let test_path = format!("/v1/webhooks/{hook_id}/test");
    let empty = json!({});
    let res = app.post_json(&test_path, &p.key, &empty).await;
    assert_eq!(res.status(), 200);
    let sent: Value = res.json().await.expect("json");
    assert_eq!(
        (sent["delivered"].as_bool(), sent["statusCode"].as_u64()),
        (Some(true), Some(200)),
        "{sent}"
    );
    let ping = rx.get(0);
    assert_eq!(
        serde_json::from_slice::<Value>(&ping.1).expect("event")["type"],
        "ping"
    );
    assert_eq!(
        ping.0["webhook-id"],
        sent["eventId"].as_str().unwrap_or_default()
    );
    standardwebhooks_verifies(&secret, &ping).expect("the library verifies the ping");
    assert!(
        standardwebhooks_verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &ping).is_err(),
        "another secret does not verify"
    );
    let sent: Value = app
        .post_json(&test_path, &p.key, &empty)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (sent["delivered"].as_bool(), sent["statusCode"].as_u64()),
        (Some(false), Some(418)),
        "{sent}"
    );
    let (code, listed) =
        json_get(&app, &p.key, &format!("/v1/webhooks/{hook_id}/deliveries")).await;
    assert_eq!(
        (code, listed["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "tests are not deliveries"
    );

    // A real delivery: verified by the library, its data the export's status with its links.
    let _worker = app.start_worker().await;
    let export_id = app.create_export(&p.key, &wf, &json!({})).await;
    assert_eq!(
        app.wait_done(&p.key, &export_id).await["status"],
        "COMPLETED"
    );
    rx.wait_for(3, Duration::from_secs(20)).await;
    let got = rx.get(2);
    standardwebhooks_verifies(&secret, &got).expect("the library verifies the delivery");
    let event: Value = serde_json::from_slice(&got.1).expect("event");
    let data = &event["data"];
    assert_eq!(data["exportId"], export_id.as_str());
    assert_eq!(data["status"], "COMPLETED");
    assert_eq!(
        data["statusUrl"],
        app.url(&format!("/v1/exports/{export_id}")),
        "{data}"
    );
    assert_eq!(
        data["downloadUrl"],
        app.url(&format!("/v1/exports/{export_id}/download"))
    );
    let link = data["url"].as_str().expect("a signed link in the event");
    let file = app.client.get(link).send().await.expect("sent");
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.bytes().await.expect("bytes").len() as i64,
        data["sizeBytes"].as_i64().unwrap_or(-1)
    );

    // Sent again on request: the same event, a new attempt.
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = json_get(&app, &p.key, &format!("/v1/webhooks/{hook_id}/deliveries"))
            .await
            .1;
        if listed["data"][0]["state"] == "DELIVERED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["data"][0]["state"], "DELIVERED", "{listed}");
    let delivery = listed["data"][0]["id"]
        .as_str()
        .expect("delivery id")
        .to_string();
    let retry = format!("/v1/webhooks/{hook_id}/deliveries/{delivery}/retry");
    let res = app.post_json(&retry, &p.key, &json!({})).await;
    assert_eq!(res.status(), 202);
    rx.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(
        rx.get(3).0["webhook-id"],
        got.0["webhook-id"],
        "the same event again"
    );
    let missing = format!(
        "/v1/webhooks/{hook_id}/deliveries/{}/retry",
        uuid::Uuid::now_v7()
    );
    assert_eq!(
        app.post_json(&missing, &p.key, &json!({})).await.status(),
        404
    );
    let other = app.create_project("other").await;
    assert_eq!(
        app.post_json(&retry, &other.key, &json!({})).await.status(),
        404,
        "another project's"
    );
}
