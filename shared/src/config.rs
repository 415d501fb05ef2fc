//! Settings read from the environment (and an optional `.env` file), once, at start.

use std::time::Duration;

use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("invalid value for {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// One signing secret with the key id that names it in signed URLs.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: SecretString,
}

/// Where artifacts live (`WHARF_STORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    S3,
    /// A local directory: downloads are streamed by the API or redirected to its signed link.
    Dir(std::path::PathBuf),
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::S3 => f.write_str("s3"),
            StoreKind::Dir(p) => write!(f, "dir:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Empty: the AWS default endpoint.
    pub endpoint: Option<String>,
    /// Endpoint put into presigned URLs, when clients reach S3 by another address.
    pub public_endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<SecretString>,
    /// Size of a multipart upload's parts (S3 needs at least 5 MiB for all but the last);
    /// an object smaller than one part is stored with a single PUT.
    pub part_size: usize,
}

/// Parts of 8 MiB: a 1 GiB export is 128 requests, and a worker holds two parts at a time.
pub const S3_PART_SIZE: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: SecretString,
    /// Redis as the queue's transport; `None`: the queue lives in PostgreSQL.
    pub redis_url: Option<String>,
    pub store: StoreKind,
    pub s3: S3Settings,
    pub listen: String,
    pub public_url: String,
    pub admin_token: Option<SecretString>,
    pub signing_keys: Vec<SigningKey>,
    pub export_ttl: Duration,
    pub link_ttl: Duration,
    pub presign_ttl: Duration,
    /// How long an API process trusts a key it verified (revocation is announced at once).
    pub key_cache_ttl: Duration,
    pub worker_concurrency: usize,
    /// `WHARF_WEBHOOK_ALLOW_PRIVATE`: webhook URLs may be on loopback and private addresses
    /// (tests, closed networks); never link-local or metadata addresses.
    pub webhook_allow_private: bool,
    /// `WHARF_METRICS_LISTEN`: where a worker serves `/metrics` and `/healthz` (unset: nowhere).
    pub metrics_listen: Option<String>,
    pub max_run_bytes: u64,
    /// The Redis queue (key prefix) exports travel on.
    pub queue: String,
    /// Exports of one project running at once, across all workers.
    pub project_concurrency: i64,
    /// How long a stopping worker lets running exports finish before handing them back.
    pub shutdown_grace: Duration,
    /// How long a claim lives without a heartbeat before another worker may take it over.
    pub lease: Duration,
    /// How long a QUEUED export may stay unclaimed before the reconciler pushes it again.
    pub requeue_after: Duration,
    /// Attempts an export gets (crashes included) before it is FAILED.
    pub max_attempts: i32,
    /// One NDJSON line, CSV record or JSON-array element.
    pub max_row_bytes: usize,
    /// How long a request body may send nothing before it is dropped with 408.
    pub body_timeout: Duration,
    /// Run uploads of one project at once (per API process).
    pub project_ingests: usize,
    /// `WHARF_PROJECT_READS`: synchronous data reads (`/v4/…/data` pages and streams) of one
    /// project at once, per API process.
    pub project_reads: usize,
    /// Requests per key: a token bucket refilled at `rate` per second holding `burst`;
    /// `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// Exports QUEUED per project before creates are refused.
    pub project_queue_max: i64,
    /// `WHARF_AUTH_FAILURES`: failed authentications a client address may make a minute
    /// before it is answered 429 without a look at its credential; `None` turns it off.
    pub auth_failures_per_minute: Option<u32>,
    /// `WHARF_IMPORT_SCRATCH`: bytes of extracted bundles one worker may hold on disk at once.
    pub import_scratch: u64,
    /// `WHARF_AUDIT_TTL`: how long the audit log keeps an event.
    pub audit_ttl: Duration,
}

/// The shortest `WHARF_ADMIN_TOKEN` accepted: a token that guards project creation and the
/// operators' page must not be guessable.
pub const MIN_ADMIN_TOKEN: usize = 32;

