//! API keys: minted with 192 bits of randomness, stored only as SHA-256 hashes, checked against
//! the database; the operator's admin token compared in constant time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::domain::scopes::{self, Scope};
use crate::error::{Error, Result};
use crate::repo::keys::{self, ApiKey};

const KEY_PREFIX: &str = "wh_";

/// A newly minted key: the secret (shown once) and what is stored.
pub struct NewKey {
    pub secret: String,
    pub hash: Vec<u8>,
    /// Enough of the secret to recognise it, not enough to use it.
    pub prefix: String,
}

pub fn mint_key() -> NewKey {
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(raw));
    NewKey {
        hash: hash_key(&secret),
        prefix: secret[..KEY_PREFIX.len() + 6].to_string(),
        secret,
    }
}

pub fn hash_key(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The key a request presented, resolved to its project and scopes.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: uuid::Uuid,
    /// The key's public prefix (`wk_…`), what the audit log names it by.
    pub key_prefix: String,
    pub project_id: uuid::Uuid,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn require(&self, needed: Scope) -> Result<()> {
        if scopes::allows(&self.scopes, needed) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this API key lacks the \"{}\" scope",
                needed.as_str()
            )))
        }
    }
}

/// Keys verified recently, per API process, so a poller's requests do not each cost a query.
/// Revocation stays immediate: `keys::revoke` notifies every process (PostgreSQL `NOTIFY` on
/// `KEYS_CHANNEL`) and each one's listener empties its cache; while a process's listener is
/// not connected, its cache is bypassed. Unknown keys are never cached (nothing to grow on).
pub struct KeyCache {
    entries: RwLock<HashMap<[u8; 32], (Principal, Instant)>>,
    ttl: Duration,
    /// Bumped on every invalidation: a lookup that raced one does not store what it read.
    generation: AtomicU64,
    /// The listener is connected and the cache may answer.
    live: AtomicBool,
}

/// The channel key changes are announced on.
pub const KEYS_CHANNEL: &str = "wharf_keys";

/// Entries a process keeps at most; past it the cache starts over (a flood of distinct valid
/// keys is bounded by the number of keys, but memory should not depend on that).
const MAX_CACHED_KEYS: usize = 50_000;

impl KeyCache {
    /// `ttl` zero: no caching at all.
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(KeyCache {
            entries: RwLock::new(HashMap::new()),
            ttl,
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
        })
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Principal> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.read().ok()?;
        let (principal, at) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| principal.clone())
    }

    fn put(&self, hash: [u8; 32], principal: &Principal, generation: u64) {
        if self.ttl.is_zero() || !self.live.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            // Checked under the lock `invalidate` also takes: no stale insert slips in after it.
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
            entries.insert(hash, (principal.clone(), Instant::now()));
        }
    }

    /// Forgets every key (a key changed somewhere, or the listener lost its connection).
    pub fn invalidate(&self) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }

    /// Keeps the cache honest for the life of the process: listens for key changes, and
    /// bypasses the cache whenever it cannot listen.
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                l.listen(KEYS_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            match listener.await {
                Ok(mut l) => {
                    self.invalidate();
                    self.live.store(true, Ordering::Release);
                    // `None` or an error: the connection dropped, and notifications may have
                    // been missed.
                    while let Ok(Some(_)) = l.try_recv().await {
                        self.invalidate();
                    }
                    self.live.store(false, Ordering::Release);
                    self.invalidate();
                    tracing::warn!(
                        "key change listener disconnected; key cache bypassed until it reconnects"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "key change listener not connected; retrying");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Looks a presented secret up; unknown and revoked keys are both `Unauthorized`.
pub async fn authenticate(pool: &PgPool, cache: &KeyCache, secret: &str) -> Result<Principal> {
    // Well-formed keys only reach the database; anything else cannot match a hash anyway.
    if !secret.starts_with(KEY_PREFIX) || secret.len() > 128 {
        return Err(Error::Unauthorized);
    }
    let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    if let Some(principal) = cache.get(&hash) {
        return Ok(principal);
    }
    let generation = cache.generation.load(Ordering::Acquire);
    let key: ApiKey = keys::find_active(pool, &hash)
        .await?
        .ok_or(Error::Unauthorized)?;
    let stale = key
        .last_used_at
        .is_none_or(|t| chrono::Utc::now() - t > chrono::TimeDelta::seconds(60));
    if stale {
        // lastUsedAt is a hint, not a record: written at most about once a minute, off the
        // request's path.
        let (pool, id) = (pool.clone(), key.id);
        tokio::spawn(async move { keys::touch(&pool, id).await.ok() });
    }
    let principal = Principal {
        key_id: key.id,
        key_prefix: key.prefix.clone(),
        project_id: key.project_id,
        scopes: key.scopes,
    };
    cache.put(hash, &principal, generation);
    Ok(principal)
}

/// Constant-time comparison of a presented admin token with the configured one.
pub fn admin_token_matches(configured: &SecretString, presented: &str) -> bool {
    // Hash both so the comparison time does not depend on the lengths either.
    let a = Sha256::digest(configured.expose_secret().as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_hash_stably() {
        let a = mint_key();
        let b = mint_key();
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), 3 + 48);
        assert_eq!(hash_key(&a.secret), a.hash);
        assert!(a.secret.starts_with(&a.prefix));
    }

    #[test]
    fn admin_token_comparison() {
        let t = SecretString::from("s3cret".to_string());
        assert!(admin_token_matches(&t, "s3cret"));
        assert!(!admin_token_matches(&t, "s3cret "));
        assert!(!admin_token_matches(&t, ""));
    }
}
