//! The fair claim (`wharf_claim_next`, migration 20261130000001): the oldest QUEUED export of
//! the project with the fewest running, below the project's cap; an export not yet due, out of
//! attempts, or whose row another transaction holds is passed over; the record it returns is
//! the claimed export's, as claimed.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use wharf_shared::domain::states::ExportStatus;
use wharf_shared::repo::exports;
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, parse, spawn_app};

const LEASE: Duration = Duration::from_secs(30);
const CAP: i64 = 2;

/// Claims one export and names it by its label; checks the record against the database.
async fn claim(pool: &PgPool, labels: &[(uuid::Uuid, &'static str)]) -> Option<&'static str> {
    let exports::Claimed {
        claim,
        rec,
        workflow,
        ..
    } = exports::claim_next(pool, "test-worker", LEASE, CAP)
        .await
        .expect("claim")?;
    let wf = workflow.expect("the export's workflow comes along");
    assert_eq!(Some(wf.id), rec.workflow_id);
    assert_eq!(wf.project_id, rec.project_id);
    assert_eq!(wf.fields.len(), 1);
    assert!(wf.table_name.starts_with("rows_"), "{}", wf.table_name);
    assert_eq!(rec.id, claim.export_id);
    assert_eq!(rec.status, ExportStatus::InProgress);
    assert_eq!(rec.attempts, claim.attempt);
    assert_eq!(rec.lease_token, Some(claim.token));
    let stored = exports::get_any(pool, rec.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(stored.status, ExportStatus::InProgress);
    assert_eq!(stored.attempts, claim.attempt);
    assert_eq!(stored.lease_token, Some(claim.token));
    assert_eq!(
        (stored.project_id, stored.workflow_id, stored.run_id),
        (rec.project_id, rec.workflow_id, rec.run_id)
    );
    assert_eq!(
        rec.run_row_count,
        Some(1),
        "the run's row count comes along"
    );
    labels.iter().find(|(id, _)| *id == rec.id).map(|(_, l)| *l)
}

async fn project_workflow(app: &TestApp, slug: &str) -> (String, String) {
    let (p, wf) = app.one_row_workflow_in(slug).await;
    (p.key, wf)
}

#[tokio::test]
async fn claims_are_fair_capped_and_pass_over_what_they_cannot_take() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await; // no worker: the test claims
    let (a, a_wf) = project_workflow(&app, "proj-a").await;
    let (b, b_wf) = project_workflow(&app, "proj-b").await;
    let (c, c_wf) = project_workflow(&app, "proj-c").await;

    // Created in this order: A1 A2 A3 B1 B2 C1 (then D1 of A, out of attempts).
    let mut labels = Vec::new();
    for (key, wf, label) in [
        (&a, &a_wf, "A1"),
        (&a, &a_wf, "A2"),
        (&a, &a_wf, "A3"),
        (&b, &b_wf, "B1"),
        (&b, &b_wf, "B2"),
        (&c, &c_wf, "C1"),
        (&a, &a_wf, "A-spent"),
    ] {
        let id = app.create_export(key, wf, &json!({})).await;
        labels.push((parse(&id), label));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id_of = |l: &str| labels.iter().find(|(_, x)| *x == l).map(|(id, _)| *id);
    let (a1, a3, spent_id) = (id_of("A1"), id_of("A3"), id_of("A-spent"));
    sqlx::query("UPDATE jobs SET attempts = max_attempts WHERE id = $1")
        .bind(spent_id)
        .execute(&pool)
        .await
        .expect("spend");
    // A3 is not due yet (a retry's backoff).
    sqlx::query("UPDATE jobs SET due_at = now() + interval '1 hour' WHERE id = $1")
        .bind(a3)
        .execute(&pool)
        .await
        .expect("delay");

    // The oldest of all; then each project with none running before any gets a second.
    assert_eq!(claim(&pool, &labels).await, Some("A1"));
    assert_eq!(claim(&pool, &labels).await, Some("B1"));
    assert_eq!(claim(&pool, &labels).await, Some("C1"));
    // All have one running: the oldest waiting.
    assert_eq!(claim(&pool, &labels).await, Some("A2"));
    assert_eq!(claim(&pool, &labels).await, Some("B2"));
    // A is at its cap (and A3 not due), B and C have nothing left, A-spent never runs.
    assert_eq!(claim(&pool, &labels).await, None);

    // A running export's lease lapses: it no longer counts against A's cap, but A3 is still
    // not due. Once due, it is taken.
    sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(a1)
        .execute(&pool)
        .await
        .expect("lapse");
    assert_eq!(claim(&pool, &labels).await, None);
    sqlx::query("UPDATE jobs SET due_at = now() - interval '1 second' WHERE id = $1")
        .bind(a3)
        .execute(&pool)
        .await
        .expect("due");

    // A3's row is held by another transaction (a cancel in flight): passed over, not waited
    // for; a new export of C (one running) is taken instead.
    let c2 = parse(&app.create_export(&c, &c_wf, &json!({})).await);
    labels.push((c2, "C2"));
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(a3)
        .execute(&mut *holder)
        .await
        .expect("hold");
    let taken = tokio::time::timeout(Duration::from_secs(5), claim(&pool, &labels))
        .await
        .expect("a held row does not block the claim");
    assert_eq!(taken, Some("C2"));
    holder.rollback().await.expect("release");
    assert_eq!(claim(&pool, &labels).await, Some("A3"));
    assert_eq!(claim(&pool, &labels).await, None);

    let spent: (String, i32) = sqlx::query_as(
        "SELECT e.status, j.attempts FROM exports e JOIN jobs j ON j.id = e.id WHERE e.id = $1",
    )
    .bind(spent_id)
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(
        spent.0, "QUEUED",
        "an export out of attempts is never claimed"
    );
}

#[tokio::test]
async fn concurrent_claims_never_overshoot_a_cap_nor_take_one_export_twice() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let mut projects = Vec::new();
    for slug in ["cap-a", "cap-b"] {
        projects.push(project_workflow(&app, slug).await);
    }
    for (key, wf) in &projects {
        for _ in 0..10 {
            app.create_export(key, wf, &json!({})).await;
        }
    }
    // 16 claimers at once, a cap of 2 per project: exactly 4 claims, 2 per project.
    let claims = futures::future::join_all((0..16).map(|_| {
        let pool = pool.clone();
        async move {
            exports::claim_next(&pool, "w", LEASE, CAP)
                .await
                .expect("claim")
        }
    }))
    .await;
    let got: Vec<_> = claims.into_iter().flatten().collect();
    assert_eq!(got.len(), 4, "{} claims", got.len());
    let mut ids: Vec<_> = got.iter().map(|c| c.claim.export_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "no export claimed twice");
    let per_project: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(*) FROM exports WHERE status = 'IN_PROGRESS' GROUP BY project_id",
    )
    .fetch_all(&pool)
    .await
    .expect("count");
    assert_eq!(per_project, vec![(2,), (2,)]);
}

/// A claim that waits for its turn while an export is created takes that export and returns its
/// record (a record read with the snapshot the claim's statement began with would miss it: the
/// export claimed, but never run until its lease lapsed).
#[tokio::test]
async fn a_claim_waiting_its_turn_returns_an_export_created_meanwhile() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let (key, wf) = project_workflow(&app, "late").await;

    // Another claimer's turn: the lock claims take turns on.
    let mut turn = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(7)")
        .execute(&mut *turn)
        .await
        .expect("lock");
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { exports::claim_next(&pool, "w", LEASE, CAP).await }
    });
    // The claim's statement has begun and waits for the lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waits: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(&pool)
        .await
        .expect("locks");
        if waits > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the claim never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = parse(&app.create_export(&key, &wf, &json!({})).await);
    turn.commit().await.expect("end the turn");

    let exports::Claimed { claim, rec, .. } = waiting
        .await
        .expect("task")
        .expect("claim")
        .expect("the export created while the claim waited");
    assert_eq!((claim.export_id, rec.id), (id, id));
    assert_eq!(rec.status, ExportStatus::InProgress);
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.lease_token, Some(claim.token));
    assert_eq!(rec.run_row_count, Some(1));
}
