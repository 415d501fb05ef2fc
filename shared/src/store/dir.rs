//! A local directory as the object store (`WHARF_STORE=dir:PATH`, the embedded default).
//! Objects are files under the root; a write in progress is a file under `.uploads/` (named
//! after its key) and becomes visible with one rename, so no reader ever sees a partial
//! object. There is no download URL:
//! the API streams the file or redirects to its own signed link.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{ByteStream, ObjectMeta, ObjectStore, StoreError, Tally, WriteLog, Written};

const UPLOADS: &str = ".uploads";

pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore { root: root.into() }
    }

    /// The file of `key`; keys are Wharf's own (`<workflow>/<export>.<ext>`), but nothing
    /// outside the root is ever reachable.
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let rel = Path::new(key);
        let plain = rel
            .components()
            .all(|c| matches!(c, Component::Normal(n) if n != UPLOADS));
        if key.is_empty() || !plain {
            return Err(StoreError::Other(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(rel))
    }

    /// The temporary file of a write of `key`: named after the key (its sha256), so what a
    /// dead write left is found from the key alone and the write logs no token (for a small
    /// export that is a statement and a commit fewer). Wharf writes each key once (an
    /// attempt's own key, an upload's own id), so no two writes share the file.
    fn upload_path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        use sha2::Digest;
        self.upload_path(&hex::encode(sha2::Sha256::digest(key.as_bytes())))
    }

    /// A temporary file by name; names are Wharf's own, but only plain names are taken.
    fn upload_path(&self, token: &str) -> Result<PathBuf, StoreError> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::Other(format!("invalid write token {token:?}")));
        }
        Ok(self.root.join(UPLOADS).join(token))
    }

    /// Copies `body` into `tmp`, hashing it, and makes the file durable.
    async fn fill(tmp: &Path, mut body: ByteStream) -> Result<Written, StoreError> {
        let mut out = tokio::fs::File::create(tmp).await.map_err(io)?;
        let mut tally = Tally::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            tally.add(&chunk);
            out.write_all(&chunk).await.map_err(io)?;
        }
        out.sync_all().await.map_err(io)?;
        Ok(tally.done())
    }
}

fn io(e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound,
        std::io::ErrorKind::PermissionDenied => StoreError::Unauthorized,
        _ => StoreError::Service(e.to_string()),
    }
}

#[async_trait]
impl ObjectStore for DirStore {
    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        tokio::fs::create_dir_all(self.root.join(UPLOADS))
            .await
            .map_err(io)
    }

    async fn check(&self) -> Result<(), StoreError> {
        let meta = tokio::fs::metadata(&self.root).await.map_err(io)?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(StoreError::Service(format!(
                "{} is not a directory",
                self.root.display()
            )))
        }
    }

    async fn write(
        &self,
        key: &str,
        _meta: &ObjectMeta,
        body: ByteStream,
        _log: &dyn WriteLog,
    ) -> Result<Written, StoreError> {
        let target = self.path(key)?;
        let dir = target
            .parent()
            .ok_or_else(|| StoreError::Other("object key has no parent".into()))?;
        let tmp = self.upload_path_of(key)?;
        tokio::fs::create_dir_all(self.root.join(UPLOADS))
            .await
            .map_err(io)?;
        let written = match Self::fill(&tmp, body).await {
            Ok(w) => w,
            Err(e) => {
                tokio::fs::remove_file(&tmp).await.ok();
                return Err(e);
            }
        };
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        tokio::fs::rename(&tmp, &target).await.map_err(io)?;
        Ok(written)
    }

    async fn abandon(&self, key: &str, token: Option<&str>) -> Result<(), StoreError> {
        // A token is what an earlier version of this store named its temporary files by.
        let named = token.map(|t| self.upload_path(t)).transpose()?;
        for tmp in [Some(self.upload_path_of(key)?), named]
            .into_iter()
            .flatten()
        {
            match tokio::fs::remove_file(tmp).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    async fn presign_get(
        &self,
        _key: &str,
        _ttl: Duration,
        _meta: &ObjectMeta,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<ByteStream, StoreError> {
        let mut file = tokio::fs::File::open(self.path(key)?).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let (first, last) = range.unwrap_or((0, len.saturating_sub(1)));
        file.seek(std::io::SeekFrom::Start(first))
            .await
            .map_err(io)?;
        let last = last.min(len.saturating_sub(1));
        let take = if len == 0 || first > last {
            0
        } else {
            last - first + 1
        };
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(take), 256 * 1024)
            .map(|r| r.map_err(io));
        Ok(stream.boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(io)? {
                let path = entry.path();
                if entry.file_name() == UPLOADS {
                    continue;
                }
                if entry.file_type().await.map_err(io)?.is_dir() {
                    dirs.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix) {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
