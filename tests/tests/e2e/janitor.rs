//! The janitor logs and skips what it cannot handle: one object that cannot be deleted does not
//! keep the others from expiring.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use wharf_shared::store::{ByteStream, ObjectMeta, ObjectStore, StoreError, WriteLog, Written};
use wharf_tests::db::TestDb;
use wharf_tests::spawn_app_with;

/// The real store, except that deleting `refused` fails.
struct Refusing {
    inner: Arc<dyn ObjectStore>,
    refused: String,
}

#[async_trait]
impl ObjectStore for Refusing {
    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        self.inner.ensure_bucket().await
    }
    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
    async fn write(
        &self,
        key: &str,
        meta: &ObjectMeta,
        body: ByteStream,
        log: &dyn WriteLog,
    ) -> Result<Written, StoreError> {
        self.inner.write(key, meta, body, log).await
    }
    async fn abandon(&self, key: &str, token: Option<&str>) -> Result<(), StoreError> {
        self.inner.abandon(key, token).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if key == self.refused {
            return Err(StoreError::Service("refused by the test".into()));
        }
        self.inner.delete(key).await
    }
    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        meta: &ObjectMeta,
    ) -> Result<Option<String>, StoreError> {
        self.inner.presign_get(key, ttl, meta).await
    }
    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<ByteStream, StoreError> {
        self.inner.get(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
}

#[tokio::test]
async fn one_undeletable_object_does_not_stop_the_others() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app_with(pool.clone(), &[("WHARF_EXPORT_TTL", "1s")]).await;
    let worker = app.start_worker().await;
    let (p, wf) = app.one_row_workflow().await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        let done = app.export_and_wait(&p.key, &wf, &json!({})).await;
        let rec = wharf_shared::repo::exports::get_any(
            &pool,
            wharf_tests::parse(done["exportId"].as_str().expect("id")),
        )
        .await
        .expect("query")
        .expect("export");
        keys.push(rec.object_key.expect("object key"));
    }
    drop(worker);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut ctx = wharf_worker::startup::context(&app.settings, pool.clone()).await;
    let refused = keys[0].clone();
    ctx.store = Arc::new(Refusing {
        inner: ctx.store.clone(),
        refused: refused.clone(),
    });
    assert_eq!(wharf_worker::janitor::sweep(&ctx).await.expect("a pass"), 2);
    let left = app.object_keys().await;
    assert!(left.contains(&refused), "the refused object stays");
    assert!(
        !left.contains(&keys[1]) && !left.contains(&keys[2]),
        "the others are gone"
    );
    // The next pass tries it again (and, the store willing, deletes it).
    let ctx = wharf_worker::startup::context(&app.settings, pool.clone()).await;
    assert_eq!(wharf_worker::janitor::sweep(&ctx).await.expect("a pass"), 1);
    assert!(!app.object_keys().await.contains(&refused));
}
