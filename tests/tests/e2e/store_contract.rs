//! One contract, every object store: S3 (s3s-fs), a local directory, memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use wharf_shared::store::dir::DirStore;
use wharf_shared::store::memory::MemoryStore;
use wharf_shared::store::s3::S3Store;
use wharf_shared::store::{ObjectMeta, ObjectStore, StoreError};

fn meta() -> ObjectMeta {
    ObjectMeta {
        content_type: "text/csv; charset=utf-8".into(),
        content_disposition: "attachment; filename=\"a.csv\"".into(),
    }
}

async fn read(
    store: &dyn ObjectStore,
    key: &str,
    range: Option<(u64, u64)>,
) -> Result<Vec<u8>, StoreError> {
    let chunks: Vec<Bytes> = store.get(key, range).await?.try_collect().await?;
    Ok(chunks.concat())
}

/// What every store must do, as the export pipeline, the downloads and the janitor use it.
async fn contract(store: Arc<dyn ObjectStore>, name: &str) {
    store.ensure_bucket().await.expect("ready");
    store.check().await.expect("reachable");
    let body = Bytes::from_static(b"id,name\n1,a\n2,b\n");
    store
        .put("wf/one.csv", &meta(), body.clone())
        .await
        .expect("put");
    assert_eq!(
        read(&*store, "wf/one.csv", None).await.expect("get"),
        body,
        "{name}"
    );
    assert_eq!(
        read(&*store, "wf/one.csv", Some((3, 6)))
            .await
            .expect("range"),
        &body[3..=6],
        "{name}"
    );
    assert_eq!(
        read(&*store, "wf/one.csv", Some((10, 1000)))
            .await
            .expect("range"),
        &body[10..],
        "{name}"
    );
    assert!(
        matches!(
            read(&*store, "wf/none.csv", None).await,
            Err(StoreError::NotFound)
        ),
        "{name}"
    );

    // Multipart: parts in order become one object only on completion; an abort leaves none.
    let first = Bytes::from(vec![b'x'; 5 << 20]);
    let second = Bytes::from_static(b"tail");
    let id = store
        .create_multipart("wf/big.csv", &meta())
        .await
        .expect("create");
    let e1 = store
        .upload_part("wf/big.csv", &id, 1, first.clone())
        .await
        .expect("part 1");
    let e2 = store
        .upload_part("wf/big.csv", &id, 2, second.clone())
        .await
        .expect("part 2");
    assert!(
        !store
            .list("wf/")
            .await
            .expect("list")
            .contains(&"wf/big.csv".to_string()),
        "{name}: not visible before completion"
    );
    store
        .complete_multipart("wf/big.csv", &id, &[e1, e2])
        .await
        .expect("complete");
    let whole = read(&*store, "wf/big.csv", None).await.expect("get");
    assert_eq!(whole.len(), first.len() + second.len(), "{name}");
    assert!(whole.ends_with(b"tail"), "{name}");
    let gone = store
        .create_multipart("wf/aborted.csv", &meta())
        .await
        .expect("create");
    store
        .upload_part("wf/aborted.csv", &gone, 1, second.clone())
        .await
        .expect("part");
    store
        .abort_multipart("wf/aborted.csv", &gone)
        .await
        .expect("abort");

    let mut keys = store.list("wf/").await.expect("list");
    keys.sort();
    assert_eq!(keys, ["wf/big.csv", "wf/one.csv"], "{name}");
    // A download URL, where the store has them, serves the same bytes.
    if let Some(url) = store
        .presign_get("wf/one.csv", Duration::from_secs(60), &meta())
        .await
        .expect("url")
    {
        let got = reqwest::get(&url)
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body");
        assert_eq!(got, body, "{name}");
    }
    store.delete("wf/one.csv").await.expect("delete");
    store
        .delete("wf/one.csv")
        .await
        .expect("delete is idempotent");
    store.delete("wf/big.csv").await.expect("delete");
    assert!(store.list("wf/").await.expect("list").is_empty(), "{name}");
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::default()), "memory").await;
}

#[tokio::test]
async fn directory_store_keeps_the_contract() {
    let dir =
        std::env::temp_dir().join(format!("wharf-contract-{}", uuid::Uuid::new_v4().simple()));
    contract(Arc::new(DirStore::new(&dir)), "dir").await;
    let leftovers: Vec<_> = std::fs::read_dir(dir.join(".uploads"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "no upload left behind: {leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn s3_store_keeps_the_contract() {
    let bucket = format!(
        "wharf-c-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let settings = wharf_tests::test_settings(&bucket, &[("WHARF_STORE", "s3")]);
    let store = Arc::new(S3Store::new(&settings.s3).await);
    contract(store.clone(), "s3").await;
    store
        .client()
        .delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("the test's bucket removed");
}