/// `20/min`, or `0` (off).
pub fn parse_per_minute(raw: &str) -> Option<Option<u32>> {
    let raw = raw.trim();
    if raw == "0" {
        return Some(None);
    }
    let n: u32 = raw.strip_suffix("/min")?.trim().parse().ok()?;
    (n > 0).then_some(Some(n))
}

/// `WHARF_RATE_LIMIT` = `RATE/s,BURST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
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

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Settings {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env file is the normal case, not an error.
        let _ = dotenvy::dotenv();
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Builds settings from any name → value lookup (tests pass a map).
    pub fn from_lookup(get: Lookup<'_>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let listen = var("WHARF_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
        let public_url = var("WHARF_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        Ok(Settings {
            database_url: SecretString::from(
                var("DATABASE_URL").ok_or(ConfigError::Missing("DATABASE_URL"))?,
            ),
            redis_url: var("REDIS_URL"),
            store: store_of(&var)?,
            s3: S3Settings {
                endpoint: var("WHARF_S3_ENDPOINT"),
                public_endpoint: var("WHARF_S3_PUBLIC_ENDPOINT"),
                bucket: var("WHARF_S3_BUCKET").unwrap_or_else(|| "wharf-exports".into()),
                region: var("WHARF_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                access_key: var("WHARF_S3_ACCESS_KEY"),
                secret_key: var("WHARF_S3_SECRET_KEY").map(SecretString::from),
                part_size: S3_PART_SIZE,
            },
            listen,
            public_url,
            admin_token: admin_token_of(&var)?,
            signing_keys: parse_signing_keys(
                &var("WHARF_SIGNING_KEYS").ok_or(ConfigError::Missing("WHARF_SIGNING_KEYS"))?,
            )?,
            export_ttl: duration_var(&var, "WHARF_EXPORT_TTL", "7d")?,
            link_ttl: duration_var(&var, "WHARF_LINK_TTL", "1h")?,
            presign_ttl: duration_var(&var, "WHARF_PRESIGN_TTL", "300s")?,
            key_cache_ttl: match var("WHARF_KEY_CACHE_TTL").as_deref().map(str::trim) {
                Some("0") => Duration::ZERO,
                _ => duration_var(&var, "WHARF_KEY_CACHE_TTL", "2s")?,
            },
            metrics_listen: var("WHARF_METRICS_LISTEN").filter(|v| !v.trim().is_empty()),
            webhook_allow_private: allow_private_of(&var)?,
            worker_concurrency: positive(&var, "WHARF_WORKER_CONCURRENCY", 4)?,
            queue: match var("WHARF_QUEUE") {
                Some(q) => q,
                None => default_queue(&var("DATABASE_URL").unwrap_or_default()),
            },
            project_concurrency: positive(&var, "WHARF_PROJECT_CONCURRENCY", 4)?,
            shutdown_grace: duration_var(&var, "WHARF_SHUTDOWN_GRACE", "20s")?,
            lease: duration_var(&var, "WHARF_LEASE", "30s")?,
            requeue_after: duration_var(&var, "WHARF_REQUEUE_AFTER", "10s")?,
            max_attempts: match var("WHARF_MAX_ATTEMPTS") {
                None => 5,
                Some(v) => v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n: &i32| (1..=100).contains(n))
                    .ok_or_else(|| {
                        invalid("WHARF_MAX_ATTEMPTS", "expected an integer from 1 to 100")
                    })?,
            },
            max_row_bytes: match var("WHARF_MAX_ROW_BYTES") {
                None => 1 << 20,
                Some(v) => parse_bytes(&v)
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| *n >= 64)
                    .ok_or_else(|| {
                        invalid(
                            "WHARF_MAX_ROW_BYTES",
                            "expected e.g. 1MiB, 64KiB (at least 64)",
                        )
                    })?,
            },
            body_timeout: duration_var(&var, "WHARF_BODY_TIMEOUT", "30s")?,
            project_ingests: positive(&var, "WHARF_PROJECT_INGESTS", 4)?,
            project_reads: positive(&var, "WHARF_PROJECT_READS", 4)?,
            rate_limit: match var("WHARF_RATE_LIMIT") {
                None => Some(RateLimit {
                    per_second: 50,
                    burst: 100,
                }),
                Some(v) => parse_rate_limit(&v).ok_or_else(|| {
                    invalid(
                        "WHARF_RATE_LIMIT",
                        "expected RATE/s,BURST such as 50/s,100, or 0",
                    )
                })?,
            },
            project_queue_max: positive(&var, "WHARF_PROJECT_QUEUE_MAX", 1_000)?,
            max_run_bytes: match var("WHARF_MAX_RUN_BYTES") {
                None => 1 << 30,
                Some(v) => parse_bytes(&v).ok_or_else(|| {
                    invalid("WHARF_MAX_RUN_BYTES", "expected e.g. 1GiB, 500MB, 1048576")
                })?,
            },
            auth_failures_per_minute: match var("WHARF_AUTH_FAILURES") {
                None => Some(20),
                Some(v) => parse_per_minute(&v).ok_or_else(|| {
                    invalid("WHARF_AUTH_FAILURES", "expected N/min such as 20/min, or 0")
                })?,
            },
            audit_ttl: duration_var(&var, "WHARF_AUDIT_TTL", "90d")?,
            import_scratch: match var("WHARF_IMPORT_SCRATCH") {
                None => 64 << 30,
                Some(v) => parse_bytes(&v)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("WHARF_IMPORT_SCRATCH", "expected e.g. 64GiB, 500MB"))?,
            },
        })
    }
}

