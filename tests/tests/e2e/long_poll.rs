//! Status pollers: `?wait=N` long polls answered as the export finishes, `queuePosition` while
//! queued and `etaSeconds` while running.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{S3Server, spawn_app, spawn_app_with};

async fn status(app: &wharf_tests::TestApp, key: &str, path: &str) -> (u16, Value) {
    let res = app.get(path, key).await;
    let code = res.status().as_u16();
    (code, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_long_poll_answers_when_the_export_finishes_and_many_waiters_cost_little() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let (p, wf) = app.one_row_workflow().await;
    // No worker yet: three exports wait, in order.
    let ids = [
        app.create_export(&p.key, &wf, &json!({})).await,
        app.create_export(&p.key, &wf, &json!({"format": "json"}))
            .await,
        app.create_export(&p.key, &wf, &json!({"format": "ndjson"}))
            .await,
    ];
    for (i, id) in ids.iter().enumerate() {
        let (_, s) = status(&app, &p.key, &format!("/v1/exports/{id}")).await;
        assert_eq!(s["status"], "QUEUED");
        assert_eq!(s["queuePosition"], i, "{s}");
        let dock = wharf_shared::repo::exports::get_any(&app.pool, wharf_tests::parse(id))
            .await
            .expect("query")
            .expect("export")
            .dock_status_id;
        let (_, d) = status(&app, &p.key, &format!("/v1/dock-status/{dock}")).await;
        assert_eq!(d["progress"]["queuePosition"], i, "{d}");
    }
    for bad in ["0", "61", "soon"] {
        let (code, body) =
            status(&app, &p.key, &format!("/v1/exports/{}?wait={bad}", ids[0])).await;
        assert_eq!(code, 400, "wait={bad}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("wait")
        );
    }

    // 1,000 requests wait, 500 (a project's most) on the last export and 500 on another
    // project's; none gets an answer before it finishes, and all get it promptly after (each
    // wakes from the process's one listener and reads once).
    let (q, wf_q) = app.one_row_workflow_in("second").await;
    let other = app.create_export(&q.key, &wf_q, &json!({})).await;
    let waiters: Vec<_> = (0..1000)
        .map(|i| {
            let (id, key) = if i % 2 == 0 {
                (&ids[2], &p.key)
            } else {
                (&other, &q.key)
            };
            let (client, url, key) = (
                app.client.clone(),
                app.url(&format!("/v1/exports/{id}?wait=30")),
                key.clone(),
            );
            tokio::spawn(async move {
                let res = client
                    .get(url)
                    .header("x-api-key", key)
                    .send()
                    .await
                    .expect("sent");
                let body: Value = res.json().await.expect("json");
                (Instant::now(), body)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "nobody answered early"
    );
    let _worker = app.start_worker().await;
    let done = app.wait_done(&p.key, &ids[2]).await;
    assert_eq!(app.wait_done(&q.key, &other).await["status"], "COMPLETED");
    let seen_done = Instant::now();
    assert_eq!(done["status"], "COMPLETED");
    let mut latest = Duration::ZERO;
    for w in waiters {
        let (at, body) = w.await.expect("joined");
        assert_eq!(body["status"], "COMPLETED", "{body}");
        latest = latest.max(at.saturating_duration_since(seen_done));
    }
    println!(
        "1,000 long polls answered at most {} ms after a poller saw COMPLETED",
        latest.as_millis()
    );
    assert!(latest < Duration::from_secs(5), "{latest:?}");
}

#[tokio::test]
async fn a_long_poll_returns_within_100_ms_of_completion_or_unchanged_after_its_wait() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let (p, wf) = app.one_row_workflow().await;
    let id = app.create_export(&p.key, &wf, &json!({})).await;
    // Nothing happens for the whole minute: the unchanged status, after about that long.
    let t = Instant::now();
    let (code, s) = status(&app, &p.key, &format!("/v1/exports/{id}?wait=60")).await;
    assert_eq!(code, 200);
    assert_eq!(s["status"], "QUEUED");
    assert!(
        t.elapsed() >= Duration::from_secs(60) && t.elapsed() < Duration::from_secs(63),
        "{:?}",
        t.elapsed()
    );

    // A poller waiting when the worker completes it hears within milliseconds of completedAt.
    let poll = {
        let (client, url, key) = (
            app.client.clone(),
            app.url(&format!("/v1/exports/{id}?wait=60")),
            p.key.clone(),
        );
        tokio::spawn(async move {
            let body: Value = client
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            (chrono::Utc::now(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _worker = app.start_worker().await;
    let (heard_at, body) = poll.await.expect("joined");
    assert_eq!(body["status"], "COMPLETED", "{body}");
    let completed: chrono::DateTime<chrono::Utc> = body["completedAt"]
        .as_str()
        .expect("completedAt")
        .parse()
        .expect("time");
    let lag = (heard_at - completed).num_milliseconds();
    println!("long poll answered {lag} ms after completedAt");
    assert!(lag < 1000, "{lag} ms");
    // A finished export answers at once, whatever the wait.
    let t = Instant::now();
    let (_, s) = status(&app, &p.key, &format!("/v1/exports/{id}?wait=60")).await;
    assert_eq!(s["status"], "COMPLETED");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(
        s.get("queuePosition").is_none() && s.get("etaSeconds").is_none(),
        "{s}"
    );
}

#[tokio::test]
async fn a_running_export_has_an_eta_from_the_recent_pace_of_its_format() {
    let db = TestDb::new().await;
    let s3 = S3Server::start().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let _worker = app.start_worker().await;
    let (p, wf) = app.one_row_workflow().await;
    let first = app.export_and_wait(&p.key, &wf, &json!({})).await;
    assert_eq!(first["status"], "COMPLETED");
    assert!(first.get("etaSeconds").is_none());
    // The store stalls the next one: it runs with its row count known.
    s3.pause();
    let id = app.create_export(&p.key, &wf, &json!({})).await;
    let running = app
        .poll_export(&p.key, &id, "a running export with its total", |s| {
            s["status"] == "IN_PROGRESS" && s["progress"]["rowsTotal"] == 1
        })
        .await;
    let eta = running["etaSeconds"]
        .as_f64()
        .expect("etaSeconds while running");
    assert!(eta >= 0.0, "{running}");
    assert_eq!(running["progress"]["etaSeconds"], running["etaSeconds"]);
    s3.resume();
    assert_eq!(app.wait_done(&p.key, &id).await["status"], "COMPLETED");
}

#[tokio::test]
async fn a_finished_export_polled_from_memory_still_shows_every_change_and_no_other_tenant() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _worker = app.start_worker().await;
    let (p, wf) = app.one_row_workflow().await;
    let done = app.export_and_wait(&p.key, &wf, &json!({})).await;
    let id = done["exportId"].as_str().expect("id").to_string();
    // Read (and so remembered) twice; another project's key still gets 404.
    for _ in 0..2 {
        let (code, s) = status(&app, &p.key, &format!("/v1/exports/{id}")).await;
        assert_eq!((code, s["status"].as_str()), (200, Some("COMPLETED")));
    }
    let q = app.create_project("other").await;
    let (code, _) = status(&app, &q.key, &format!("/v1/exports/{id}")).await;
    assert_eq!(code, 404);
    // Retention ends it behind the API's back: the status change is heard, the next poll shows
    // it, and downloads answer 410.
    sqlx::query("UPDATE exports SET status = 'EXPIRED', expires_at = now() WHERE id = $1")
        .bind(wharf_tests::parse(&id))
        .execute(&app.pool)
        .await
        .expect("updated");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, s) = status(&app, &p.key, &format!("/v1/exports/{id}")).await;
        if s["status"] == "EXPIRED" {
            break;
        }
        assert!(Instant::now() < deadline, "still {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res = app
        .get(&format!("/v1/exports/{id}/download?mode=stream"), &p.key)
        .await;
    assert_eq!(res.status(), 410);
}

/// Polls of running exports are answered from memory for a moment (RUNNING_TTL), and still:
/// another tenant gets 404, a cancel here shows at once, and a final status reached elsewhere
/// (another process, a worker) shows as soon as its notification arrives, not a TTL later.
#[tokio::test]
async fn a_running_export_polled_from_memory_still_shows_its_end_at_once_and_no_other_tenant() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let (p, wf) = app.one_row_workflow().await;
    let (q, _) = app.one_row_workflow_in("other").await;
    let id = app.create_export(&p.key, &wf, &json!({})).await;
    let (_, s) = status(&app, &p.key, &format!("/v1/exports/{id}")).await;
    assert_eq!(s["status"], "QUEUED");
    assert_eq!(s["queuePosition"], 0);
    let (code, _) = status(&app, &q.key, &format!("/v1/exports/{id}")).await;
    assert_eq!(code, 404, "another tenant, answered from memory or not");
    let res = app
        .request(
            reqwest::Method::POST,
            &format!("/v1/exports/{id}/cancel"),
            Some(&p.key),
            wharf_tests::KeyHeader::ApiKey,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 202);
    let (_, s) = status(&app, &p.key, &format!("/v1/exports/{id}")).await;
    assert_eq!(s["status"], "CANCELLED", "a cancel here is seen at once");

    // Cancelled behind this process's back: its notification evicts the memory. The proof is
    // a look within RUNNING_TTL of the read that filled it (retried if the machine was slower).
    let mut proven = false;
    for _ in 0..5 {
        let other = app.create_export(&p.key, &wf, &json!({})).await;
        let filled = Instant::now();
        let (_, s) = status(&app, &p.key, &format!("/v1/exports/{other}")).await;
        assert_eq!(s["status"], "QUEUED");
        wharf_shared::repo::exports::cancel(
            &app.pool,
            wharf_tests::parse(&p.id),
            wharf_tests::parse(&other),
        )
        .await
        .expect("cancel");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (_, s) = status(&app, &p.key, &format!("/v1/exports/{other}")).await;
        if filled.elapsed() < Duration::from_millis(95) {
            assert_eq!(
                s["status"], "CANCELLED",
                "seen before the memory's 100 ms ran out"
            );
            proven = true;
            break;
        }
    }
    assert!(proven, "never looked within 100 ms of filling the memory");
}
