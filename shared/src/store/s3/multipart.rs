//! Uploads in parts: a body larger than one part goes up as a multipart upload, each part's
//! upload overlapping the filling of the next; and the bucket's removal with its unfinished uploads.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{S3Store, classify};
use crate::store::{ObjectMeta, ObjectStore, StoreError, Tally};

impl S3Store {
    /// Deletes every object of the bucket, its unfinished multipart uploads, and the bucket
    /// itself (tests and benches remove what they made; Wharf never deletes its bucket).
    pub async fn delete_bucket(&self) -> Result<(), StoreError> {
        for key in ObjectStore::list(self, "").await? {
            ObjectStore::delete(self, &key).await?;
        }
        if let Ok(out) = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
        {
            for up in out.uploads() {
                if let (Some(key), Some(id)) = (up.key(), up.upload_id()) {
                    let _ = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await;
                }
            }
        }
        match self
            .client
            .delete_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(classify)
        {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(other) => Err(other),
        }
    }

    pub(super) async fn put(
        &self,
        key: &str,
        meta: &ObjectMeta,
        body: Bytes,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(&meta.content_type)
            .content_disposition(&meta.content_disposition)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn create_multipart(
        &self,
        key: &str,
        meta: &ObjectMeta,
    ) -> Result<String, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(&meta.content_type)
            .content_disposition(&meta.content_disposition)
            .send()
            .await
            .map_err(classify)?;
        out.upload_id
            .ok_or_else(|| StoreError::Other("no upload id in the response".into()))
    }

    /// Uploads `first` and every later part of `body`, each part's upload overlapping the
    /// filling of the next, and returns their ETags in order.
    pub(super) async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Part,
        mut body: crate::store::ByteStream,
        tally: &mut Tally,
    ) -> Result<Vec<String>, StoreError> {
        let mut etags = Vec::new();
        let mut current = first;
        loop {
            let number = etags.len() as i32 + 1;
            if current.last {
                // A body that ended exactly on a part boundary leaves an empty last part.
                if !current.bytes.is_empty() || etags.is_empty() {
                    etags.push(
                        self.upload_part(key, upload_id, number, current.bytes)
                            .await?,
                    );
                }
                return Ok(etags);
            }
            let (etag, next) = tokio::join!(
                self.upload_part(key, upload_id, number, current.bytes),
                next_part(&mut body, self.part_size, tally)
            );
            etags.push(etag?);
            current = next?;
        }
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(classify)?;
        out.e_tag
            .ok_or_else(|| StoreError::Other("no ETag for an uploaded part".into()))
    }

    pub(super) async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: Vec<String>,
    ) -> Result<(), StoreError> {
        let parts: Vec<CompletedPart> = etags
            .into_iter()
            .zip(1..)
            .map(|(etag, n)| CompletedPart::builder().e_tag(etag).part_number(n).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// One part's bytes; `last`: the body ended while filling it.
pub(super) struct Part {
    pub(super) bytes: Bytes,
    pub(super) last: bool,
}

/// Reads `body` until at least `size` bytes or its end.
pub(super) async fn next_part(
    body: &mut crate::store::ByteStream,
    size: usize,
    tally: &mut Tally,
) -> Result<Part, StoreError> {
    // Room for the part and the chunk that tips it over (the exporter's chunks are ~1 MiB).
    let mut buf = BytesMut::new();
    while buf.len() < size {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                tally.add(&chunk);
                if buf.is_empty() && chunk.len() >= size {
                    return Ok(Part {
                        bytes: chunk,
                        last: false,
                    });
                }
                if buf.capacity() == 0 {
                    buf.reserve(size + (1 << 20));
                }
                buf.extend_from_slice(&chunk);
            }
            None => {
                return Ok(Part {
                    bytes: buf.freeze(),
                    last: true,
                });
            }
        }
    }
    Ok(Part {
        bytes: buf.freeze(),
        last: false,
    })
}
