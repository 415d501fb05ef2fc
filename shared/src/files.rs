//! Uploaded files (bundles to import): the request body streamed to the object store in
//! bounded memory, held to a size limit and a stall timeout, recorded with its sha256 only once
//! stored whole. An upload that fails stores nothing.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::ids::new_id;
use crate::error::{Error, Result};
use crate::repo::imports::{self, NewFile, StoredFile};
use crate::store::{ObjectMeta, ObjectStore, StoreError};

/// How long an uploaded file lives (API.md: 24 h).
pub const FILE_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct UploadLimits {
    /// Bytes at most (413 beyond).
    pub max_bytes: u64,
    /// A body that sends nothing for this long: 408.
    pub stall: Duration,
}

/// The next item of a request body's stream, or 408 when it sends nothing for `stall`
/// (`WHARF_BODY_TIMEOUT`): a stalled client never holds what it was given.
pub async fn next_within<S: Stream + Unpin>(
    stall: std::time::Duration,
    stream: &mut S,
) -> Result<Option<S::Item>, Error> {
    tokio::time::timeout(stall, stream.next())
        .await
        .map_err(|_| {
            Error::RequestTimeout(format!(
                "the request body sent nothing for {} s (WHARF_BODY_TIMEOUT)",
                stall.as_secs_f64()
            ))
        })
}

/// Streams `body` into the store as a new file of the project and records it.
pub async fn upload<S, E>(
    pool: &PgPool,
    store: &std::sync::Arc<dyn ObjectStore>,
    project_id: Uuid,
    file_name: &str,
    body: S,
    limits: UploadLimits,
) -> Result<StoredFile>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let id = new_id();
    let key = format!("uploads/{project_id}/{id}");
    let written = store_body(store, &key, file_name, body, &limits).await?;
    let size_bytes = i64::try_from(written.size).map_err(|e| Error::Unexpected(e.into()))?;
    let recorded = imports::create_file(
        pool,
        NewFile {
            id,
            project_id,
            object_key: &key,
            file_name,
            size_bytes,
            sha256: &written.sha256,
            ttl: FILE_TTL,
        },
    )
    .await;
    if recorded.is_err() {
        store.delete(&key).await.ok();
    }
    recorded
}

/// The body as the object `key`, all of it (a body cut short or over the limit stores nothing).
async fn store_body<S, E>(
    store: &std::sync::Arc<dyn ObjectStore>,
    key: &str,
    file_name: &str,
    body: S,
    limits: &UploadLimits,
) -> Result<crate::store::Written>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, StoreError>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed();
    let meta = ObjectMeta {
        content_type: "application/zip".into(),
        content_disposition: crate::domain::export::content_disposition(file_name),
    };
    let writer = {
        let (store, key) = (store.clone(), key.to_string());
        tokio::spawn(async move { store.write(&key, &meta, stream, &crate::store::NoLog).await })
    };
    let pumped = pump(body, &tx, limits).await;
    if pumped.is_err() {
        tx.send(Err(StoreError::Interrupted)).await.ok();
    }
    drop(tx);
    let written = writer.await.map_err(|e| Error::Unexpected(e.into()))?;
    let size = pumped?;
    let written = written?;
    if written.size != size {
        store.delete(key).await.ok();
        return Err(Error::Unexpected(anyhow::anyhow!(
            "stored {} of {size} bytes",
            written.size
        )));
    }
    Ok(written)
}

async fn pump<S, E>(
    body: S,
    tx: &mpsc::Sender<std::result::Result<Bytes, StoreError>>,
    limits: &UploadLimits,
) -> Result<u64>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut size = 0u64;
    loop {
        let Some(chunk) = next_within(limits.stall, &mut body).await? else {
            break;
        };
        let chunk =
            chunk.map_err(|e| Error::invalid(format!("request body could not be read: {e}")))?;
        size += chunk.len() as u64;
        if size > limits.max_bytes {
            return Err(Error::PayloadTooLarge {
                limit: limits.max_bytes,
            });
        }
        if tx.send(Ok(chunk)).await.is_err() {
            // The store gave up; its own error is the one to report.
            break;
        }
    }
    if size == 0 {
        return Err(Error::invalid("the file is empty"));
    }
    Ok(size)
}
