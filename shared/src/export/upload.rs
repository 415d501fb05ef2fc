//! The upload side: parts arrive as they fill. A file that fits in one part is stored with a
//! single PUT at the end; a larger one becomes a multipart upload, recorded in PostgreSQL so
//! an orphan can be aborted later, and completed only once the whole file is encoded.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ExportContext, stopped};
use crate::domain::states::UploadState;
use crate::error::Result;
use crate::repo::exports::{self, Claim};
use crate::store::ObjectMeta;

pub enum Parts {
    /// Everything fit in one part: not uploaded yet.
    Single(Bytes),
    Multipart {
        upload_id: String,
        etags: Vec<String>,
    },
}

pub async fn receive_parts(
    ctx: &ExportContext,
    claim: &Claim,
    key: &str,
    meta: &ObjectMeta,
    mut rx: mpsc::Receiver<Bytes>,
    cancel: &CancellationToken,
) -> Result<Parts> {
    let Some(first) = rx.recv().await else {
        return Err(stopped());
    };
    let Some(second) = rx.recv().await else {
        return Ok(Parts::Single(first));
    };
    let upload_id = tokio::select! {
        _ = cancel.cancelled() => return Err(stopped()),
        id = ctx.store.create_multipart(key, meta) => id?,
    };
    exports::record_upload(&ctx.pool, claim, &upload_id, key).await?;
    let mut etags = Vec::new();
    let mut parts = Parts::Multipart {
        upload_id: upload_id.clone(),
        etags: Vec::new(),
    };
    let mut next = Some(second);
    let mut current = first;
    loop {
        if cancel.is_cancelled() {
            abort(ctx, key, Some(parts)).await;
            return Err(stopped());
        }
        let number = etags.len() as i32 + 1;
        // A hung object store must not keep a cancelled or stopping export from letting go.
        let uploaded = tokio::select! {
            _ = cancel.cancelled() => Err(crate::store::StoreError::Timeout),
            r = ctx.store.upload_part(key, &upload_id, number, current) => r,
        };
        match uploaded {
            Ok(etag) => etags.push(etag),
            Err(e) => {
                abort(ctx, key, Some(parts)).await;
                return Err(e.into());
            }
        }
        parts = Parts::Multipart {
            upload_id: upload_id.clone(),
            etags: etags.clone(),
        };
        current = match next.take() {
            Some(p) => p,
            None => return Ok(parts),
        };
        next = rx.recv().await;
    }
}

/// Makes the object exist. Its upload record stays OPEN until the export's completion marks it
/// COMPLETED in the same transaction, so an object whose attempt died in between is found by
/// the janitor and deleted.
pub async fn finish(
    ctx: &ExportContext,
    claim: &Claim,
    key: &str,
    meta: &ObjectMeta,
    parts: Parts,
) -> Result<()> {
    match parts {
        Parts::Single(body) => {
            let record = format!("{PUT_PREFIX}{}:{}", claim.export_id, claim.attempt);
            exports::record_upload(&ctx.pool, claim, &record, key).await?;
            Ok(ctx.store.put(key, meta, body).await?)
        }
        Parts::Multipart { upload_id, etags } => {
            if let Err(e) = ctx.store.complete_multipart(key, &upload_id, &etags).await {
                abort(ctx, key, Some(Parts::Multipart { upload_id, etags })).await;
                return Err(e.into());
            }
            Ok(())
        }
    }
}

/// Upload records of single-PUT objects have this id prefix (there is no S3 upload to abort).
pub const PUT_PREFIX: &str = "put:";

/// Best effort and bounded: an upload that cannot be aborted now stays OPEN in PostgreSQL and
/// the janitor aborts it later.
pub async fn abort(ctx: &ExportContext, key: &str, parts: Option<Parts>) {
    if let Some(Parts::Multipart { upload_id, .. }) = parts {
        let aborted = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ctx.store.abort_multipart(key, &upload_id),
        )
        .await;
        match aborted {
            Ok(Ok(())) => {
                if let Err(e) =
                    exports::finish_upload(&ctx.pool, &upload_id, UploadState::Aborted).await
                {
                    tracing::warn!(error = %e, "could not record the aborted upload");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, upload_id, "could not abort the upload; the janitor will")
            }
            Err(_) => tracing::warn!(upload_id, "aborting the upload timed out; the janitor will"),
        }
    }
}
