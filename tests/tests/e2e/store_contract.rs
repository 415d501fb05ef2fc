//! One contract, every object store: S3 (s3s-fs), a local directory, memory.

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use wharf_shared::store::dir::DirStore;
use wharf_shared::store::memory::MemoryStore;
use wharf_shared::store::s3::S3Store;
use wharf_shared::store::{ByteStream, ObjectMeta, ObjectStore, StoreError, WriteLog, write_bytes};

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

/// Remembers the tokens a store announces.
#[derive(Default)]
struct Tokens(Mutex<Vec<String>>);

#[async_trait]
impl WriteLog for Tokens {
    async fn begun(&self, token: &str) -> Result<(), StoreError> {
        self.0.lock().expect("lock").push(token.to_string());
        Ok(())
    }
}

impl Tokens {
    fn last(&self) -> Option<String> {
        self.0.lock().expect("lock").last().cloned()
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A body fed by the test through a channel; dropping the sender without `None` is an error.
fn channel_body() -> (mpsc::Sender<Option<Bytes>>, ByteStream) {
    let (tx, rx) = mpsc::channel::<Option<Bytes>>(4);
    let body = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Some(b)) => Some((Ok(b), Some(rx))),
            Some(None) => None,
            None => Some((Err(StoreError::Interrupted), None)),
        }
    })
    .boxed();
    (tx, body)
}

/// What every store must do, as the export pipeline, the downloads and the janitor use it.
async fn contract(store: Arc<dyn ObjectStore>, name: &str) {
    store.ensure_bucket().await.expect("ready");
    store.check().await.expect("reachable");
    let body = Bytes::from_static(b"id,name\n1,a\n2,b\n");
    let written = write_bytes(&*store, "wf/one.csv", &meta(), body.clone())
        .await
        .expect("write");
    assert_eq!(written.size, body.len() as u64, "{name}");
    assert_eq!(written.sha256, sha256(&body), "{name}");
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
    let empty = write_bytes(&*store, "wf/empty.csv", &meta(), Bytes::new())
        .await
        .expect("an empty object");
    assert_eq!(
        (empty.size, empty.sha256.as_str()),
        (0, sha256(b"").as_str()),
        "{name}"
    );
    assert!(
        read(&*store, "wf/empty.csv", None)
            .await
            .expect("get")
            .is_empty(),
        "{name}"
    );

    // A streamed write larger than a part: invisible until the body ends, then whole.
    let m = meta();
    let chunk = Bytes::from(vec![b'x'; 3 << 20]);
    let tokens = Tokens::default();
    let (tx, stream) = channel_body();
    let feed = async {
        tx.send(Some(chunk.clone())).await.expect("send");
        tx.send(Some(chunk.clone())).await.expect("send");
        tx.send(Some(chunk.clone())).await.expect("send");
        // The first part has gone out (or the whole body is buffered, for memory).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let keys = store.list("wf/").await.expect("list");
        assert!(
            !keys.contains(&"wf/big.csv".to_string()),
            "{name}: visible before its end"
        );
        tx.send(Some(Bytes::from_static(b"tail")))
            .await
            .expect("send");
        tx.send(None).await.expect("send");
    };
    let (big, ()) = tokio::join!(store.write("wf/big.csv", &m, stream, &tokens), feed);
    let big = big.expect("a streamed write");
    let whole = read(&*store, "wf/big.csv", None).await.expect("get");
    assert_eq!(whole.len() as u64, big.size, "{name}");
    assert_eq!(big.size, 3 * (3 << 20) + 4, "{name}");
    assert_eq!(big.sha256, sha256(&whole), "{name}");
    assert!(whole.ends_with(b"tail"), "{name}");

    // A body that ends in an error stores nothing and cleans up after itself.
    let (tx, stream) = channel_body();
    let feed = async move {
        tx.send(Some(chunk.clone())).await.expect("send");
        tx.send(Some(chunk.clone())).await.expect("send");
        drop(tx);
    };
    let (failed, ()) = tokio::join!(store.write("wf/failed.csv", &m, stream, &tokens), feed);
    assert!(
        matches!(failed, Err(StoreError::Interrupted)),
        "{name}: {failed:?}"
    );

    // A write that never finishes (its process died) is abandoned by its token.
    let hung = Tokens::default();
    let (tx, stream) = channel_body();
    tx.send(Some(Bytes::from(vec![b'y'; 6 << 20])))
        .await
        .expect("send");
    tx.send(Some(Bytes::from_static(b"more")))
        .await
        .expect("send");
    let write = store.write("wf/hung.csv", &m, stream, &hung);
    tokio::select! {
        r = write => panic!("{name}: a write without its end finished: {r:?}"),
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
    // By the token its log heard, or (a store that logs none) by its key alone.
    let token = hung.last();
    store
        .abandon("wf/hung.csv", token.as_deref())
        .await
        .expect("abandon");
    store
        .abandon("wf/hung.csv", token.as_deref())
        .await
        .expect("abandon is idempotent");
    drop(tx);

    let mut keys = store.list("wf/").await.expect("list");
    keys.sort();
    assert_eq!(keys, ["wf/big.csv", "wf/empty.csv", "wf/one.csv"], "{name}");
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
    store.delete("wf/empty.csv").await.expect("delete");
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
