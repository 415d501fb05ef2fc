//! One contract, both queues (Redis via apalis, PostgreSQL via NOTIFY): a push wakes an idle
//! worker at once; pushes are only wake-ups, so duplicate or stray ones run nothing twice; and
//! PostgreSQL stays the record, so an export created while no worker listened still runs.

use std::time::Instant;

use serde_json::{Value, json};
use sqlx::PgPool;
use wharf_shared::queue::{self, JobMessage};
use wharf_tests::db::TestDb;
use wharf_tests::spawn_app_with;

async fn contract(pool: PgPool, redis_url: &str, name: &str) {
    let app = spawn_app_with(pool.clone(), &[("REDIS_URL", redis_url)]).await;
    let jobs = queue::from_settings(&app.settings, &pool).expect("queue");
    assert_eq!(jobs.kind(), name);
    let (p, wf) = app.one_row_workflow().await;

    // Created while no worker listens: the record keeps it, and a worker that starts runs it.
    let early = app.create_export(&p.key, &wf, &json!({})).await;
    let worker = app.start_worker().await;
    let done = app.wait_done(&p.key, &early).await;
    assert_eq!(done["status"], "COMPLETED", "{name}: {done}");
    worker.idle().await;

    // A push wakes the idle worker at once.
    let t = Instant::now();
    let done = app.export_and_wait(&p.key, &wf, &json!({})).await;
    assert_eq!(done["status"], "COMPLETED", "{name}: {done}");
    println!(
        "{name}: an idle worker's export, created → completed in {} ms",
        t.elapsed().as_millis()
    );

    // Duplicate and stray pushes are wake-ups only: nothing runs twice.
    let id = done["exportId"].as_str().expect("id").to_string();
    for job_id in [wharf_tests::parse(&id), uuid::Uuid::nil()] {
        let job = JobMessage {
            job_id,
            request_id: None,
        };
        jobs.push(job).await.expect("push");
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    worker.idle().await;
    let again: Value = app
        .get(&format!("/v1/exports/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["attempts"], 1, "{name}: {again}");
    assert_eq!(again["completedAt"], done["completedAt"], "{name}");
}

#[tokio::test]
async fn the_postgres_queue_keeps_the_contract() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    contract(pool, "", "postgres").await;
}

#[tokio::test]
async fn the_redis_queue_keeps_the_contract() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    contract(pool, &url, "redis").await;
}
