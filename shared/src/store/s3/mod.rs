//! The S3 object store (AWS, MinIO, s3s-fs). Path-style addressing, so any endpoint works.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region, timeout::TimeoutConfig};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use secrecy::ExposeSecret;

use aws_sdk_s3::presigning::PresigningConfig;

use self::multipart::next_part;
use super::{ObjectMeta, ObjectStore, StoreError, Tally, WriteLog, Written};
use crate::config::S3Settings;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    presigner: Option<Client>,
    bucket: String,
    part_size: usize,
}

mod multipart;

impl S3Store {
    pub async fn new(s: &S3Settings) -> Self {
        let shared = sdk_config(s).await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build();
        // Presigned URLs are opened by clients, so they carry the public endpoint when the
        // service's own one is internal (e.g. http://minio:9000 inside docker-compose).
        let presigner = s.public_endpoint.as_ref().map(|public| {
            let conf = aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(true)
                .endpoint_url(public.clone())
                .build();
            Client::from_conf(conf)
        });
        S3Store {
            client: Client::from_conf(conf),
            presigner,
            bucket: s.bucket.clone(),
            part_size: s.part_size.max(5 << 20),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// The SDK's settings: rustls on ring (no C toolchain), short connect and bounded attempt
/// timeouts, the configured credentials and endpoint.
async fn sdk_config(s: &S3Settings) -> aws_config::SdkConfig {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .region(Region::new(s.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if let (Some(key), Some(secret)) = (&s.access_key, &s.secret_key) {
        loader = loader.credentials_provider(Credentials::new(
            key.clone(),
            secret.expose_secret().to_string(),
            None,
            None,
            "wharf-settings",
        ));
    }
    if let Some(endpoint) = &s.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    loader.load().await
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self.check().await.is_ok() {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.code() {
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists") => Ok(()),
                _ => Err(classify(e)),
            },
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn write(
        &self,
        key: &str,
        meta: &ObjectMeta,
        mut body: super::ByteStream,
        log: &dyn WriteLog,
    ) -> Result<Written, StoreError> {
        let mut tally = Tally::default();
        let first = next_part(&mut body, self.part_size, &mut tally).await?;
        if first.last {
            self.put(key, meta, first.bytes).await?;
            return Ok(tally.done());
        }
        let upload_id = self.create_multipart(key, meta).await?;
        let uploaded = match log.begun(&upload_id).await {
            Ok(()) => {
                self.upload_parts(key, &upload_id, first, body, &mut tally)
                    .await
            }
            Err(e) => Err(e),
        };
        let completed = match uploaded {
            Ok(etags) => self.complete_multipart(key, &upload_id, etags).await,
            Err(e) => Err(e),
        };
        match completed {
            Ok(()) => Ok(tally.done()),
            Err(e) => {
                // Best effort: what stays is abandoned later through the write log's token.
                if let Err(abort) = self.abandon(key, Some(&upload_id)).await {
                    tracing::warn!(error = %abort, upload_id, "multipart upload not aborted");
                }
                Err(e)
            }
        }
    }

    async fn abandon(&self, key: &str, upload_id: Option<&str>) -> Result<(), StoreError> {
        // Without a multipart upload there is nothing partial: a single PUT stores all or none.
        let Some(upload_id) = upload_id else {
            return Ok(());
        };
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        match res.map_err(classify) {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            // AWS answers an upload that is gone with NoSuchUpload; some servers (s3s-fs) with
            // AccessDenied. With the bucket answering our credentials, it is not there to abort.
            Err(StoreError::Unauthorized) if self.check().await.is_ok() => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(classify)
        {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        meta: &ObjectMeta,
    ) -> Result<Option<String>, StoreError> {
        let config =
            PresigningConfig::expires_in(ttl).map_err(|e| StoreError::Other(e.to_string()))?;
        let req = self
            .presigner
            .as_ref()
            .unwrap_or(&self.client)
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(&meta.content_type)
            .response_content_disposition(&meta.content_disposition)
            .presigned(config)
            .await
            .map_err(classify)?;
        Ok(Some(req.uri().to_string()))
    }

    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<super::ByteStream, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|(a, b)| format!("bytes={a}-{b}")))
            .send()
            .await
            .map_err(classify)?;
        let body = out.body;
        let stream = futures::stream::unfold(body, |mut body| async move {
            match body.next().await {
                None => None,
                Some(Ok(bytes)) => Some((Ok(bytes), body)),
                Some(Err(e)) => Some((Err(StoreError::Service(format!("read failed: {e}"))), body)),
            }
        });
        Ok(Box::pin(stream))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(classify)?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }
}

/// The one place AWS SDK errors become store error kinds.
pub fn classify<E: ProvideErrorMetadata>(e: SdkError<E, HttpResponse>) -> StoreError {
    match &e {
        SdkError::TimeoutError(_) => StoreError::Timeout,
        SdkError::DispatchFailure(_) => StoreError::Service("connection failed".into()),
        SdkError::ResponseError(_) => StoreError::Service("malformed response".into()),
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            let status = se.raw().status().as_u16();
            match (code, status) {
                ("NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchUpload", _) | (_, 404) => {
                    StoreError::NotFound
                }
                ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch", _)
                | (_, 401 | 403) => StoreError::Unauthorized,
                (_, s) if s >= 500 => StoreError::Service(format!("status {s}")),
                (c, s) => StoreError::Other(format!("{c} (status {s})")),
            }
        }
        _ => StoreError::Other(e.to_string()),
    }
}
