//! Reading settings: a variable's value, default and what it accepts, and the parsers of the
//! forms settings take (durations, sizes, rates, signing keys, the store).

use std::time::Duration;

use secrecy::SecretString;

use super::{
    ConfigError, Lookup, MIN_ADMIN_TOKEN, RateLimit, S3_PART_SIZE, S3Settings, SigningKey,
    StoreKind,
};

/// The lookup, with empty values read as unset.
pub(super) struct Vars<'a>(pub(super) Lookup<'a>);

impl Vars<'_> {
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    pub(super) fn or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.into())
    }

    pub(super) fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    /// The variable read by `parse`, or `default` when unset; `expected` names the form.
    pub(super) fn parsed<T>(
        &self,
        name: &'static str,
        default: T,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse(&v).ok_or_else(|| invalid(name, expected)),
        }
    }

    /// A variable that must be a positive integer, or its default when unset.
    pub(super) fn positive<T: std::str::FromStr + PartialOrd + Default>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        let parse = |v: &str| v.trim().parse().ok().filter(|n| *n > T::default());
        self.parsed(name, default, parse, "expected a positive integer")
    }

    pub(super) fn duration(
        &self,
        name: &'static str,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        parse_duration(&self.or(name, default))
            .ok_or_else(|| invalid(name, "expected a duration such as 90s, 15m, 1h, 7d"))
    }
}

pub(super) const ATTEMPTS: &str = "expected an integer from 1 to 100";
pub(super) fn attempts(v: &str) -> Option<i32> {
    v.trim()
        .parse()
        .ok()
        .filter(|n: &i32| (1..=100).contains(n))
}

pub(super) const ROW_BYTES: &str = "expected e.g. 1MiB, 64KiB (at least 64)";
pub(super) fn row_bytes(v: &str) -> Option<usize> {
    parse_bytes(v)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n >= 64)
}

pub(super) const RUN_BYTES: &str = "expected e.g. 1GiB, 500MB, 1048576";

pub(super) const SCRATCH: &str = "expected e.g. 64GiB, 500MB";
pub(super) fn scratch(v: &str) -> Option<u64> {
    parse_bytes(v).filter(|n| *n > 0)
}

/// `WHARF_RATE_LIMIT`'s default: 50 requests a second, bursts of 100.
pub(super) const RATE: Option<RateLimit> = Some(RateLimit {
    per_second: 50,
    burst: 100,
});
pub(super) const RATE_LIMIT: &str = "expected RATE/s,BURST such as 50/s,100, or 0";

/// `WHARF_KEY_CACHE_TTL`: a duration, `0` turning the cache off.
pub(super) fn key_cache_ttl_of(v: &Vars<'_>) -> Result<Duration, ConfigError> {
    match v.get("WHARF_KEY_CACHE_TTL").as_deref().map(str::trim) {
        Some("0") => Ok(Duration::ZERO),
        _ => v.duration("WHARF_KEY_CACHE_TTL", "2s"),
    }
}

pub(super) fn s3_of(v: &Vars<'_>) -> S3Settings {
    S3Settings {
        endpoint: v.get("WHARF_S3_ENDPOINT"),
        public_endpoint: v.get("WHARF_S3_PUBLIC_ENDPOINT"),
        bucket: v.or("WHARF_S3_BUCKET", "wharf-exports"),
        region: v.or("WHARF_S3_REGION", "us-east-1"),
        access_key: v.get("WHARF_S3_ACCESS_KEY"),
        secret_key: v.get("WHARF_S3_SECRET_KEY").map(SecretString::from),
        part_size: S3_PART_SIZE,
    }
}

/// `20/min`, or `0` (off).
pub fn parse_per_minute(raw: &str) -> Option<Option<u32>> {
    let raw = raw.trim();
    if raw == "0" {
        return Some(None);
    }
    let n: u32 = raw.strip_suffix("/min")?.trim().parse().ok()?;
    (n > 0).then_some(Some(n))
}

