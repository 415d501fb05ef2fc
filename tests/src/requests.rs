//! Requests of the API as a client makes them: projects, keys, workflows, runs.

use reqwest::Response;
use serde_json::{Value, json};

use crate::{ADMIN_TOKEN, KeyHeader, TestApp, TestProject, parse};

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
