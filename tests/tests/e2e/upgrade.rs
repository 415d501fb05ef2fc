//! Upgrades: an installation the previous version migrated and wrote keeps its exports and its
//! webhook deliveries after this version's migrations (the job ledger moved the work's columns
//! out of `exports` and `webhook_deliveries`).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use wharf_shared::domain::schema::Field;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::ingest::{BodyFormat, IngestLimits, ingest_run};
use wharf_shared::repo::{self, projects, workflows};
use wharf_tests::db::TestDb;
use wharf_tests::receiver::Receiver;
use wharf_tests::spawn_app_with;

/// The job ledger's migration: the tests' database stops just before it.
const LEDGER: i64 = 20261204000002;

/// Writes an export row as the previous version did (its columns, its statuses), with its dock
/// status.
#[allow(clippy::too_many_arguments)]
async fn old_export(
    pool: &sqlx::PgPool,
    project: Uuid,
    workflow: Uuid,
    run: Uuid,
    status: &str,
    attempts: i32,
    idempotency: Option<(&str, &str)>,
    lapsed_lease: bool,
) -> Uuid {
    let id = Uuid::now_v7();
    let params = json!({"format": "csv", "compression": "none", "filters": [], "sortBy": "_id",
        "order": "asc", "rowIds": null, "columns": ["n"]});
    sqlx::query(
        "INSERT INTO exports (id, project_id, workflow_id, run_id, format, compression, params,
             status, attempts, max_attempts, lease_token, lease_expires_at, worker_id,
             idempotency_key, request_hash, request_id, started_at, enqueued_at)
         VALUES ($1, $2, $3, $4, 'csv', 'none', $5, $6, $7, 5,
             CASE WHEN $8 THEN gen_random_uuid() END,
             CASE WHEN $8 THEN now() - interval '1 minute' END,
             CASE WHEN $8 THEN 'killed-worker' END,
             $9, $10, 'req_old', CASE WHEN $8 THEN now() END, now() - interval '1 minute')",
    )
    .bind(id)
    .bind(project)
    .bind(workflow)
    .bind(run)
    .bind(sqlx::types::Json(params))
    .bind(status)
    .bind(attempts)
    .bind(lapsed_lease)
    .bind(idempotency.map(|(k, _)| k))
    .bind(idempotency.map(|(_, h)| h))
    .execute(pool)
    .await
    .expect("old export row");
    sqlx::query(
        "INSERT INTO dock_statuses (id, project_id, job_type, action, workflow_id, export_id)
         VALUES ($1, $2, 'EXPORT', 'EXPORT', $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(project)
    .bind(workflow)
    .bind(id)
    .execute(pool)
    .await
    .expect("old dock status");
    id
}

#[tokio::test]
async fn exports_written_before_the_job_ledger_survive_the_upgrade() {
    let db = TestDb::before(LEDGER).await;
    let pool = db.pool.clone();
    // What the previous version wrote, in tables this version did not change.
    let key = wharf_shared::auth::mint_key();
    let (project, _) = projects::create_with_key(&pool, "acme", "Acme", &key, &[Scope::Admin])
        .await
        .expect("project");
    let fields: Vec<Field> =
        serde_json::from_value(json!([{"name": "n", "type": "integer"}])).expect("fields");
    let wf = workflows::create(&pool, project.id, "W", &fields)
        .await
        .expect("workflow");
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from("n\n1\n2\n3\n"))]);
    let limits = IngestLimits {
        max_body: 1 << 20,
        max_row: 1 << 16,
        body_timeout: Duration::from_secs(10),
    };
    let run = ingest_run(
        &pool,
        &repo::IngestGate::default(),
        &wf,
        BodyFormat::Csv,
        body,
        limits,
    )
    .await
    .expect("run");
    // An export waiting (with the idempotency key its client will send again), and one a
    // worker was running when the old version was stopped (its lease lapsed since).
    let canonical = json!({});
    let hash = hex::encode(Sha256::digest(format!("{}\n{canonical}", wf.id).as_bytes()));
    let queued = old_export(
        &pool,
        project.id,
        wf.id,
        run.id,
        "QUEUED",
        0,
        Some(("nightly-1", &hash)),
        false,
    )
    .await;
    let interrupted = old_export(
        &pool,
        project.id,
        wf.id,
        run.id,
        "IN_PROGRESS",
        1,
        None,
        true,
    )
    .await;

    // One it had completed, its file in the store.
    let done_before = old_export(&pool, project.id, wf.id, run.id, "QUEUED", 1, None, false).await;
    let file = Bytes::from_static(b"n\n1\n2\n3\n");
    let object_key = format!("exports/{done_before}/attempt-1.csv");
    sqlx::query(
        "UPDATE exports SET status = 'COMPLETED', completed_at = now(), started_at = now(),
             expires_at = now() + interval '1 day', row_count = 3, rows_written = 3,
             rows_total = 3, size_bytes = $2, sha256 = $3, object_key = $4,
             content_type = 'text/csv; charset=utf-8', file_name = 'W.csv'
         WHERE id = $1",
    )
    .bind(done_before)
    .bind(file.len() as i64)
    .bind(hex::encode(Sha256::digest(&file)))
    .bind(&object_key)
    .execute(&pool)
    .await
    .expect("completed");

    // A webhook endpoint with a delivery still pending (tried twice, refused) and one
    // delivered, in the previous version's columns.
    let rx = Receiver::start(vec![]).await;
    let hook = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhooks (id, project_id, url, events, secret)
         VALUES ($1, $2, $3, ARRAY['export.completed'], 'whsec_upgrade')",
    )
    .bind(hook)
    .bind(project.id)
    .bind(&rx.url)
    .execute(&pool)
    .await
    .expect("old webhook");
    let pending_event = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, event_id, webhook_id, project_id, event_type,
             job_id, state, attempts, last_status, last_error, next_attempt_at, delivered_at)
         VALUES (gen_random_uuid(), $1, $2, $3, 'export.completed', $4, 'PENDING', 2, 503,
                 'the receiver answered 503', now(), NULL),
                (gen_random_uuid(), gen_random_uuid(), $2, $3, 'export.completed', $4,
                 'DELIVERED', 1, 200, NULL, now(), now())",
    )
    .bind(pending_event)
    .bind(hook)
    .bind(project.id)
    .bind(done_before)
    .execute(&pool)
    .await
    .expect("old deliveries");

    // This version starts: its API migrates the database forward.
    let app = spawn_app_with(pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let meta = wharf_shared::store::ObjectMeta {
        content_type: "text/csv; charset=utf-8".into(),
        content_disposition: "attachment; filename=\"W.csv\"".into(),
    };
    wharf_shared::store::write_bytes(&*app.store().await, &object_key, &meta, file.clone())
        .await
        .expect("the old file");
    let version: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("version");
    assert!(version >= LEDGER, "migrated to {version}");
    let jobs: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT kind, status, attempts FROM jobs ORDER BY kind, status")
            .fetch_all(&pool)
            .await
            .expect("jobs");
    let job = |k: &str, s: &str, n: i32| (k.to_string(), s.to_string(), n);
    assert_eq!(
        jobs,
        vec![
            job("export", "QUEUED", 0),
            job("export", "RUNNING", 1),
            job("export", "SUCCEEDED", 1),
            job("webhook", "QUEUED", 2),
            job("webhook", "SUCCEEDED", 1),
        ],
        "every export and every webhook delivery has its job, its attempts kept"
    );

    // Before any worker: both read as they were, the key answers with its export.
    let get = |id: Uuid| {
        let app = &app;
        let key = key.secret.clone();
        async move {
            app.get(&format!("/v1/exports/{id}"), &key)
                .await
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    assert_eq!(get(queued).await["status"], "QUEUED");
    let s = get(interrupted).await;
    assert_eq!(
        (s["status"].as_str(), s["attempts"].as_i64()),
        (Some("IN_PROGRESS"), Some(1))
    );
    let again = app
        .request(
            reqwest::Method::POST,
            &format!("/v1/workflows/{}/exports", wf.id),
            Some(&key.secret),
            wharf_tests::KeyHeader::ApiKey,
        )
        .header("idempotency-key", "nightly-1")
        .json(&canonical)
        .send()
        .await
        .expect("sent");
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["exportId"], queued.to_string(), "{body}");

    // A worker of this version: the waiting export runs, the interrupted one is taken back
    // from its lapsed lease and runs again (its second attempt).
    let _worker = app.start_worker().await;
    for (id, attempts) in [(done_before, 1), (queued, 1), (interrupted, 2)] {
        let done = app.wait_done(&key.secret, &id.to_string()).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["attempts"], attempts, "{done}");
        assert_eq!(done["rowCount"], 3);
        assert_eq!(app.export_file(&done).await, b"n\n1\n2\n3\n");
        // Its signed link and its download, as every completed export's.
        let url = done["url"].as_str().expect("signed link");
        let bytes = app
            .client
            .get(url)
            .send()
            .await
            .expect("sent")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&bytes[..], b"n\n1\n2\n3\n");
    }
    // The pending delivery is made (its third attempt), and so are the two new events.
    rx.wait_for(3, Duration::from_secs(30)).await;
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let body: Value = serde_json::from_slice(&rx.get(i).1).expect("event");
            body["id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert!(
        ids.contains(&format!("evt_{}", pending_event.simple())),
        "{ids:?}"
    );
    let mut recorded = None;
    for _ in 0..100 {
        recorded = sqlx::query_as::<_, (String, String, i32)>(
            "SELECT d.state, j.status, j.attempts FROM webhook_deliveries d
             JOIN jobs j ON j.id = d.id WHERE d.event_id = $1 AND d.state = 'DELIVERED'",
        )
        .bind(pending_event)
        .fetch_optional(&pool)
        .await
        .expect("delivery");
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        recorded,
        Some(("DELIVERED".into(), "SUCCEEDED".into(), 3)),
        "the old delivery's record"
    );
    let states: Vec<(String, String)> = sqlx::query_as(
        "SELECT e.status, j.status FROM exports e JOIN jobs j ON j.id = e.id ORDER BY e.id",
    )
    .fetch_all(&pool)
    .await
    .expect("states");
    assert_eq!(
        states,
        vec![("COMPLETED".to_string(), "SUCCEEDED".to_string()); 3]
    );
}