/// `50/s,100`, `10/s` (burst = rate), or `0` (off).
pub fn parse_rate_limit(raw: &str) -> Option<Option<RateLimit>> {
    let raw = raw.trim();
    if raw == "0" {
        return Some(None);
    }
    let (rate, burst) = match raw.split_once(',') {
        Some((r, b)) => (r.trim(), Some(b.trim())),
        None => (raw, None),
    };
    let per_second: u32 = rate.strip_suffix("/s")?.trim().parse().ok()?;
    let burst: u32 = match burst {
        Some(b) => b.parse().ok()?,
        None => per_second,
    };
    (per_second > 0 && burst > 0).then_some(Some(RateLimit { per_second, burst }))
}

/// `WHARF_STORE`: `s3`, `dir:PATH`, or (unset) S3 when an S3 endpoint or bucket is set, else
/// the directory `./wharf-data`.
pub(super) fn store_of(v: &Vars<'_>) -> Result<StoreKind, ConfigError> {
    Ok(match v.get("WHARF_STORE") {
        Some(v) if v.trim() == "s3" => StoreKind::S3,
        Some(v) => match v.trim().strip_prefix("dir:") {
            Some(path) if !path.is_empty() => StoreKind::Dir(path.into()),
            _ => return Err(invalid("WHARF_STORE", "expected s3 or dir:PATH")),
        },
        None if v.get("WHARF_S3_ENDPOINT").is_some() || v.get("WHARF_S3_BUCKET").is_some() => {
            StoreKind::S3
        }
        None => StoreKind::Dir("./wharf-data".into()),
    })
}

/// `WHARF_ADMIN_TOKEN`: unset (no admin routes), or at least `MIN_ADMIN_TOKEN` characters.
pub(super) fn admin_token_of(v: &Vars<'_>) -> Result<Option<SecretString>, ConfigError> {
    match v.get("WHARF_ADMIN_TOKEN") {
        Some(t) if t.chars().count() < MIN_ADMIN_TOKEN => Err(invalid(
            "WHARF_ADMIN_TOKEN",
            "must be at least 32 characters (e.g. openssl rand -hex 32)",
        )),
        t => Ok(t.map(SecretString::from)),
    }
}

/// `WHARF_WEBHOOK_ALLOW_PRIVATE`: true or false (default).
pub(super) fn allow_private_of(v: &Vars<'_>) -> Result<bool, ConfigError> {
    match v
        .get("WHARF_WEBHOOK_ALLOW_PRIVATE")
        .as_deref()
        .map(str::trim)
    {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(_) => Err(invalid(
            "WHARF_WEBHOOK_ALLOW_PRIVATE",
            "expected true or false",
        )),
    }
}

pub(super) fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

pub(super) fn parse_signing_keys(raw: &str) -> Result<Vec<SigningKey>, ConfigError> {
    let mut keys: Vec<SigningKey> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kid, secret) = part
            .split_once(':')
            .filter(|(k, s)| !k.is_empty() && !s.is_empty())
            .ok_or_else(|| invalid("WHARF_SIGNING_KEYS", "expected kid:secret[,kid:secret...]"))?;
        if !kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "WHARF_SIGNING_KEYS",
                "a kid may hold only A-Z a-z 0-9 - _",
            ));
        }
        if keys.iter().any(|k| k.kid == kid) {
            return Err(invalid("WHARF_SIGNING_KEYS", "duplicate kid"));
        }
        keys.push(SigningKey {
            kid: kid.into(),
            secret: SecretString::from(secret.to_string()),
        });
    }
    if keys.is_empty() {
        return Err(ConfigError::Missing("WHARF_SIGNING_KEYS"));
    }
    Ok(keys)
}

/// The Redis queue of an installation: named after its database (host, port, name), so two
/// installations sharing one Redis never take each other's jobs.
pub fn default_queue(database_url: &str) -> String {
    use sha2::{Digest, Sha256};
    let (host, port, db) = match database_url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(o) => (
            o.get_host().to_string(),
            o.get_port(),
            o.get_database().unwrap_or("postgres").to_string(),
        ),
        Err(_) => (String::new(), 0, database_url.to_string()),
    };
    let digest = Sha256::digest(format!("{host}:{port}/{db}").as_bytes());
    let name: String = db
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("wharf-exports-{name}-{}", hex::encode(&digest[..4]))
}

/// `90s`, `15m`, `1h`, `7d`, `500ms`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// `1GiB`, `512MiB`, `10MB`, `1024`, `64KiB`.
pub fn parse_bytes(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}