/// A variable that must be a positive integer, or its default when unset.
fn positive<T: std::str::FromStr + PartialOrd + Default>(
    var: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > T::default())
            .ok_or_else(|| invalid(name, "expected a positive integer")),
    }
}

/// `WHARF_STORE`: `s3`, `dir:PATH`, or (unset) S3 when an S3 endpoint or bucket is set, else
/// the directory `./wharf-data`.
fn store_of(var: &dyn Fn(&str) -> Option<String>) -> Result<StoreKind, ConfigError> {
    Ok(match var("WHARF_STORE") {
        Some(v) if v.trim() == "s3" => StoreKind::S3,
        Some(v) => match v.trim().strip_prefix("dir:") {
            Some(path) if !path.is_empty() => StoreKind::Dir(path.into()),
            _ => return Err(invalid("WHARF_STORE", "expected s3 or dir:PATH")),
        },
        None if var("WHARF_S3_ENDPOINT").is_some() || var("WHARF_S3_BUCKET").is_some() => {
            StoreKind::S3
        }
        None => StoreKind::Dir("./wharf-data".into()),
    })
}

/// `WHARF_ADMIN_TOKEN`: unset (no admin routes), or at least `MIN_ADMIN_TOKEN` characters.
fn admin_token_of(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, ConfigError> {
    match var("WHARF_ADMIN_TOKEN") {
        Some(t) if t.chars().count() < MIN_ADMIN_TOKEN => Err(invalid(
            "WHARF_ADMIN_TOKEN",
            "must be at least 32 characters (e.g. openssl rand -hex 32)",
        )),
        t => Ok(t.map(SecretString::from)),
    }
}

/// `WHARF_WEBHOOK_ALLOW_PRIVATE`: true or false (default).
fn allow_private_of(var: &dyn Fn(&str) -> Option<String>) -> Result<bool, ConfigError> {
    match var("WHARF_WEBHOOK_ALLOW_PRIVATE").as_deref().map(str::trim) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(_) => Err(invalid(
            "WHARF_WEBHOOK_ALLOW_PRIVATE",
            "expected true or false",
        )),
    }
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

fn duration_var(
    var: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = var(name).unwrap_or_else(|| default.into());
    parse_duration(&raw)
        .ok_or_else(|| invalid(name, "expected a duration such as 90s, 15m, 1h, 7d"))
}

fn parse_signing_keys(raw: &str) -> Result<Vec<SigningKey>, ConfigError> {
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

#[cfg(test)]
mod tests;
