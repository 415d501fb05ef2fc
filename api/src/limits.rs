//! Limits that protect one tenant from another inside an API process: a token bucket per API
//! key, and a cap on the run uploads one project has in flight. Both are per process (a
//! deployment with N API processes allows N times as much); see README, Limits.

use std::collections::HashMap;
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
