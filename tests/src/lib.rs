//! The end-to-end test harness: the API in process on a random port, against a fresh database
//! (from `#[sqlx::test]`), its own S3 bucket, and the local Redis.

use std::net::TcpListener;

use reqwest::{Client, Response};
use serde_json::{Value, json};
use sqlx::PgPool;
use wharf_api::startup::Application;
use wharf_shared::config::Settings;

pub const ADMIN_TOKEN: &str = "test-admin-token";

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
    for (k, v) in overrides {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    Settings::from_lookup(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .unwrap_or_else(|e| panic!("test settings are invalid: {e}"))
}

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub pool: PgPool,
    pub bucket: String,
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
    wharf_shared::telemetry::init();
    let bucket = format!(
        "wharf-t-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let mut overrides = overrides.to_vec();
    overrides.push(("WHARF_LISTEN", "127.0.0.1:0"));
    let settings = test_settings(&bucket, &overrides);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a random port");
    let app = Application::build_with(settings, pool.clone(), listener)
        .await
        .expect("the API builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: Client::new(),
        pool,
        bucket,
    }
}

/// How a request presents its key.
#[derive(Debug, Clone, Copy)]
pub enum KeyHeader {
    ApiKey,
    Bearer,
}

impl TestApp {
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
