//! Reads of runs on a streaming replica (`WHARF_READ_DATABASE_URL`): a real one, made by
//! `pg_basebackup -R` from a primary cluster of the test's own. A run is read there once the
//! replica has replayed its commit; a replica that lags (replay paused) is waited for
//! `WHARF_REPLICA_WAIT`, then the primary serves the read, and the export is right either way.

use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use wharf_shared::export::{Outcome, ReadConn};
use wharf_shared::metrics::ServerLabel;
use wharf_tests::cluster::PgCluster;
use wharf_tests::{TestApp, spawn_app_with};

fn reads(ctx: &wharf_shared::export::ExportContext, server: &'static str) -> u64 {
    ctx.metrics
        .exports
        .reads
        .get_or_create(&ServerLabel { server })
        .get()
}

async fn csv_rows(app: &TestApp, key: &str, id: &str) -> Vec<String> {
    let s: Value = app
        .get(&format!("/v1/exports/{id}"), key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["status"], "COMPLETED", "{s}");
    let bytes = app.export_file(&s).await;
    String::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn runs_are_read_on_the_replica_once_replayed_and_on_the_primary_while_it_lags() {
    let primary = PgCluster::start(&[]);
    let mut admin = sqlx::PgConnection::connect(&primary.url("postgres"))
        .await
        .expect("the primary");
    admin.execute("CREATE DATABASE wharf").await.expect("db");
    admin.close().await.ok();
    let pool = sqlx::PgPool::connect(&primary.url("wharf"))
        .await
        .expect("pool");
    let replica = PgCluster::replica_of(&primary);
    let app = spawn_app_with(
        pool.clone(),
        &[
            ("WHARF_READ_DATABASE_URL", &replica.url("wharf")),
            ("WHARF_REPLICA_WAIT", "2s"),
        ],
    )
    .await;
    let ctx = wharf_worker::startup::context(&app.settings, pool.clone()).await;
    assert!(ctx.replica.is_some());
    let mut slot = ReadConn::default();
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(&p.key, "Items", json!([{"name": "n", "type": "integer"}]))
        .await;
    let body: String = (0..1000).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let res = app
        .post_run(&p.key, &wf, "application/x-ndjson", body)
        .await;
    assert_eq!(res.status(), 201);
    // Caught up: the replica serves the read.
    let id = app
        .create_export(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    let outcome = wharf_shared::export::run(&ctx, &mut slot)
        .await
        .expect("run");
    assert!(
        matches!(outcome, Outcome::Completed { rows: 1000, .. }),
        "{outcome:?}"
    );
    assert_eq!((reads(&ctx, "replica"), reads(&ctx, "primary")), (1, 0));
    let rows = csv_rows(&app, &p.key, &id).await;
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[999], "999");
    // Replay paused: the next run is not on the replica; after the wait the primary serves it.
    let mut standby = sqlx::PgConnection::connect(&replica.url("wharf"))
        .await
        .expect("the replica");
    standby
        .execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause");
    let body: String = (0..500)
        .map(|n| format!("{{\"n\": {}}}\n", n + 5000))
        .collect();
    let res = app
        .post_run(&p.key, &wf, "application/x-ndjson", body)
        .await;
    assert_eq!(res.status(), 201);
    let id = app
        .create_export(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    let started = std::time::Instant::now();
    let outcome = wharf_shared::export::run(&ctx, &mut slot)
        .await
        .expect("run");
    assert!(
        matches!(outcome, Outcome::Completed { rows: 500, .. }),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "waited for the replica first"
    );
    assert_eq!((reads(&ctx, "replica"), reads(&ctx, "primary")), (1, 1));
    let rows = csv_rows(&app, &p.key, &id).await;
    assert_eq!(rows.len(), 500);
    assert_eq!(rows[0], "5000");
    // Replay resumed: the replica serves again (a dataset's plan and parts included).
    standby
        .execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume");
    let id = app
        .create_export(
            &p.key,
            &wf,
            &json!({"format": "csv", "maxRowsPerFile": 1000, "parallelism": 1}),
        )
        .await;
    assert!(matches!(
        wharf_shared::export::run(&ctx, &mut slot)
            .await
            .expect("plan"),
        Outcome::Planned { .. }
    ));
    let part = wharf_shared::export::run(&ctx, &mut slot)
        .await
        .expect("part");
    assert!(
        matches!(part, Outcome::Completed { rows: 500, .. }),
        "{part:?}"
    );
    assert_eq!(
        reads(&ctx, "replica"),
        3,
        "the plan and the part read the replica"
    );
    let s: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["rowCount"], 500);
    standby.close().await.ok();
    drop(app);
    pool.close().await;
}
