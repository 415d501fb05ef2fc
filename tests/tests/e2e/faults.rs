//! Fault injection with real processes and real services: every export ends COMPLETED with
//! the right rows and sha256 (or FAILED with a clear code), none twice, no orphan left.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use wharf_tests::db::TestDb;
use wharf_tests::{RedisServer, S3Server, TestApp, assert_envelope, spawn_app, spawn_app_with};

const FAST: [(&str, &str); 2] = [("WHARF_LEASE", "3s"), ("WHARF_REQUEUE_AFTER", "2s")];

async fn running(app: &TestApp, key: &str, id: &str) -> Value {
    app.poll_export(key, id, "a running export", |s| {
        s["status"] == "IN_PROGRESS" && s["progress"]["rowsWritten"].as_i64().unwrap_or(0) > 0
    })
    .await
}

/// No OPEN upload once the janitor has looked (orphans of dead attempts aborted).
async fn assert_no_open_uploads(app: &TestApp, pool: &PgPool) {
    let ctx = wharf_worker::startup::context(&app.settings, pool.clone()).await;
    wharf_worker::janitor::abort_orphans(&ctx, Duration::ZERO)
        .await
        .expect("janitor");
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM export_uploads WHERE state = 'OPEN'")
        .fetch_one(pool)
        .await
        .expect("q");
    assert_eq!(open, 0, "an upload was left open");
}

#[tokio::test]
async fn a_worker_killed_mid_export_is_replaced() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let s3 = S3Server::start().await;
    let app = spawn_app_with(pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let p = app.create_project("acme").await;
    let wf = app.wide_workflow(&p.key, 100_000).await;
    s3.pause();
    let mut a = app.spawn_worker_process_with(1, &FAST);
    let id = app
        .create_export(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    running(&app, &p.key, &id).await;
    a.signal("-KILL");
    assert!(a.wait_exit(5));
    let _b = app.spawn_worker_process_with(1, &FAST);
    s3.resume();
    let done = app.wait_done(&p.key, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["rowCount"], 100_000);
    assert_eq!(done["attempts"], 2, "the crash counts as an attempt");
    app.export_file(&done).await;
    assert_no_open_uploads(&app, &pool).await;
    assert_eq!(
        app.object_keys().await.len(),
        1,
        "only the completed attempt's object"
    );
}

#[tokio::test]
async fn sigterm_hands_the_export_over_without_waiting_for_the_lease() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let s3 = S3Server::start().await;
    let app = spawn_app_with(pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let p = app.create_project("acme").await;
    let wf = app.wide_workflow(&p.key, 100_000).await;
    s3.pause();
    // A 30 s lease: a takeover that waited for it would take far longer than this test allows.
    let env = [("WHARF_LEASE", "30s"), ("WHARF_SHUTDOWN_GRACE", "1s")];
    let mut a = app.spawn_worker_process_with(1, &env);
    let id = app
        .create_export(&p.key, &wf, &json!({"format": "ndjson"}))
        .await;
    running(&app, &p.key, &id).await;
    let _b = app.spawn_worker_process_with(1, &env);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    a.signal("-TERM");
    app.poll_export(&p.key, &id, "the second worker's claim", |s| {
        s["attempts"] == 2
    })
    .await;
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "taken over in {:?}",
        sent.elapsed()
    );
    assert!(a.wait_exit(10), "the stopping worker exits");
    assert!(
        a.log_text().contains("released to another worker"),
        "{}",
        a.log_text()
    );
    s3.resume();
    let done = app.wait_done(&p.key, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["rowCount"], 100_000);
    app.export_file(&done).await;
    assert_eq!(app.object_keys().await.len(), 1);
    assert_no_open_uploads(&app, &pool).await;
}

