//! The end-to-end test harness: the API in process on a random port, against a fresh database
//! (`db::TestDb`), its own S3 bucket, and the local Redis; the app and its requests live here,
//! workers (in process and real processes) in `workers`, private S3 and Redis servers in
//! `services`, the TCP proxy that cuts a service off in `proxy`.

pub mod bench;
pub mod cluster;
pub mod db;
pub mod process;
mod proxy;
pub mod receiver;
mod services;
mod workers;

pub use proxy::TcpProxy;
pub use services::{RedisServer, S3Server};
pub use workers::{TestWorker, WorkerProcess, worker_binary, worker_command};

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

impl TestApp {
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

    /// Runs the next claimable job of the ledger in this process, as a worker slot would (the
    /// fair claim, the lease, the pipeline, the fenced completion), and returns how it ended:
    /// a test that waits on a job drives it instead of polling a worker's progress.
    pub async fn run_next_job(&self) -> wharf_shared::export::Outcome {
        let ctx = wharf_shared::export::ExportContext {
            pool: self.pool.clone(),
            store: self.store().await,
            worker_id: "test-runner".into(),
            export_ttl: self.settings.export_ttl,
            lease: self.settings.lease,
            heartbeat: wharf_worker::startup::HEARTBEAT,
            project_cap: self.settings.project_concurrency,
            stop: tokio_util::sync::CancellationToken::new(),
            metrics: std::sync::Arc::new(wharf_shared::metrics::Metrics::new()),
            scratch: wharf_shared::export::scratch::ScratchBudget::new(1 << 30),
            audit_ttl: self.settings.audit_ttl,
        };
        wharf_shared::export::run(&ctx, &mut None)
            .await
            .expect("the job ran")
    }

    /// Creates an export, runs it in this process (`run_next_job`), and returns its status as
    /// the API shows it: no worker, no polling.
    pub async fn export_now(&self, key: &str, workflow_id: &str, body: &Value) -> Value {
        let id = self.create_export(key, workflow_id, body).await;
        self.run_next_job().await;
        let res = self.get(&format!("/v1/exports/{id}"), key).await;
        assert_eq!(res.status(), 200, "status of {id}");
        res.json().await.expect("json")
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
