//! An event as a receiver gets it: the body (`{"id", "type", "createdAt", "data"}`), its two
//! signatures (Wharf's Stripe-style `Wharf-Signature`, and the Standard Webhooks headers that
//! the `standardwebhooks` and `svix` libraries verify), and the one POST that delivers it, to
//! the addresses the rules checked.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::config::Settings;
use crate::error::Error;
use crate::repo::exports::ExportRecord;

/// Per attempt: connect, send, and the receiver's answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A new endpoint's secret: `whsec_` and the base64 of 32 random bytes (the Standard Webhooks
/// key is those bytes; `Wharf-Signature` is keyed by the whole string).
pub fn new_secret() -> String {
    format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()))
}

/// `Wharf-Signature: t=UNIX,v1=HEX`: HMAC-SHA256 with the endpoint's secret over `"<t>.<body>"`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// `webhook-signature: v1,<base64>`: HMAC-SHA256 over `"<id>.<t>.<body>"` keyed by the bytes
/// whose base64 follows `whsec_` (Standard Webhooks). Secrets made before it (`whsec_` and 48
/// hex digits) are valid base64 too, so every endpoint has one.
pub fn standard_signature(secret: &str, id: &str, t: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{t}.").as_bytes());
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The event's `data`: an export's whole status body, as `GET /v1/exports/{id}` shows it (its
/// `statusUrl`, `downloadUrl`, and once COMPLETED a signed `url` valid for `WHARF_LINK_TTL`), or
/// an import's.
pub fn event_data(settings: &Settings, r: &ExportRecord) -> Value {
    let status = r.effective_status(Utc::now());
    let error = r
        .error_code
        .map(|c| json!({"code": c, "message": r.error_message.clone().unwrap_or_default()}));
    match r.kind {
        crate::domain::states::JobKind::Import => json!({
            "importId": r.id,
            "status": status,
            "createdAt": r.created_at,
            "completedAt": r.completed_at,
            "attempts": r.attempts,
            "workflows": r.result.as_ref().and_then(|x| x.0.get("workflows").cloned()).unwrap_or(json!([])),
            "error": error,
            "statusUrl": format!("{}/v1/imports/{}", settings.public_url, r.id),
        }),
        crate::domain::states::JobKind::Export => {
            serde_json::to_value(crate::views::export_dto(settings, r)).unwrap_or(Value::Null)
        }
    }
}

/// One event: `id` is `evt_…` (the same for every endpoint and attempt; receivers dedupe by it).
pub struct Event<'a> {
    pub id: String,
    pub kind: &'a str,
    pub created_at: DateTime<Utc>,
    pub data: Value,
}

/// Why an event got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The URL, or where its host resolves now, may not receive webhooks (the rules of `super`).
    #[error("{0}")]
    Refused(Error),
    /// No connection, or no answer within `TIMEOUT`.
    #[error("{0}")]
    Failed(String),
}

/// POSTs the signed event to `url` (checked again here: a name may resolve elsewhere now than at
/// registration) and returns the receiver's status code.
/// The POST of `body` to the checked URL, pinned to the checked addresses, with both signatures.
fn signed_request(
    target: &super::Target,
    addrs: &[std::net::SocketAddr],
    secret: &str,
    id: &str,
    body: &[u8],
) -> Result<reqwest::RequestBuilder, SendError> {
    let t = Utc::now().timestamp();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // Connect where the check looked, not where a second lookup might point.
        .resolve_to_addrs(&target.host, addrs)
        .build()
        .map_err(|e| SendError::Failed(e.to_string()))?;
    let mut req = client
        .post(target.url.clone())
        .header("content-type", "application/json")
        .header("user-agent", "wharf-webhooks/1")
        .header("wharf-event-id", id)
        .header("wharf-signature", signature(secret, t, body))
        .header("webhook-id", id)
        .header("webhook-timestamp", t.to_string());
    if let Some(sig) = standard_signature(secret, id, t, body) {
        req = req.header("webhook-signature", sig);
    }
    Ok(req)
}

pub async fn send(
    url: &str,
    allow_private: bool,
    secret: &str,
    event: &Event<'_>,
) -> Result<u16, SendError> {
    let (target, addrs) = super::resolve(url, allow_private)
        .await
        .map_err(SendError::Refused)?;
    let body = json!({
        "id": event.id,
        "type": event.kind,
        "createdAt": event.created_at,
        "data": event.data,
    });
    let body = serde_json::to_vec(&body).map_err(|e| SendError::Failed(e.to_string()))?;
    let req = signed_request(&target, &addrs, secret, &event.id, &body)?;
    // The URL as checked (normalized), to the addresses checked.
    let res = req.body(body).send().await.map_err(|e| {
        SendError::Failed(if e.is_timeout() {
            format!("no answer within {} s", TIMEOUT.as_secs())
        } else {
            "could not connect or send".to_string()
        })
    })?;
    Ok(res.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_the_time_and_the_body() {
        let a = signature("whsec_k", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="));
        assert_ne!(a, signature("whsec_k", 1_700_000_001, b"{}"));
        assert_ne!(a, signature("whsec_k", 1_700_000_000, b"{ }"));
        assert_ne!(a, signature("whsec_j", 1_700_000_000, b"{}"));
    }

    #[test]
    fn standard_signatures_match_the_specification() {
        // The example of the Standard Webhooks specification (and of the svix libraries).
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        let new = new_secret();
        assert!(
            standard_signature(&new, "evt_1", 1, b"{}").is_some(),
            "{new}"
        );
        let old = format!("whsec_{}", hex::encode([7u8; 24]));
        assert!(standard_signature(&old, "evt_1", 1, b"{}").is_some());
    }
}