#[tokio::test]
async fn a_stale_worker_cannot_overwrite_a_completed_export() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let s3 = S3Server::start().await;
    let app = spawn_app_with(pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let p = app.create_project("acme").await;
    let wf = app.wide_workflow(&p.key, 60_000).await;
    s3.pause();
    let a = app.spawn_worker_process_with(1, &FAST);
    let id = app
        .create_export(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    running(&app, &p.key, &id).await;
    a.signal("-STOP");
    let _b = app.spawn_worker_process_with(1, &FAST);
    s3.resume();
    let done = app.wait_done(&p.key, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["attempts"], 2);
    let keys = app.object_keys().await;
    // The frozen worker wakes up with a lapsed lease: it must not complete or overwrite.
    a.signal("-CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    for field in [
        "status",
        "sha256",
        "sizeBytes",
        "rowCount",
        "attempts",
        "completedAt",
    ] {
        assert_eq!(after[field], done[field], "{field} changed");
    }
    app.export_file(&after).await;
    assert_eq!(
        app.object_keys().await,
        keys,
        "no object added by the stale worker"
    );
    assert_no_open_uploads(&app, &pool).await;
}

#[tokio::test]
async fn a_flushed_and_restarted_redis_loses_no_export() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let mut redis = RedisServer::start().await;
    let app = spawn_app_with(pool, &[("REDIS_URL", &redis.url)]).await;
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "W", json!([{"name": "n", "type": "integer"}]))
        .await;
    let body: String = (0..100).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    assert_eq!(
        app.post_run(&p.key, &wf, "application/x-ndjson", body)
            .await
            .status(),
        201
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_export(&p.key, &wf, &json!({})).await);
    }
    redis.flushall();
    redis.kill();
    // With Redis down, a create is still recorded and answered quickly: the 202 is a promise.
    let t = Instant::now();
    ids.push(
        app.create_export(&p.key, &wf, &json!({"format": "json"}))
            .await,
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "create took {:?}",
        t.elapsed()
    );
    let msg = app.readyz_down().await;
    assert!(msg.contains("redis"), "{msg}");
    redis.restart().await;
    let _worker = app.start_worker().await;
    for id in &ids {
        let done = app.wait_done(&p.key, id).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["rowCount"], 100);
        assert_eq!(done["attempts"], 1);
    }
}

#[tokio::test]
async fn terminated_postgres_connections_are_survived() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let _worker = app.start_worker().await;
    let p = app.create_project("acme").await;
    // Large enough to be caught running: a status poll may be answered from memory for up
    // to 100 ms (RUNNING_TTL), and 50,000 rows now export in ~130 ms.
    let wf = app.wide_workflow(&p.key, 200_000).await;
    let mut ids = Vec::new();
    for f in ["csv", "ndjson", "parquet", "json"] {
        ids.push(app.create_export(&p.key, &wf, &json!({"format": f})).await);
    }
    // Whichever of them is running (the first may be done before the last is created). On a
    // loaded machine all four may finish between two polls: then four more are asked for.
    let deadline = Instant::now() + Duration::from_secs(120);
    'caught: loop {
        let mut finished = 0;
        for id in &ids {
            let s: Value = app
                .get(&format!("/v1/exports/{id}"), &p.key)
                .await
                .json()
                .await
                .expect("json");
            if s["status"] == "IN_PROGRESS" && s["progress"]["rowsWritten"].as_i64() > Some(0) {
                break 'caught;
            }
            if s["status"] != "QUEUED" && s["status"] != "IN_PROGRESS" {
                finished += 1;
            }
        }
        assert!(Instant::now() < deadline, "no export was ever seen running");
        if finished == ids.len() {
            for f in ["csv", "ndjson", "parquet", "json"] {
                ids.push(app.create_export(&p.key, &wf, &json!({"format": f})).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&pool)
    .await
    .expect("terminate");
    assert!(!killed.is_empty());
    for id in &ids {
        let done = app.wait_done(&p.key, id).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["rowCount"], 200_000);
        app.export_file(&done).await;
    }
}

