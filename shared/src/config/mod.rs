//! Settings read from the environment (and an optional `.env` file), once, at start.

use std::time::Duration;

use secrecy::SecretString;

mod vars;

use self::vars::*;
pub use self::vars::{
    default_queue, parse_bytes, parse_duration, parse_per_minute, parse_rate_limit,
};

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
    /// `WHARF_READ_DATABASE_URL`: a streaming replica that reads of runs may go to.
    pub read_database_url: Option<SecretString>,
    /// `WHARF_REPLICA_WAIT`: how long a read waits for the replica to replay its run before it
    /// reads the primary instead.
    pub replica_wait: Duration,
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

/// `WHARF_RATE_LIMIT` = `RATE/s,BURST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Settings {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env file is the normal case, not an error.
        let _ = dotenvy::dotenv();
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Builds settings from any name → value lookup (tests pass a map): one line a setting,
    /// its variable, default and what it accepts.
    pub fn from_lookup(get: Lookup<'_>) -> Result<Self, ConfigError> {
        let v = Vars(get);
        let listen = v.or("WHARF_LISTEN", "127.0.0.1:8080");
        let public_url = v
            .get("WHARF_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{listen}"));
        Ok(Settings {
            database_url: SecretString::from(v.required("DATABASE_URL")?),
            read_database_url: v.get("WHARF_READ_DATABASE_URL").map(SecretString::from),
            replica_wait: v.duration("WHARF_REPLICA_WAIT", "5s")?,
            redis_url: v.get("REDIS_URL"),
            store: store_of(&v)?,
            s3: s3_of(&v),
            public_url: public_url.trim_end_matches('/').to_string(),
            listen,
            admin_token: admin_token_of(&v)?,
            signing_keys: parse_signing_keys(&v.required("WHARF_SIGNING_KEYS")?)?,
            export_ttl: v.duration("WHARF_EXPORT_TTL", "7d")?,
            link_ttl: v.duration("WHARF_LINK_TTL", "1h")?,
            presign_ttl: v.duration("WHARF_PRESIGN_TTL", "300s")?,
            key_cache_ttl: key_cache_ttl_of(&v)?,
            metrics_listen: v.get("WHARF_METRICS_LISTEN"),
            webhook_allow_private: allow_private_of(&v)?,
            worker_concurrency: v.positive("WHARF_WORKER_CONCURRENCY", 4)?,
            queue: v
                .get("WHARF_QUEUE")
                .unwrap_or_else(|| default_queue(&v.get("DATABASE_URL").unwrap_or_default())),
            project_concurrency: v.positive("WHARF_PROJECT_CONCURRENCY", 4)?,
            shutdown_grace: v.duration("WHARF_SHUTDOWN_GRACE", "20s")?,
            lease: v.duration("WHARF_LEASE", "30s")?,
            requeue_after: v.duration("WHARF_REQUEUE_AFTER", "10s")?,
            max_attempts: v.parsed("WHARF_MAX_ATTEMPTS", 5, attempts, ATTEMPTS)?,
            max_row_bytes: v.parsed("WHARF_MAX_ROW_BYTES", 1 << 20, row_bytes, ROW_BYTES)?,
            body_timeout: v.duration("WHARF_BODY_TIMEOUT", "30s")?,
            project_ingests: v.positive("WHARF_PROJECT_INGESTS", 4)?,
            project_reads: v.positive("WHARF_PROJECT_READS", 4)?,
            rate_limit: v.parsed("WHARF_RATE_LIMIT", RATE, parse_rate_limit, RATE_LIMIT)?,
            project_queue_max: v.positive("WHARF_PROJECT_QUEUE_MAX", 1_000)?,
            max_run_bytes: v.parsed("WHARF_MAX_RUN_BYTES", 1 << 30, parse_bytes, RUN_BYTES)?,
            auth_failures_per_minute: v.parsed(
                "WHARF_AUTH_FAILURES",
                Some(20),
                parse_per_minute,
                "expected N/min such as 20/min, or 0",
            )?,
            audit_ttl: v.duration("WHARF_AUDIT_TTL", "90d")?,
            import_scratch: v.parsed("WHARF_IMPORT_SCRATCH", 64 << 30, scratch, SCRATCH)?,
        })
    }
}

#[cfg(test)]
mod tests;
