//! Webhooks: which URLs may receive them (no SSRF into the operator's network), how a delivery is
//! signed, and what it carries.

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::domain::schema::printable;
use crate::error::{Error, Result};
use crate::repo::exports::ExportRecord;

pub const EVENTS: [&str; 5] = [
    "export.completed",
    "export.failed",
    "export.expired",
    "import.completed",
    "import.failed",
];

/// Longest URL accepted.
pub const MAX_URL: usize = 2048;

/// Addresses no webhook may reach: unspecified, link-local (169.254/16, fe80::/10, which holds
/// cloud metadata services), multicast, broadcast, documentation and benchmark ranges — even
/// with private addresses allowed.
fn forbidden_always(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18)
                || v4.octets()[0] >= 240
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| forbidden_always(IpAddr::V4(v4)))
        }
    }
}

/// Loopback, private (RFC 1918, CGNAT 100.64/10, unique-local fc00::/7): allowed only with
/// `WHARF_WEBHOOK_ALLOW_PRIVATE`.
fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| private(IpAddr::V4(v4)))
        }
    }
}

/// Why this address may not receive webhooks, if it may not.
pub fn refused_address(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    if forbidden_always(ip) {
        Some("a link-local, metadata or reserved address")
    } else if private(ip) && !allow_private {
        Some("a loopback or private address")
    } else {
        None
    }
}

/// A parsed webhook URL: scheme, host and port.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// Checks a URL's form: http or https, a host, no credentials, no fragment, no NUL.
pub fn parse_url(url: &str) -> Result<Target> {
    let bad = |why: &str| Error::invalid(format!("url: {why}"));
    if url.len() > MAX_URL {
        return Err(bad(&format!("at most {MAX_URL} characters")));
    }
    if url.contains('\0') || url.chars().any(char::is_whitespace) {
        return Err(bad("must not contain spaces or control characters"));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected an http:// or https:// URL"))?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad("only http and https URLs receive webhooks")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not accepted"));
    }
    if url.contains('#') {
        return Err(bad("a fragment is not sent to a server"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("malformed IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("malformed port"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("malformed host")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("malformed port"))?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(bad("a host and port are required"));
    }
    Ok(Target {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Resolves the URL's host and holds every address to the rules (a name that resolves to one
/// refused address is refused: no racing DNS answers). Returns the addresses to connect to, so
/// the request goes where the check looked (no rebinding between check and connect).
pub async fn resolve(url: &str, allow_private: bool) -> Result<(Target, Vec<SocketAddr>)> {
    let target = parse_url(url)?;
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => {
            let lookup = tokio::time::timeout(
                std::time::Duration::from_secs(3),
                tokio::net::lookup_host((target.host.as_str(), target.port)),
            )
            .await;
            match lookup {
                Ok(Ok(found)) => found.collect(),
                _ => {
                    return Err(Error::invalid(format!(
                        "url: the host \"{}\" does not resolve",
                        printable(&target.host)
                    )));
                }
            }
        }
    };
    if addrs.is_empty() {
        return Err(Error::invalid("url: the host has no address"));
    }
    for a in &addrs {
        if let Some(why) = refused_address(a.ip(), allow_private) {
            return Err(Error::invalid(format!(
                "url: the host resolves to {why} ({}), which cannot receive webhooks{}",
                a.ip(),
                if private(a.ip()) {
                    " (WHARF_WEBHOOK_ALLOW_PRIVATE allows it)"
                } else {
                    ""
                }
            )));
        }
    }
    Ok((target, addrs))
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

/// The event's `data`: the export's or import's status, as the API shows it (without the signed
/// link, which a receiver gets by reading the status with its key).
pub fn event_data(r: &ExportRecord) -> Value {
    let status = r.effective_status(chrono::Utc::now());
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
        }),
        crate::domain::states::JobKind::Export => json!({
            "exportId": r.id,
            "workflowId": r.workflow_id,
            "runId": r.run_id,
            "format": r.format,
            "scope": r.scope.as_str(),
            "status": status,
            "createdAt": r.created_at,
            "startedAt": r.started_at,
            "completedAt": r.completed_at,
            "executedAt": r.run_executed_at,
            "attempts": r.attempts,
            "rowCount": r.row_count,
            "sizeBytes": r.size_bytes,
            "sha256": r.sha256,
            "expiresAt": r.expires_at,
            "error": error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_are_held_to_the_rules() {
        let ip = |s: &str| {
            s.parse::<IpAddr>()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        };
        for bad in [
            "169.254.169.254",
            "0.0.0.0",
            "fe80::1",
            "224.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(refused_address(ip(bad), true).is_some(), "{bad}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "100.64.0.1",
            "::1",
            "fd00::1",
        ] {
            assert!(refused_address(ip(private), false).is_some(), "{private}");
            assert!(refused_address(ip(private), true).is_none(), "{private}");
        }
        assert!(refused_address(ip("93.184.216.34"), false).is_none());
        assert!(
            refused_address(
                IpAddr::V6(Ipv6Addr::new(0x2606, 0x2800, 0, 0, 0, 0, 0, 1)),
                false
            )
            .is_none()
        );
    }

    #[test]
    fn urls_are_checked_for_form() {
        assert!(parse_url("https://hooks.example.com/x?y=1").is_ok());
        assert_eq!(
            parse_url("http://[::1]:8080/p").map(|t| t.port).ok(),
            Some(8080)
        );
        for bad in [
            "ftp://x",
            "https://user:pw@x/",
            "https://x/#frag",
            "https://",
            "x",
            "http://x:99999/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures_cover_the_time_and_the_body() {
        let a = signature("whsec_k", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="));
        assert_ne!(a, signature("whsec_k", 1_700_000_001, b"{}"));
        assert_ne!(a, signature("whsec_k", 1_700_000_000, b"{ }"));
        assert_ne!(a, signature("whsec_j", 1_700_000_000, b"{}"));
    }
}
