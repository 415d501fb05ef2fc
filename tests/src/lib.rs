//! The end-to-end test harness: the API in process on a random port, against a fresh database
//! (`db::TestDb`), its own S3 bucket, and the local Redis.

pub mod bench;
pub mod db;
pub mod process;

use std::net::TcpListener;

use reqwest::{Client, Response};
use serde_json::{Value, json};
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

/// An in-process worker on the test's queue; stops when dropped.
pub struct TestWorker {
    stop: tokio_util::sync::CancellationToken,
    pub worker_id: String,
    handle: wharf_worker::startup::Worker,
}

impl TestWorker {
    /// Where the worker serves /metrics (with `WHARF_METRICS_LISTEN` set), once bound.
    pub async fn metrics_addr(&self) -> std::net::SocketAddr {
        for _ in 0..200 {
            if let Some(a) = self.handle.metrics_addr.get() {
                return *a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the worker never served its metrics");
    }

    /// Waits until the worker runs no export (20 s at most).
    pub async fn idle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.handle.running() > 0 {
            assert!(std::time::Instant::now() < deadline, "worker still busy");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Starts a worker in process: heartbeats every 100 ms (and, from `test_settings`, 5 MiB
    /// parts), so tests see progress and multipart uploads on modest data.
    pub async fn start_worker(&self) -> TestWorker {
        self.start_worker_with(|_| {}).await
    }

    /// An in-process worker with test timings: heartbeats every 100 ms, a
    /// reconciler every 200 ms that re-pushes exports unclaimed for 2 s.
    pub async fn start_worker_with(
        &self,
        tweak: impl FnOnce(&mut wharf_worker::startup::Worker),
    ) -> TestWorker {
        let mut worker = wharf_worker::startup::Worker::new(&self.settings, self.pool.clone())
            .await
            .expect("worker");
        worker.ctx.heartbeat = std::time::Duration::from_millis(100);
        worker.reconcile_every = std::time::Duration::from_millis(200);
        worker.requeue_after = std::time::Duration::from_secs(2);
        tweak(&mut worker);
        let worker_id = worker.ctx.worker_id.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let handle = worker.clone();
        tokio::spawn(worker.run(stop.clone()));
        TestWorker {
            stop,
            worker_id,
            handle,
        }
    }

    /// A workflow of `rows` wide rows (≈420 bytes each: n, text), ingested as one streamed run.
    pub async fn wide_workflow(&self, key: &str, rows: u64) -> String {
        use futures::StreamExt;
        let wf = self
            .create_workflow(
                key,
                "Wide",
                json!([{"name": "n", "type": "integer"}, {"name": "text", "type": "string"}]),
            )
            .await;
        let filler = "x".repeat(400);
        let chunks = futures::stream::iter(0..rows.div_ceil(10_000)).map(move |c| {
            let s: String = (c * 10_000..((c + 1) * 10_000).min(rows))
                .map(|n| format!("{{\"n\": {n}, \"text\": \"{filler}\"}}\n"))
                .collect();
            Ok::<_, std::io::Error>(bytes::Bytes::from(s))
        });
        let res = self
            .post_run(
                key,
                &wf,
                "application/x-ndjson",
                reqwest::Body::wrap_stream(chunks),
            )
            .await;
        assert_eq!(res.status(), 201, "ingest");
        wf
    }

    /// Polls an export's status until `pred` holds (30 s at most).
    pub async fn poll_export(
        &self,
        key: &str,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s: Value = self
                .get(&format!("/v1/exports/{id}"), key)
                .await
                .json()
                .await
                .expect("json");
            if pred(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Creates an export and returns its id.
    pub async fn create_export(&self, key: &str, workflow_id: &str, body: &Value) -> String {
        let res = self.post_export(key, workflow_id, body).await;
        assert_eq!(res.status(), 202, "create export");
        res.json::<Value>().await.expect("json")["exportId"]
            .as_str()
            .expect("exportId")
            .to_string()
    }

    /// `/readyz` while a service is down: asserts the 503 envelope and returns its message.
    pub async fn readyz_down(&self) -> String {
        let res = self
            .client
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("sent");
        let (code, msg) = assert_envelope(res, 503).await;
        assert_eq!(code, "SERVICE_UNAVAILABLE");
        msg
    }

    /// The app's object store (S3 or a local directory, as the profile says).
    pub async fn store(&self) -> std::sync::Arc<dyn wharf_shared::store::ObjectStore> {
        wharf_shared::store::from_settings(&self.settings).await
    }

    /// The S3 store, for tests of what only S3 has (object metadata, presigned URLs).
    pub async fn s3_store(&self) -> S3Store {
        S3Store::new(&self.settings.s3).await
    }

    /// The bytes of an object in the test's store.
    pub async fn object(&self, key: &str) -> Vec<u8> {
        use futures::TryStreamExt;
        let stream = self
            .store()
            .await
            .get(key, None)
            .await
            .expect("object exists");
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("object body");
        chunks.concat()
    }

    pub async fn object_keys(&self) -> Vec<String> {
        self.store().await.list("").await.expect("list objects")
    }

    pub async fn post_export(&self, key: &str, workflow_id: &str, body: &Value) -> Response {
        self.post_json(&format!("/v1/workflows/{workflow_id}/exports"), key, body)
            .await
    }

    /// Creates an export and waits until it leaves QUEUED/IN_PROGRESS; returns its status.
    pub async fn export_and_wait(&self, key: &str, workflow_id: &str, body: &Value) -> Value {
        let res = self.post_export(key, workflow_id, body).await;
        let status = res.status();
        let created: Value = res.json().await.expect("json");
        assert_eq!(status, 202, "create export: {created}");
        self.wait_done(key, created["exportId"].as_str().expect("exportId"))
            .await
    }

    /// Polls an export until it is finished (60 s at most).
    pub async fn wait_done(&self, key: &str, export_id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let body: Value = self
                .get(&format!("/v1/exports/{export_id}"), key)
                .await
                .json()
                .await
                .expect("json");
            let s = body["status"].as_str().unwrap_or_default().to_string();
            if !matches!(s.as_str(), "QUEUED" | "IN_PROGRESS") {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "export {export_id} still {s}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// The stored object of a completed export, checked against its status's size and sha256.
    pub async fn export_file(&self, status: &Value) -> Vec<u8> {
        use sha2::Digest;
        assert_eq!(status["status"], "COMPLETED", "{status}");
        let id = parse(status["exportId"].as_str().expect("exportId"));
        let rec = wharf_shared::repo::exports::get_any(&self.pool, id)
            .await
            .expect("query")
            .expect("export");
        let bytes = self
            .object(rec.object_key.as_deref().expect("object key"))
            .await;
        assert_eq!(
            status["sizeBytes"].as_u64(),
            Some(bytes.len() as u64),
            "size matches"
        );
        assert_eq!(
            status["sha256"].as_str(),
            Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str()),
            "sha256 matches"
        );
        bytes
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        how: KeyHeader,
    ) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match (key, how) {
            (None, _) => rb,
            (Some(k), KeyHeader::ApiKey) => rb.header("x-api-key", k),
            (Some(k), KeyHeader::Bearer) => rb.bearer_auth(k),
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.request(reqwest::Method::GET, path, Some(key), KeyHeader::ApiKey)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> Response {
        self.request(reqwest::Method::POST, path, Some(key), KeyHeader::ApiKey)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn create_project(&self, slug: &str) -> TestProject {
        let res = self
            .client
            .post(self.url("/v1/projects"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"slug": slug, "name": format!("Project {slug}")}))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 201, "create project");
        let body: Value = res.json().await.expect("json");
        TestProject {
            id: body["id"].as_str().expect("id").to_string(),
            key: body["apiKey"]["key"].as_str().expect("key").to_string(),
        }
    }

    /// Mints a key with the given scopes in the project of `admin_key`.
    pub async fn create_key(&self, admin_key: &str, scopes: &[&str]) -> (String, String) {
        let res = self
            .post_json("/v1/api-keys", admin_key, &json!({"scopes": scopes}))
            .await;
        assert_eq!(res.status(), 201, "create key");
        let body: Value = res.json().await.expect("json");
        (
            body["id"].as_str().expect("id").into(),
            body["key"].as_str().expect("key").into(),
        )
    }

    pub async fn create_workflow(&self, key: &str, name: &str, schema: Value) -> String {
        let res = self
            .post_json(
                "/v1/workflows",
                key,
                &json!({"name": name, "schema": schema}),
            )
            .await;
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, 201, "create workflow: {body}");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn post_run(
        &self,
        key: &str,
        workflow_id: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.client
            .post(self.url(&format!("/v1/workflows/{workflow_id}/runs")))
            .header("x-api-key", key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Project "acme" with a workflow of one integer field `n` and a run of one row.
    pub async fn one_row_workflow(&self) -> (TestProject, String) {
        self.one_row_workflow_in("acme").await
    }

    /// A new project `slug` with a workflow of one integer field `n` and a one-row run.
    pub async fn one_row_workflow_in(&self, slug: &str) -> (TestProject, String) {
        let p = self.create_project(slug).await;
        let wf = self
            .create_workflow(&p.key, "W", json!([{"name": "n", "type": "integer"}]))
            .await;
        let res = self.post_run(&p.key, &wf, "text/csv", "n\n1\n").await;
        assert_eq!(res.status(), 201, "the run is stored");
        (p, wf)
    }

    /// Rows stored for a workflow (all runs), as JSON objects in `_id` order.
    pub async fn stored_rows(&self, project_id: &str, workflow_id: &str) -> Vec<Value> {
        let wf =
            wharf_shared::repo::workflows::get(&self.pool, parse(project_id), parse(workflow_id))
                .await
                .expect("query")
                .expect("workflow exists");
        wharf_shared::repo::runs::stored_rows_json(&self.pool, &wf)
            .await
            .expect("rows")
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

/// A private s3s-fs process, for tests that stop, pause or restart the object store.
pub struct S3Server {
    pub endpoint: String,
    port: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s3s_fs_binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("WHARF_S3S_FS") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = std::path::Path::new(&home).join(".cache/wharf/s3s/bin/s3s-fs");
    if cached.exists() {
        cached
    } else {
        "s3s-fs".into()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("nothing listens on port {port}");
}

fn signal_pid(sig: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

impl S3Server {
    pub async fn start() -> S3Server {
        let dir = std::env::temp_dir().join(format!("wharf-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut s = S3Server {
            endpoint: String::new(),
            port: free_port(),
            child: None,
            dir: TempDir(dir),
        };
        s.endpoint = format!("http://127.0.0.1:{}", s.port);
        s.restart().await;
        s
    }

    /// Starts the server again on the same port and data (after `kill`).
    pub async fn restart(&mut self) {
        let child = std::process::Command::new(s3s_fs_binary())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                "wharf",
                "--secret-key",
                "wharf-secret",
            ])
            .arg(&self.dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs starts (scripts/services.sh installs it)");
        self.child = Some(child);
        wait_port(self.port).await;
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Freezes the server (SIGSTOP): requests hang until `resume`.
    pub fn pause(&self) {
        signal_pid("-STOP", self.pid());
    }

    pub fn resume(&self) {
        signal_pid("-CONT", self.pid());
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A private redis-server process, for tests that flush, kill or restart Redis.
pub struct RedisServer {
    pub url: String,
    port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = free_port();
        let mut r = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
        };
        r.restart().await;
        r
    }

    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_port(self.port).await;
    }

    pub fn flushall(&self) {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut conn = client.get_connection().expect("connect");
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `wharf-worker` process (the real binary) on the app's queue and database.
pub struct WorkerProcess {
    child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit (after a signal); true if it did within `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `wharf-worker` command with the services of `s`, a clean environment and `database_url`.
pub fn worker_command(
    bin: &std::path::Path,
    s: &Settings,
    database_url: &str,
) -> std::process::Command {
    use secrecy::ExposeSecret;
    let mut cmd = std::process::Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .envs(s.redis_url.as_ref().map(|url| ("REDIS_URL", url)))
        .env("WHARF_QUEUE", &s.queue)
        .env(
            "WHARF_S3_ENDPOINT",
            s.s3.endpoint.clone().unwrap_or_default(),
        )
        .env("WHARF_S3_BUCKET", &s.s3.bucket)
        .env(
            "WHARF_S3_ACCESS_KEY",
            s.s3.access_key.clone().unwrap_or_default(),
        )
        .env(
            "WHARF_S3_SECRET_KEY",
            s.s3.secret_key
                .as_ref()
                .map(|k| k.expose_secret().to_string())
                .unwrap_or_default(),
        )
        .env("WHARF_STORE", s.store.to_string())
        .env("WHARF_SIGNING_KEYS", "k1:test-secret-one");
    cmd
}

/// The `wharf-worker` binary built beside this test binary (`cargo test --workspace` builds it).
pub fn worker_binary() -> std::path::PathBuf {
    process::binary("wharf-worker")
}

impl TestApp {
    pub fn database_url(&self) -> String {
        let db = self
            .pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_string();
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{db}"),
            None => base,
        }
    }

    /// Starts a real worker process with `concurrency` slots.
    pub fn spawn_worker_process(&self, concurrency: usize) -> WorkerProcess {
        self.spawn_worker_process_with(concurrency, &[])
    }

    /// A real worker process with extra environment (e.g. a short `WHARF_LEASE`).
    pub fn spawn_worker_process_with(
        &self,
        concurrency: usize,
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let mut cmd = worker_command(&worker_binary(), &self.settings, &self.database_url());
        cmd.env("WHARF_WORKER_CONCURRENCY", concurrency.to_string())
            .envs(env.iter().copied());
        let (child, log) = process::spawn_logged(cmd, "wharf-worker");
        WorkerProcess { child, log }
    }
}

/// A TCP proxy in front of a service, to cut it off (as if it were down) and restore it.
pub struct TcpProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = std::sync::Arc::new(std::sync::Mutex::new(
            tokio_util::sync::CancellationToken::new(),
        ));
        let (up2, cut2, target) = (up.clone(), cut.clone(), target.to_string());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let token = cut2.lock().map(|t| t.clone()).unwrap_or_default();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        TcpProxy {
            port,
            up,
            cut,
            task,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut t) = self.cut.lock() {
            t.cancel();
            *t = tokio_util::sync::CancellationToken::new();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
