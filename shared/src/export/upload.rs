//! The upload side: the encoded file goes to the object store as one stream of chunks. The
//! write is recorded in PostgreSQL before it starts, with the store's token for any partial
//! state it creates, so whatever an attempt that dies leaves behind is found by the janitor;
//! the record stays OPEN until the export's completion marks it COMPLETED in one transaction.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{ExportContext, stopped};
use crate::domain::states::UploadState;
use crate::error::{Error, Result};
use crate::repo::exports::{self, Claim};
use crate::store::{ByteStream, ObjectMeta, ObjectStore, StoreError, WriteLog, Written};

/// A chunk of the encoded file; `None` marks its end (a channel that closes without it is a
/// producer that failed, and the write stores nothing).
pub type Piece = Option<Bytes>;

/// Records the store's token for the attempt's write.
struct Recorder<'a> {
    pool: &'a PgPool,
    claim: Claim,
    key: &'a str,
    token: Mutex<Option<String>>,
}

#[async_trait]
impl WriteLog for Recorder<'_> {
    async fn begun(&self, token: &str) -> std::result::Result<(), StoreError> {
        exports::note_write_token(self.pool, &self.claim, self.key, token)
            .await
            .map_err(|e| StoreError::Service(format!("the write could not be recorded: {e}")))?;
        if let Ok(mut slot) = self.token.lock() {
            *slot = Some(token.to_string());
        }
        Ok(())
    }
}

impl Recorder<'_> {
    fn token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|t| t.clone())
    }
}

/// Writes the pieces arriving on `rx` as the object `key`.
pub async fn upload(
    ctx: &ExportContext,
    claim: &Claim,
    key: &str,
    meta: &ObjectMeta,
    rx: mpsc::Receiver<Piece>,
    cancel: &CancellationToken,
) -> Result<Written> {
    exports::record_write(&ctx.pool, claim, key).await?;
    let recorder = Recorder {
        pool: &ctx.pool,
        claim: *claim,
        key,
        token: Mutex::new(None),
    };
    // A hung object store must not keep a cancelled or stopping export from letting go.
    let written = tokio::select! {
        _ = cancel.cancelled() => Err(StoreError::Interrupted),
        w = ctx.store.write(key, meta, body(rx), &recorder) => w,
    };
    match written {
        Ok(w) => Ok(w),
        Err(e) => {
            let token = recorder.token();
            discard_bounded(ctx, claim, key, token.as_deref()).await;
            Err(match e {
                StoreError::Interrupted => stopped(),
                other => Error::Storage(other),
            })
        }
    }
}

fn body(rx: mpsc::Receiver<Piece>) -> ByteStream {
    futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Some(bytes)) => Some((Ok(bytes), Some(rx))),
            Some(None) => None,
            None => Some((Err(StoreError::Interrupted), None)),
        }
    })
    .boxed()
}

/// Removes what a write of the attempt left (partial state named by `token`, and the object
/// itself) and marks its record ABORTED. Any step that fails leaves the record OPEN for the
/// janitor.
pub async fn discard(
    pool: &PgPool,
    store: &dyn ObjectStore,
    job_id: Uuid,
    attempt: i32,
    key: &str,
    token: Option<&str>,
) -> Result<()> {
    store.abandon(key, token).await?;
    store.delete(key).await?;
    exports::finish_write(pool, job_id, attempt, key, UploadState::Aborted).await
}

/// What a write left of its own (its partial state), when a later attempt writes the same
/// key: the object is that attempt's, not this one's.
pub async fn abandon_superseded(
    pool: &PgPool,
    store: &dyn ObjectStore,
    job_id: Uuid,
    attempt: i32,
    key: &str,
    token: Option<&str>,
) -> Result<()> {
    store.abandon(key, token).await?;
    exports::finish_write(pool, job_id, attempt, key, UploadState::Aborted).await
}

/// `discard`, best effort and bounded: a store that does not answer leaves it to the janitor.
pub async fn discard_bounded(ctx: &ExportContext, claim: &Claim, key: &str, token: Option<&str>) {
    let discarded = tokio::time::timeout(
        Duration::from_secs(5),
        discard(
            &ctx.pool,
            &*ctx.store,
            claim.job_id,
            claim.attempt,
            key,
            token,
        ),
    )
    .await;
    match discarded {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, key, "write not cleaned up; the janitor will"),
        Err(_) => tracing::warn!(key, "cleaning up the write timed out; the janitor will"),
    }
}
