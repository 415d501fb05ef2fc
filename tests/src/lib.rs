//! The end-to-end test harness: the API in process on a random port, against a fresh database
//! (`db::TestDb`), its own S3 bucket, and the local Redis. The app lives here; its requests
//! (projects, keys, workflows, runs) in `requests`, exports and their files in `exports`,
//! workers (in process and real processes) in `workers`, private S3 and Redis servers in
//! `services`, the TCP proxy that cuts a service off in `proxy`.

pub mod bench;
pub mod cluster;
pub mod db;
mod exports;
pub mod process;
mod proxy;
pub mod receiver;
mod requests;
mod services;
mod workers;

pub use proxy::TcpProxy;
pub use services::{RedisServer, S3Server};
pub use workers::{TestWorker, WorkerProcess, worker_binary, worker_command};

use std::net::TcpListener;

use reqwest::{Client, Response};
use serde_json::Value;
use sqlx::PgPool;
use wharf_api::startup::Application;
use wharf_shared::config::Settings;
use wharf_shared::store::s3::S3Store;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Settings for a test: local services, a bucket of its own, the given overrides.
pub fn test_settings(bucket: &str, overrides: &[(&str, &str)]) -> Settings {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let mut vars: Vec<(String, String)> = vec![
        (
            "DATABASE_URL".into(),
            env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
        ),
        (
            "REDIS_URL".into(),
            env("REDIS_URL", "redis://127.0.0.1:6379"),
        ),
        (
            "WHARF_S3_ENDPOINT".into(),
            env("WHARF_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
        ),
        (
            "WHARF_S3_ACCESS_KEY".into(),
            env("WHARF_TEST_S3_ACCESS_KEY", "wharf"),
        ),
        (
            "WHARF_S3_SECRET_KEY".into(),
            env("WHARF_TEST_S3_SECRET_KEY", "wharf-secret"),
        ),
        ("WHARF_S3_BUCKET".into(), bucket.into()),
        ("WHARF_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("WHARF_SIGNING_KEYS".into(), "k1:test-secret-one".into()),
    ];
    // The profile under test: scaled (Redis queue, S3 store) by default; embedded
    // (WHARF_TEST_PROFILE=embedded: the queue in PostgreSQL, a local directory per test) is
    // the same suite on the other seams. Tests of S3 itself (overriding WHARF_S3_*) keep S3.
    if embedded_profile() {
        vars.retain(|(name, _)| name != "REDIS_URL");
        if !overrides.iter().any(|(k, _)| k.starts_with("WHARF_S3_")) {
            let dir = std::env::temp_dir().join(format!("wharf-store-{bucket}"));
            vars.push(("WHARF_STORE".into(), format!("dir:{}", dir.display())));
        }
    }
    for (k, v) in overrides {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    let mut settings =
        Settings::from_lookup(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .unwrap_or_else(|e| panic!("test settings are invalid: {e}"));
    // S3's smallest parts, so tests see multipart uploads on modest data.
    settings.s3.part_size = 5 << 20;
    settings
}

/// True when the suite runs on the embedded profile (see `test_settings`).
pub fn embedded_profile() -> bool {
    std::env::var("WHARF_TEST_PROFILE").is_ok_and(|p| p == "embedded")
}

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub pool: PgPool,
    pub bucket: String,
    pub settings: Settings,
}

/// A project as created through the API, with its first (all-scope) key.
#[derive(Debug, Clone)]
pub struct TestProject {
    pub id: String,
    pub key: String,
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, &[]).await
}

pub async fn spawn_app_with(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_on(pool, overrides).await
}

/// Like `spawn_app_with`, for a pool made by the test (e.g. through a proxy).
pub async fn spawn_app_on(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    wharf_shared::telemetry::init_with_default("warn");
    let bucket = format!(
        "wharf-t-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    // Under the run's prefix (scripts/test sets WHARF_TEST_RUN and removes the prefix's keys
    // when the run ends: a push racing a test's end can recreate keys its Drop removed).
    let run = std::env::var("WHARF_TEST_RUN").unwrap_or_else(|_| "local".into());
    let queue = format!("wharf-test:{run}:{}", uuid::Uuid::new_v4().simple());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a random port");
    let public = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    // No rate limit unless a test asks for one: tests poll hard on purpose.
    let mut all: Vec<(&str, &str)> = vec![
        ("WHARF_RATE_LIMIT", "0"),
        // Nor a budget for wrong credentials: tests send them on purpose (auth tests set one).
        ("WHARF_AUTH_FAILURES", "0"),
        ("WHARF_LISTEN", "127.0.0.1:0"),
        ("WHARF_QUEUE", &queue),
        ("WHARF_PUBLIC_URL", &public),
    ];
    all.extend_from_slice(overrides);
    let settings = test_settings(&bucket, &all);
    let app = Application::build_with(settings.clone(), pool.clone(), listener)
        .await
        .expect("the API builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        // Idle connections are dropped before the server's 5 s keep-alive closes them: a
        // request sent on a connection the server is closing at that moment fails with
        // IncompleteMessage (an HTTP race, not Wharf's), and tests that wait seconds between
        // polls met it.
        client: Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("an HTTP client"),
        pool,
        bucket,
        settings,
    }
}

impl TestApp {
    /// Another API process (in this test's runtime) on the same database, store and queue;
    /// returns its address.
    pub async fn second_api(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a random port");
        let app = Application::build_with(self.settings.clone(), self.pool.clone(), listener)
            .await
            .expect("the API builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        address
    }
}

/// How a request presents its key.
#[derive(Debug, Clone, Copy)]
pub enum KeyHeader {
    ApiKey,
    Bearer,
}

impl Drop for TestApp {
    /// Removes the test's directory store and its queue's keys from the shared Redis.
    fn drop(&mut self) {
        if let wharf_shared::config::StoreKind::Dir(dir) = &self.settings.store {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(url) = &self.settings.redis_url {
            bench::remove_redis_keys(url, &format!("{}*", self.settings.queue));
        }
        if matches!(self.settings.store, wharf_shared::config::StoreKind::S3) {
            // A test may have stopped its own S3 server: give up after a few seconds.
            remove_bucket(&self.settings, std::time::Duration::from_secs(5));
        }
    }
}

/// Deletes a test's S3 bucket and what is in it (giving up after `patience`), from a thread of
/// its own (Drop runs inside the test's runtime, which cannot block on itself); best effort, a
/// failure is printed.
pub fn remove_bucket(settings: &Settings, patience: std::time::Duration) {
    let s3 = settings.s3.clone();
    let removed = db::on_own_runtime(move || async move {
        let removal = async { S3Store::new(&s3).await.delete_bucket().await };
        match tokio::time::timeout(patience, removal).await {
            Ok(done) => done.map_err(|e| e.to_string()),
            Err(_) => Err(format!("not done within {} s", patience.as_secs())),
        }
    });
    if let Err(e) = removed {
        eprintln!("test bucket {} not removed: {e}", settings.s3.bucket);
    }
}

pub fn parse(id: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(id).expect("a uuid")
}

/// Asserts the error envelope of API.md and returns (code, message).
pub async fn assert_envelope(res: Response, status: u16) -> (String, String) {
    assert_eq!(res.status().as_u16(), status, "status");
    let header_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .expect("x-request-id header");
    let body: Value = res.json().await.expect("an error body is JSON");
    let obj = body.as_object().expect("object");
    assert_eq!(obj.len(), 2, "only error and meta: {body}");
    let error = body["error"].as_object().expect("error object");
    assert_eq!(error.len(), 2, "error has code and message: {body}");
    assert_eq!(
        body["meta"]["request_id"].as_str(),
        Some(header_id.as_str()),
        "meta.request_id = header"
    );
    (
        error["code"].as_str().expect("code").to_string(),
        error["message"].as_str().expect("message").to_string(),
    )
}
