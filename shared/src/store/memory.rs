//! An object store in memory, for tests of code above the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{ByteStream, ObjectMeta, ObjectStore, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
    uploads: Mutex<HashMap<String, Vec<Bytes>>>,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Other("memory store lock poisoned".into())
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn put(&self, key: &str, _meta: &ObjectMeta, body: Bytes) -> Result<(), StoreError> {
        self.objects
            .lock()
            .map_err(poisoned)?
            .insert(key.into(), body);
        Ok(())
    }
    async fn create_multipart(&self, _key: &str, _meta: &ObjectMeta) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.uploads
            .lock()
            .map_err(poisoned)?
            .insert(id.clone(), Vec::new());
        Ok(id)
    }
    async fn upload_part(
        &self,
        _key: &str,
        id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let mut uploads = self.uploads.lock().map_err(poisoned)?;
        let parts = uploads.get_mut(id).ok_or(StoreError::NotFound)?;
        let at = usize::try_from(number - 1).map_err(|_| StoreError::Other("part 0".into()))?;
        if parts.len() <= at {
            parts.resize(at + 1, Bytes::new());
        }
        parts[at] = body;
        Ok(number.to_string())
    }
    async fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        etags: &[String],
    ) -> Result<(), StoreError> {
        let parts = self
            .uploads
            .lock()
            .map_err(poisoned)?
            .remove(id)
            .ok_or(StoreError::NotFound)?;
        let whole: Vec<u8> = parts
            .iter()
            .take(etags.len())
            .flat_map(|p| p.iter().copied())
            .collect();
        self.objects
            .lock()
            .map_err(poisoned)?
            .insert(key.into(), Bytes::from(whole));
        Ok(())
    }
    async fn abort_multipart(&self, _key: &str, id: &str) -> Result<(), StoreError> {
        self.uploads.lock().map_err(poisoned)?.remove(id);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects.lock().map_err(poisoned)?.remove(key);
        Ok(())
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
        let body = self
            .objects
            .lock()
            .map_err(poisoned)?
            .get(key)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        let len = body.len() as u64;
        let body = match range {
            Some((first, last)) if first < len => {
                body.slice(first as usize..=(last.min(len - 1)) as usize)
            }
            Some(_) => Bytes::new(),
            None => body,
        };
        Ok(futures::stream::iter([Ok(body)]).boxed())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects
            .lock()
            .map_err(poisoned)?
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}