#[tokio::test]
async fn an_object_store_outage_is_retried_and_answered_with_503() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let mut s3 = S3Server::start().await;
    let app = spawn_app_with(pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let _worker = app.start_worker().await;
    let p = app.create_project("acme").await;
    let wf = app.wide_workflow(&p.key, 100_000).await;
    let first = app
        .export_and_wait(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    let id = app
        .create_export(&p.key, &wf, &json!({"format": "csv", "order": "desc"}))
        .await;
    app.poll_export(&p.key, &id, "a part uploaded", |s| {
        s["progress"]["bytesWritten"].as_i64().unwrap_or(0) > 6 << 20
    })
    .await;
    s3.kill();
    // Downloads fail fast with 503 while the store is down, and readiness says which.
    let t = Instant::now();
    let first_id = first["exportId"].as_str().expect("id");
    let (code, _) = assert_envelope(
        app.get(
            &format!("/v1/exports/{first_id}/download?mode=stream"),
            &p.key,
        )
        .await,
        503,
    )
    .await;
    assert_eq!(code, "SERVICE_UNAVAILABLE");
    assert!(t.elapsed() < Duration::from_secs(5));
    let msg = app.readyz_down().await;
    assert!(msg.contains("s3"), "{msg}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s3.restart().await;
    let done = app.wait_done(&p.key, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(done["attempts"].as_i64().unwrap_or(0) >= 2, "{done}");
    assert_eq!(done["rowCount"], 100_000);
    app.export_file(&done).await;
    assert_eq!(
        app.get(
            &format!("/v1/exports/{first_id}/download?mode=stream"),
            &p.key
        )
        .await
        .status(),
        200
    );
    assert_no_open_uploads(&app, &pool).await;
}

#[tokio::test]
async fn soak_three_projects_three_workers_one_keeps_dying() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let cap = 2;
    let env = [
        ("WHARF_LEASE", "3s"),
        ("WHARF_REQUEUE_AFTER", "2s"),
        ("WHARF_PROJECT_CONCURRENCY", "2"),
    ];
    let mut projects = Vec::new();
    for (i, slug) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let p = app.create_project(slug).await;
        let wf = app
            .create_workflow(
                &p.key,
                slug,
                json!([{"name": "n", "type": "integer"}, {"name": "s", "type": "string"}]),
            )
            .await;
        let rows = 200 * (i + 1);
        let body: String = (0..rows)
            .map(|n| format!("{{\"n\": {n}, \"s\": \"v{n}\"}}\n"))
            .collect();
        assert_eq!(
            app.post_run(&p.key, &wf, "application/x-ndjson", body)
                .await
                .status(),
            201
        );
        projects.push((p, wf, rows));
    }
    let formats = ["csv", "json", "ndjson", "parquet"];
    let mut ids = Vec::new();
    for i in 0..300 {
        let (p, wf, rows) = &projects[i % 3];
        ids.push((
            p.key.clone(),
            app.create_export(&p.key, wf, &json!({"format": formats[i % 4]}))
                .await,
            *rows,
        ));
    }
    let started = Instant::now();
    let _steady = [
        app.spawn_worker_process_with(2, &env),
        app.spawn_worker_process_with(2, &env),
    ];
    let mut flaky = app.spawn_worker_process_with(2, &env);
    // Samples the most exports any project has running at once.
    let sampler_pool = pool.clone();
    let done_sampling = tokio_util::sync::CancellationToken::new();
    let stop_sampling = done_sampling.clone();
    let sampler = tokio::spawn(async move {
        let mut max = 0i64;
        while !stop_sampling.is_cancelled() {
            let counts: Vec<i64> = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE status = 'RUNNING' AND lease_expires_at > now() GROUP BY project_id",
            )
            .fetch_all(&sampler_pool)
            .await
            .unwrap_or_default();
            max = max.max(counts.into_iter().max().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max
    });
    let mut kills = 0;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM exports WHERE status IN ('QUEUED', 'IN_PROGRESS')",
        )
        .fetch_one(&pool)
        .await
        .expect("q");
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "soak did not finish: {open} open"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        flaky.signal("-KILL");
        flaky.wait_exit(5);
        kills += 1;
        flaky = app.spawn_worker_process_with(2, &env);
    }
    let elapsed = started.elapsed();
    done_sampling.cancel();
    let max_running = sampler.await.expect("sampler");
    assert!(
        max_running <= cap,
        "a project ran {max_running} exports at once (cap {cap})"
    );
    assert!(max_running >= 1);
    let mut attempts = 0;
    for (key, id, rows) in &ids {
        let done: Value = app
            .get(&format!("/v1/exports/{id}"), key)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["rowCount"].as_u64(), Some(*rows as u64));
        attempts += done["attempts"].as_i64().unwrap_or(0);
    }
    // One object per export: no attempt completed twice; a killed attempt's object is found
    // and deleted by the janitor.
    assert_no_open_uploads(&app, &pool).await;
    assert_eq!(app.object_keys().await.len(), 300);
    println!(
        "soak: 300 exports, 3 projects, 3 workers, {kills} kills, {elapsed:?}, {attempts} attempts, max {max_running} running per project"
    );
    assert_no_open_uploads(&app, &pool).await;
}

