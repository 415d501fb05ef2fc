//! Webhooks: which URLs may receive them (no SSRF into the operator's network); how an event is
//! signed, what it carries and how it is sent are `event`.

mod event;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use event::{
    Event, SendError, TIMEOUT, event_data, new_secret, send, signature, standard_signature,
};

use crate::domain::schema::printable;
use crate::error::{Error, Result};

pub const EVENTS: [&str; 5] = [
    "export.completed",
    "export.failed",
    "export.expired",
    "import.completed",
    "import.failed",
];

/// Longest URL accepted.
pub const MAX_URL: usize = 2048;

/// Metadata services outside link-local: Oracle Cloud's 192.0.0.192, Alibaba Cloud's
/// 100.100.100.200, AWS's IPv6 endpoint fd00:ec2::254. Never reachable, private or not.
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(192, 0, 0, 192),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// The IPv4 addresses an IPv6 address carries inside it, which a network may route it to:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, the deprecated
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, and
/// Teredo `2001::/32` (its server, and its client with the bits inverted).
fn embedded_v4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => vec![last],
        [0, 0, 0, 0, 0, 0, _, _] if !v6.is_loopback() && !v6.is_unspecified() => vec![last],
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![last],
        [0x64, 0xff9b, 1, ..] => vec![last],
        [0x2002, ..] => vec![Ipv4Addr::new(o[2], o[3], o[4], o[5])],
        [0x2001, 0, ..] => vec![
            Ipv4Addr::new(o[4], o[5], o[6], o[7]),
            Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]),
        ],
        _ => Vec::new(),
    }
}

/// Addresses no webhook may reach: unspecified, link-local (169.254/16, fe80::/10, which holds
/// cloud metadata services), metadata services elsewhere, IETF protocol assignments
/// (192.0.0/24), multicast, broadcast, documentation and benchmark ranges — even with private
/// addresses allowed — and any IPv6 address whose embedded IPv4 is one of them.
fn forbidden_always(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || METADATA_V4.contains(&v4)
                || o[0] == 0
                || (o[0], o[1], o[2]) == (192, 0, 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || METADATA_V6.contains(&v6)
                || embedded_v4(v6)
                    .into_iter()
                    .any(|v4| forbidden_always(IpAddr::V4(v4)))
        }
    }
}

/// Loopback, private (RFC 1918, CGNAT 100.64/10, unique-local fc00::/7), and IPv6 addresses
/// embedding one: allowed only with `WHARF_WEBHOOK_ALLOW_PRIVATE`.
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
                || embedded_v4(v6)
                    .into_iter()
                    .any(|v4| private(IpAddr::V4(v4)))
        }
    }
}

/// Why this address may not receive webhooks, if it may not.
/// The events an endpoint asks for: 1 to all of `EVENTS`, each once (repeats dropped).
pub fn events_of(asked: &[String]) -> Result<Vec<String>> {
    if asked.is_empty() || asked.len() > EVENTS.len() {
        return Err(Error::invalid(format!(
            "events: 1 to {} of {}",
            EVENTS.len(),
            EVENTS.join(", ")
        )));
    }
    let mut events = Vec::with_capacity(asked.len());
    for e in asked {
        if !EVENTS.contains(&e.as_str()) {
            return Err(Error::invalid(format!(
                "events: \"{}\" is not an event ({})",
                printable(e),
                EVENTS.join(", ")
            )));
        }
        if !events.contains(e) {
            events.push(e.clone());
        }
    }
    Ok(events)
}

pub fn refused_address(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    if forbidden_always(ip) {
        Some("a link-local, metadata or reserved address")
    } else if private(ip) && !allow_private {
        Some("a loopback or private address")
    } else {
        None
    }
}

/// A webhook URL as the HTTP client reads it (WHATWG parsing: the host percent-decoded,
/// lowercased, IDNA-mapped, numeric IPv4 forms such as `0x7f.1` read as addresses), so the
/// host checked is the host connected to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The normalized URL: what deliveries post to.
    pub url: url::Url,
    /// The normalized host (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
    /// The host when it is an address literal.
    ip: Option<IpAddr>,
}

/// Checks a URL's form: http or https, a host, no credentials, no fragment, no NUL.
pub fn parse_url(raw: &str) -> Result<Target> {
    let bad = |why: &str| Error::invalid(format!("url: {why}"));
    if raw.len() > MAX_URL {
        return Err(bad(&format!("at most {MAX_URL} characters")));
    }
    if raw.contains('\0') || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http and https URLs receive webhooks"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not accepted"));
    }
    if url.fragment().is_some() {
        return Err(bad("a fragment is not sent to a server"));
    }
    let port = url
        .port_or_known_default()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("a host and port are required"))?;
    let (host, ip) = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => (d.to_string(), None),
        Some(url::Host::Ipv4(v4)) => (v4.to_string(), Some(IpAddr::V4(v4))),
        Some(url::Host::Ipv6(v6)) => (v6.to_string(), Some(IpAddr::V6(v6))),
        _ => return Err(bad("a host and port are required")),
    };
    Ok(Target {
        url,
        host,
        port,
        ip,
    })
}

/// Resolves the URL's normalized host and holds every address to the rules (a name that
/// resolves to one refused address is refused: no racing DNS answers). Returns the addresses
/// to connect to, so the request goes where the check looked (no rebinding between check and
/// connect). A refusal says what kind of address it found, never the address itself.
pub async fn resolve(raw: &str, allow_private: bool) -> Result<(Target, Vec<SocketAddr>)> {
    let target = parse_url(raw)?;
    let addrs: Vec<SocketAddr> = match target.ip {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => {
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
            let allowed = !forbidden_always(a.ip()) && private(a.ip());
            return Err(Error::invalid(format!(
                "url: the host is or resolves to {why}, which cannot receive webhooks{}",
                if allowed {
                    " (WHARF_WEBHOOK_ALLOW_PRIVATE allows it)"
                } else {
                    ""
                }
            )));
        }
    }
    Ok((target, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn ipv4_inside_ipv6_and_metadata_outside_link_local_are_refused() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        for bad in [
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::1",
            // Teredo: client 127.0.0.1 with its bits inverted.
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ] {
            assert!(refused_address(ip(bad), false).is_some(), "{bad}");
        }
        for metadata in [
            "192.0.0.192",
            "100.100.100.200",
            "fd00:ec2::254",
            "64:ff9b::c000:c0",
        ] {
            assert!(
                refused_address(ip(metadata), true).is_some(),
                "{metadata}, private addresses allowed"
            );
        }
        assert!(refused_address(ip("2002:5db8:d822::1"), false).is_none());
    }

    #[test]
    fn the_host_checked_is_the_host_the_client_reads() {
        let host = |u: &str| parse_url(u).map(|t| (t.host, t.ip)).ok();
        assert_eq!(
            host("http://wharf%2eattack.test:8080/"),
            Some(("wharf.attack.test".into(), None))
        );
        let loopback = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        for numeric in [
            "http://0x7f.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
        ] {
            assert_eq!(host(numeric).and_then(|(_, ip)| ip), loopback, "{numeric}");
        }
        assert_eq!(
            host("http://[::127.0.0.1]/").and_then(|(_, ip)| ip),
            Some("::7f00:1".parse().expect("ip"))
        );
        assert_eq!(
            host("http://EXAMPLE.com./x").map(|(h, _)| h),
            Some("example.com.".into())
        );
    }

    #[tokio::test]
    async fn a_refusal_does_not_echo_the_address() {
        let err = resolve("http://localhost:9/", false).await.err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("loopback or private"), "{text}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("::1"),
            "{text}"
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
}
