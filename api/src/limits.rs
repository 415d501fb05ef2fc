//! Limits that protect one tenant from another inside an API process: a token bucket per API
//! key, and a cap on the run uploads one project has in flight. Both are per process (a
//! deployment with N API processes allows N times as much); see README, Limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use wharf_shared::Error;
use wharf_shared::config::RateLimit;

/// `WHARF_RATE_LIMIT`: a token bucket per key id.
#[derive(Clone)]
pub struct KeyLimiter {
    inner: Option<Arc<DefaultKeyedRateLimiter<uuid::Uuid>>>,
}

impl KeyLimiter {
    pub fn new(limit: Option<RateLimit>) -> Self {
        let inner = limit.and_then(|l| {
            let rate = NonZeroU32::new(l.per_second)?;
            let burst = NonZeroU32::new(l.burst)?;
            Some(Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )))
        });
        KeyLimiter { inner }
    }

    /// Takes one token of `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: uuid::Uuid) -> Result<(), Error> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::RateLimited {
                message: "too many requests for this API key (WHARF_RATE_LIMIT); retry after the time in Retry-After".into(),
                retry_after: wait.as_secs_f64().ceil() as u64,
            }
        })
    }

    /// Forgets buckets that are full again (called now and then, so memory stays bounded).
    pub fn shrink(&self) {
        if let Some(l) = &self.inner {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// `WHARF_AUTH_FAILURES`: failed authentications per client address, a token bucket of N
/// refilled over a minute. A wrong credential takes a token; an address with less than one
/// left is answered 429 before its next credential is looked at (no database lookup, no hash
/// compared) until one has grown back. IPv6 clients count by their /64, the block one host is
/// given.
#[derive(Clone, Default)]
pub struct AuthFailures {
    inner: Option<Arc<FailureBuckets>>,
}

struct FailureBuckets {
    per_minute: f64,
    /// Tokens left per address, as of when they were last counted.
    buckets: Mutex<HashMap<IpAddr, (f64, std::time::Instant)>>,
}

impl FailureBuckets {
    /// The address's tokens now (refilled since they were counted), at most `per_minute`.
    fn tokens(&self, at: (f64, std::time::Instant), now: std::time::Instant) -> f64 {
        let grown = now.duration_since(at.1).as_secs_f64() * self.per_minute / 60.0;
        (at.0 + grown).min(self.per_minute)
    }
}

impl AuthFailures {
    pub fn new(per_minute: Option<u32>) -> Self {
        let inner = per_minute.filter(|n| *n > 0).map(|n| {
            Arc::new(FailureBuckets {
                per_minute: f64::from(n),
                buckets: Mutex::default(),
            })
        });
        AuthFailures { inner }
    }

    /// Before a credential from `client` is looked at: 429 while the address has no token.
    pub fn admit(&self, client: Option<IpAddr>) -> Result<(), Error> {
        let (Some(inner), Some(ip)) = (&self.inner, client) else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let buckets = inner.buckets.lock().map_err(|_| poisoned())?;
        let Some(at) = buckets.get(&host(ip)) else {
            return Ok(());
        };
        let tokens = inner.tokens(*at, now);
        if tokens >= 1.0 {
            return Ok(());
        }
        let wait = (1.0 - tokens) * 60.0 / inner.per_minute;
        Err(Error::RateLimited {
            message: "too many failed authentications from this address (WHARF_AUTH_FAILURES); \
                      retry after the time in Retry-After"
                .into(),
            retry_after: wait.ceil().max(1.0) as u64,
        })
    }

    /// A credential presented from `client` was wrong: it takes a token.
    pub fn failed(&self, client: Option<IpAddr>) {
        let (Some(inner), Some(ip)) = (&self.inner, client) else {
            return;
        };
        let now = std::time::Instant::now();
        if let Ok(mut buckets) = inner.buckets.lock() {
            let at = buckets
                .get(&host(ip))
                .copied()
                .unwrap_or((inner.per_minute, now));
            let left = (inner.tokens(at, now) - 1.0).max(0.0);
            buckets.insert(host(ip), (left, now));
        }
    }

    /// Forgets addresses whose buckets are full again (memory bounded by those failing now).
    pub fn shrink(&self) {
        if let Some(inner) = &self.inner {
            let now = std::time::Instant::now();
            if let Ok(mut buckets) = inner.buckets.lock() {
                buckets.retain(|_, at| inner.tokens(*at, now) < inner.per_minute);
            }
        }
    }
}

/// The address a client is counted by: IPv4 as it is (an IPv4-mapped IPv6 address as its IPv4),
/// IPv6 by its /64.
fn host(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn poisoned() -> Error {
    Error::Unexpected(anyhow::anyhow!("auth failure buckets poisoned"))
}

/// `WHARF_PROJECT_INGESTS`: run uploads of one project at once.
#[derive(Clone)]
pub struct IngestSlots {
    max: usize,
    /// What a slot is for, and the setting that sizes it (for the 429's message).
    what: &'static str,
    setting: &'static str,
    busy: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
}

/// Holds one upload slot of a project until dropped.
pub struct IngestSlot {
    project: uuid::Uuid,
    busy: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
}

impl IngestSlots {
    pub fn new(max: usize) -> Self {
        Self::named(max, "run uploads", "WHARF_PROJECT_INGESTS")
    }

    pub fn named(max: usize, what: &'static str, setting: &'static str) -> Self {
        IngestSlots {
            max,
            what,
            setting,
            busy: Arc::default(),
        }
    }

    pub fn acquire(&self, project: uuid::Uuid) -> Result<IngestSlot, Error> {
        let mut busy = self
            .busy
            .lock()
            .map_err(|_| Error::Unexpected(anyhow::anyhow!("ingest slots poisoned")))?;
        let n = busy.entry(project).or_insert(0);
        if *n >= self.max {
            return Err(Error::RateLimited {
                message: format!(
                    "this project already has {} {} in progress ({}); retry when one ends",
                    self.max, self.what, self.setting
                ),
                retry_after: 5,
            });
        }
        *n += 1;
        Ok(IngestSlot {
            project,
            busy: self.busy.clone(),
        })
    }
}

impl Drop for IngestSlot {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.busy.lock()
            && let Some(n) = busy.get_mut(&self.project)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&self.project);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_project_and_come_back() {
        let slots = IngestSlots::new(2);
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let one = slots.acquire(a);
        let two = slots.acquire(a);
        assert!(one.is_ok() && two.is_ok());
        assert!(matches!(slots.acquire(a), Err(Error::RateLimited { .. })));
        assert!(slots.acquire(b).is_ok());
        drop(one);
        assert!(slots.acquire(a).is_ok());
    }

    #[test]
    fn failed_authentications_block_an_address_past_its_budget() {
        let failures = AuthFailures::new(Some(3));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(failures.admit(Some(a)).is_ok());
            failures.failed(Some(a));
        }
        // The budget is spent: the address is blocked before a fourth credential is looked at.
        match failures.admit(Some(a)) {
            Err(Error::RateLimited { retry_after, .. }) => assert!((1..=20).contains(&retry_after)),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(
            failures.admit(Some(b)).is_ok(),
            "another address is not blocked"
        );
        // One /64 is one client.
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let same: IpAddr = "2001:db8::ffff:2".parse().expect("ip");
        for _ in 0..3 {
            failures.failed(Some(v6));
        }
        assert!(failures.admit(Some(same)).is_err());
        assert!(AuthFailures::new(None).admit(Some(a)).is_ok());
    }

    #[test]
    fn buckets_refuse_past_the_burst() {
        let limiter = KeyLimiter::new(Some(RateLimit {
            per_second: 1,
            burst: 3,
        }));
        let key = uuid::Uuid::now_v7();
        for _ in 0..3 {
            assert!(limiter.check(key).is_ok());
        }
        let err = limiter.check(key);
        assert!(matches!(
            err,
            Err(Error::RateLimited { retry_after: 1, .. })
        ));
        assert!(limiter.check(uuid::Uuid::now_v7()).is_ok());
        assert!(KeyLimiter::new(None).check(key).is_ok());
    }
}
