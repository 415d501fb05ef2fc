//! Self-authenticating download links: HMAC-SHA256 over the export id, workflow id, format and
//! expiry, with the secret named by `kid`. The first configured key signs; all verify, so
//! secrets rotate without breaking links issued under the previous one.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use uuid::Uuid;

use crate::config::SigningKey;

type HmacSha256 = Hmac<Sha256>;

/// What a link is bound to: change any part and the signature no longer matches.
#[derive(Debug, Clone, Copy)]
pub struct LinkClaims<'a> {
    pub export_id: Uuid,
    pub workflow_id: Uuid,
    pub format: &'a str,
    pub expires: i64,
    /// One file of a dataset (its path in the manifest); None: the export itself.
    pub path: Option<&'a str>,
}

fn mac(key: &SigningKey, c: &LinkClaims<'_>) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(key.secret.expose_secret().as_bytes()).ok()?;
    mac.update(
        format!(
            "{}\n{}\n{}\n{}",
            c.export_id, c.workflow_id, c.format, c.expires
        )
        .as_bytes(),
    );
    if let Some(path) = c.path {
        mac.update(format!("\npath={path}").as_bytes());
    }
    Some(mac)
}

/// Hex signature with `key`.
pub fn sign(key: &SigningKey, c: &LinkClaims<'_>) -> String {
    mac(key, c)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// The signed file URL and when it stops working.
pub fn signed_url(
    public_url: &str,
    keys: &[SigningKey],
    c: &LinkClaims<'_>,
) -> Option<(String, DateTime<Utc>)> {
    let key = keys.first()?;
    let expires_at = DateTime::from_timestamp(c.expires, 0)?;
    let path = c.path.map_or(String::new(), |p| {
        format!("path={}&", crate::domain::dataset::percent_encode(p))
    });
    let url = format!(
        "{public_url}/v1/exports/{}/file?{path}expires={}&kid={}&sig={}",
        c.export_id,
        c.expires,
        key.kid,
        sign(key, c)
    );
    Some((url, expires_at))
}

/// Seconds a link's expiry may lie beyond now + `WHARF_LINK_TTL` (clocks of API processes).
pub const CLOCK_SKEW_SECS: i64 = 5;

/// The printed form of a link's parts: `expires` plain decimal digits (no sign, no leading
/// zero), `sig` 64 lowercase hex digits. Any other spelling of the same values is refused.
pub fn is_canonical(expires: &str, sig: &str) -> bool {
    let plain_decimal = !expires.is_empty()
        && expires.len() <= 19
        && expires.bytes().all(|b| b.is_ascii_digit())
        && (expires == "0" || !expires.starts_with('0'));
    let lower_hex = sig.len() == 64
        && sig
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    plain_decimal && lower_hex
}

/// Constant-time check of `sig` (hex) under the key named `kid`. Expiry is the caller's.
pub fn verify(keys: &[SigningKey], kid: &str, sig: &str, c: &LinkClaims<'_>) -> bool {
    let Some(key) = keys.iter().find(|k| k.kid == kid) else {
        return false;
    };
    let Ok(raw) = hex::decode(sig) else {
        return false;
    };
    mac(key, c).is_some_and(|m| m.verify_slice(&raw).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn key(kid: &str, secret: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            secret: SecretString::from(secret.to_string()),
        }
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let keys = [key("new", "s2"), key("old", "s1")];
        let c = LinkClaims {
            export_id: Uuid::nil(),
            workflow_id: Uuid::max(),
            format: "csv",
            expires: 100,
            path: None,
        };
        let sig = sign(&keys[1], &c);
        assert!(verify(&keys, "old", &sig, &c));
        assert!(!verify(&keys, "new", &sig, &c));
        assert!(!verify(
            &keys,
            "old",
            &sig,
            &LinkClaims {
                format: "json",
                ..c
            }
        ));
        assert!(!verify(
            &keys,
            "old",
            &sig,
            &LinkClaims { expires: 101, ..c }
        ));
        assert!(!verify(
            &keys,
            "old",
            &sig,
            &LinkClaims {
                workflow_id: Uuid::nil(),
                ..c
            }
        ));
        assert!(!verify(&keys, "gone", &sig, &c));
        // A dataset file's link signs its path: another file's path does not verify.
        let file = LinkClaims {
            path: Some("country=FR/part-00000.csv"),
            ..c
        };
        let file_sig = sign(&keys[0], &file);
        assert!(verify(&keys, "new", &file_sig, &file));
        assert!(!verify(&keys, "new", &file_sig, &c));
        let other = LinkClaims {
            path: Some("country=DE/part-00000.csv"),
            ..c
        };
        assert!(!verify(&keys, "new", &file_sig, &other));
        assert!(!verify(&keys, "old", "zz", &c));
    }

    #[test]
    fn only_the_printed_form_is_canonical() {
        let sig = "ab".repeat(32);
        assert!(is_canonical("1700000000", &sig));
        assert!(!is_canonical("01700000000", &sig));
        assert!(!is_canonical("+1700000000", &sig));
        assert!(!is_canonical("1700000000", &sig.to_uppercase()));
        assert!(!is_canonical("1700000000", &sig[..62]));
        assert!(!is_canonical("", &sig));
    }
}
