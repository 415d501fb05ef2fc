//! An object store in memory, for tests of code above the store.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{ByteStream, ObjectMeta, ObjectStore, StoreError, Tally, WriteLog, Written};

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
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
    async fn write(
        &self,
        key: &str,
        _meta: &ObjectMeta,
        mut body: ByteStream,
        _log: &dyn WriteLog,
    ) -> Result<Written, StoreError> {
        let mut tally = Tally::default();
        let mut whole = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            tally.add(&chunk);
            whole.extend_from_slice(&chunk);
        }
        self.objects
            .lock()
            .map_err(poisoned)?
            .insert(key.into(), Bytes::from(whole));
        Ok(tally.done())
    }
    async fn abandon(&self, _key: &str, _token: Option<&str>) -> Result<(), StoreError> {
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
