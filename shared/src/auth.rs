//! API keys: minted with 192 bits of randomness, stored only as SHA-256 hashes, checked against
//! the database; the operator's admin token compared in constant time.

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

/// Looks a presented secret up; unknown and revoked keys are both `Unauthorized`.
pub async fn authenticate(pool: &PgPool, secret: &str) -> Result<Principal> {
    // Well-formed keys only reach the database; anything else cannot match a hash anyway.
    if !secret.starts_with(KEY_PREFIX) || secret.len() > 128 {
        return Err(Error::Unauthorized);
    }
    let key: ApiKey = keys::find_active(pool, &hash_key(secret))
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
    Ok(Principal {
        key_id: key.id,
        project_id: key.project_id,
        scopes: key.scopes,
    })
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
