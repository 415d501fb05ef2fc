//! Object storage behind one small trait: S3 now, a local directory for the standalone profile.

pub mod s3;

use async_trait::async_trait;

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
}