#[tokio::test]
async fn a_postgres_outage_is_a_quick_503_and_heals_without_restart() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let proxy = wharf_tests::TcpProxy::start("127.0.0.1:5432").await;
    let options = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(proxy.port);
    let via_proxy = wharf_shared::repo::no_reaper(sqlx::postgres::PgPoolOptions::new())
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options);
    let app = wharf_tests::spawn_app_on(via_proxy, &[]).await;
    let p = app.create_project("acme").await;
    assert_eq!(app.get("/v1/workflows", &p.key).await.status(), 200);
    proxy.cut();
    let t = Instant::now();
    let (code, msg) = assert_envelope(app.get("/v1/workflows", &p.key).await, 503).await;
    assert_eq!(code, "SERVICE_UNAVAILABLE");
    assert!(
        !msg.contains("5432") && !msg.contains("sqlx"),
        "no internals: {msg}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        t.elapsed()
    );
    let msg = app.readyz_down().await;
    assert!(msg.contains("postgres") && !msg.contains("redis"), "{msg}");
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.get("/v1/workflows", &p.key).await;
        if res.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "did not heal: {}", res.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    // The app's pool goes through the proxy and nobody closes it: cut every proxied connection
    // (the API's key-change listener holds one for the app's life) so the test's database can
    // be dropped when the test ends.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// PostgreSQL at its connection limit (a cluster of the test's own with a small
/// `max_connections`, filled by idle connections): every new connection is refused with SQLSTATE
/// 53300 ("sorry, too many clients already"), which is a service out of resources, not a bad
/// request. Exports that meet it while it lasts are retried with backoff, none FAILED; once
/// connections free up all of them COMPLETE, the retries counted in their attempts.
#[tokio::test]
async fn postgres_at_its_connection_limit_delays_exports_and_fails_none() {
    use sqlx::{Connection, Executor};
    let cluster = wharf_tests::cluster::PgCluster::start(&[
        ("max_connections", "30"),
        ("superuser_reserved_connections", "0"),
    ]);
    let mut admin = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .expect("the cluster");
    admin.execute("CREATE DATABASE wharf").await.expect("db");
    admin.close().await.ok();
    let pool = wharf_shared::repo::no_reaper(sqlx::postgres::PgPoolOptions::new())
        .max_connections(8)
        .min_connections(8)
        .connect(&cluster.url("wharf"))
        .await
        .expect("pool");
    let app = spawn_app(pool.clone()).await;
    let _worker = app.start_worker().await;
    let (p, wf) = app.one_row_workflow().await;
    // The pool back at its 8 connections (the ingest closed the one it lent to its COPY; the
    // pool reopens to its minimum), so the API needs no new one while the server is full.
    for _ in 0..100 {
        if pool.size() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool.size(), 8);

    let mut fillers = Vec::new();
    let refusal = loop {
        match sqlx::PgConnection::connect(&cluster.url("postgres")).await {
            Ok(c) => fillers.push(c),
            Err(e) => break e,
        }
        assert!(fillers.len() < 40, "the limit never came");
    };
    let code = refusal
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.to_string()));
    assert_eq!(code.as_deref(), Some("53300"), "{refusal}");

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(app.create_export(&p.key, &wf, &json!({})).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let s: Value = app
            .get(&format!("/v1/exports/{id}"), &p.key)
            .await
            .json()
            .await
            .expect("json");
        assert_ne!(s["status"], "FAILED", "failed at the limit: {s}");
        assert_ne!(
            s["status"], "COMPLETED",
            "no connection, yet completed: {s}"
        );
    }
    drop(fillers);
    let mut attempts = Vec::new();
    for id in &ids {
        let done = app.wait_done(&p.key, id).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        attempts.push(done["attempts"].as_i64().unwrap_or(0));
    }
    assert!(
        attempts.iter().all(|&a| a > 1),
        "each met the limit and was retried: {attempts:?}"
    );
    drop(app);
    pool.close().await;
}
