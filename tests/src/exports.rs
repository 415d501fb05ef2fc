//! Exports in tests: created, waited on (or run at once by "run the next job"), their files
//! and the objects they stored.

use reqwest::Response;
use serde_json::Value;
use wharf_shared::store::s3::S3Store;

use crate::{TestApp, assert_envelope, parse};

impl TestApp {
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
            replica: wharf_shared::export::Replica::from_settings(&self.settings).expect("replica"),
        };
        wharf_shared::export::run(&ctx, &mut wharf_shared::export::ReadConn::default())
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
}
