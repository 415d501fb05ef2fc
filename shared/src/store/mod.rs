//! Object storage behind one small trait: S3 (or MinIO), a local directory (the embedded
//! default), and memory (tests of code above the store). `from_settings` picks one.

pub mod dir;
pub mod memory;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

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
    /// The body of a write ended in an error (its producer failed or was stopped).
    #[error("the body of the write ended early")]
    Interrupted,
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
    /// Stores the object from `body`, whole or not at all: no reader ever sees part of it, and
    /// a body that ends in an error stores nothing. How the bytes travel (one request, a
    /// multipart upload, a temporary file) is the store's own business; partial state that a
    /// crash of this process could leave behind is announced to `log` before it exists, so
    /// someone can `abandon` it later. Returns what was stored: its size and sha256.
    async fn write(
        &self,
        key: &str,
        meta: &ObjectMeta,
        body: ByteStream,
        log: &dyn WriteLog,
    ) -> Result<Written, StoreError>;
    /// Removes what an unfinished write of `key` left behind: named by the token it gave its
    /// `WriteLog`, or, with none, what the store finds from the key alone. Idempotent; the
    /// object itself is `delete`d separately.
    async fn abandon(&self, key: &str, token: Option<&str>) -> Result<(), StoreError>;
    /// Idempotent: an absent object is not an error.
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

/// Hears of a write's partial state before the store creates it (an S3 multipart upload, a
/// temporary file), so that state can be found and abandoned if this process dies.
#[async_trait]
pub trait WriteLog: Send + Sync {
    async fn begun(&self, token: &str) -> Result<(), StoreError>;
}

/// For writes whose leftovers nobody needs to track (tests, small objects).
pub struct NoLog;

#[async_trait]
impl WriteLog for NoLog {
    async fn begun(&self, _token: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Writes one in-memory body.
pub async fn write_bytes(
    store: &dyn ObjectStore,
    key: &str,
    meta: &ObjectMeta,
    body: Bytes,
) -> Result<Written, StoreError> {
    let body = futures::stream::once(async move { Ok(body) }).boxed();
    store.write(key, meta, body, &NoLog).await
}

/// What a write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Counts and hashes the bytes of a write as they pass.
#[derive(Default)]
pub struct Tally {
    hasher: Sha256,
    size: u64,
}

impl Tally {
    pub fn add(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    pub fn done(self) -> Written {
        Written {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        }
    }
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
