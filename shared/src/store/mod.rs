//! Object storage behind one small trait: S3 (or MinIO), a local directory (the embedded
//! default), and memory (tests of code above the store). `from_settings` picks one.

pub mod dir;
pub mod memory;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;

/// What went wrong, by kind, so callers choose retry or abort without knowing the backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found")]
    NotFound,
    #[error("object store refused the credentials")]
    Unauthorized,
    #[error("object store timed out")]
    Timeout,
    #[error("object store unreachable or failing: {0}")]
    Service(String),
    #[error("object store error: {0}")]
    Other(String),
}

impl StoreError {
    /// Transient: worth a retry, and a 503 rather than a 500 for a client.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Timeout | StoreError::Service(_))
    }
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates the bucket if it is absent; a concurrent creator is not an error.
    async fn ensure_bucket(&self) -> Result<(), StoreError>;
    /// Cheap reachability check for readiness probes.
    async fn check(&self) -> Result<(), StoreError>;
    /// Stores a small object in one request.
    async fn put(&self, key: &str, meta: &ObjectMeta, body: Bytes) -> Result<(), StoreError>;
    /// Starts a multipart upload; the headers are stored with the object.
    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, StoreError>;
    /// Uploads part `number` (1-based) and returns its ETag.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, StoreError>;
    /// Completes the upload from its parts' ETags, in order.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<(), StoreError>;
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// A time-limited GET URL whose response carries `meta` as its headers, when the store has
    /// such URLs (S3); `None`: the API serves the bytes itself.
    async fn presign_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
        meta: &ObjectMeta,
    ) -> Result<Option<String>, StoreError>;
    /// The object's bytes, or the inclusive byte range `first..=last` of them, as a stream.
    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<ByteStream, StoreError>;
    /// Keys under a prefix (tests and the janitor's checks; not used on hot paths).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

pub type ByteStream = futures::stream::BoxStream<'static, Result<Bytes, StoreError>>;

/// The store the settings name (`WHARF_STORE`). It touches nothing yet: a process starts
/// while its store is down (the API ensures the bucket or directory; readiness reports it).
pub async fn from_settings(settings: &crate::config::Settings) -> std::sync::Arc<dyn ObjectStore> {
    match &settings.store {
        crate::config::StoreKind::S3 => std::sync::Arc::new(s3::S3Store::new(&settings.s3).await),
        crate::config::StoreKind::Dir(path) => std::sync::Arc::new(dir::DirStore::new(path)),
    }
}

/// Headers stored with an object, so any GET of it carries them.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub content_type: String,
    pub content_disposition: String,
}
