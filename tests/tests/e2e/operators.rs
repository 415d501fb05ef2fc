//! What operators see: metrics from the API and from a worker, and the ops page (behind HTTP
//! Basic), rendered in a real browser.

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{ADMIN_TOKEN, S3Server, TestApp, TestProject, spawn_app_with};

/// The value of the series `name` exactly as written (labels included), or None.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let res = client.get(url).send().await.expect("scraped");
    assert_eq!(res.status(), 200, "{url}");
    res.text().await.expect("text")
}

/// An export that fails for good: its workflow's rows table is gone (the COPY is refused).
async fn failing_export(app: &TestApp, p: &TestProject) -> (String, Value) {
    let wf = app
        .create_workflow(&p.key, "Doomed", json!([{"name": "n", "type": "integer"}]))
        .await;
    assert_eq!(
        app.post_run(&p.key, &wf, "text/csv", "n\n1\n")
            .await
            .status(),
        201
    );
    let table = format!("rows_{}", uuid::Uuid::parse_str(&wf).expect("id").simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&app.pool)
        .await
        .expect("dropped");
    let done = app
        .export_and_wait(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    assert_eq!(done["status"], "FAILED", "{done}");
    (done["exportId"].as_str().expect("id").to_string(), done)
}

#[tokio::test]
async fn metrics_count_exactly_what_the_api_and_a_worker_did() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_METRICS_LISTEN", "127.0.0.1:0")]).await;
    let worker = app.start_worker().await;
    let wurl = format!("http://{}", worker.metrics_addr().await);
    let (p, wf) = app.one_row_workflow().await;
    let mut bytes = 0.0;
    for format in ["csv", "csv", "csv", "parquet", "parquet"] {
        let done = app
            .export_and_wait(&p.key, &wf, &json!({"format": format}))
            .await;
        assert_eq!(done["status"], "COMPLETED");
        bytes += done["sizeBytes"].as_f64().expect("size");
    }
    failing_export(&app, &p).await;
    worker.idle().await;

    let w = scrape(&app.client, &format!("{wurl}/metrics")).await;
    let exact = [
        (
            "wharf_exports_finished_total{format=\"csv\",status=\"completed\"}",
            3.0,
        ),
        (
            "wharf_exports_finished_total{format=\"parquet\",status=\"completed\"}",
            2.0,
        ),
        (
            "wharf_exports_finished_total{format=\"csv\",status=\"failed\"}",
            1.0,
        ),
        ("wharf_export_duration_seconds_count{format=\"csv\"}", 3.0),
        (
            "wharf_export_duration_seconds_count{format=\"parquet\"}",
            2.0,
        ),
        ("wharf_export_rows_total", 5.0),
        ("wharf_export_bytes_total", bytes),
        ("wharf_queue_pickup_seconds_count", 6.0),
        ("wharf_exports{status=\"queued\"}", 0.0),
        ("wharf_exports{status=\"running\"}", 0.0),
        ("wharf_export_oldest_queued_seconds", 0.0),
    ];
    for (name, want) in exact {
        assert_eq!(
            series(&w, name),
            Some(want),
            "{name} in the worker's metrics:\n{w}"
        );
    }
    let health = scrape(&app.client, &format!("{wurl}/healthz")).await;
    assert!(health.contains("\"status\":\"ok\""), "{health}");

    // The API: requests by route pattern and status, never the raw path.
    for _ in 0..3 {
        assert_eq!(
            app.get(&format!("/v1/workflows/{wf}"), &p.key)
                .await
                .status(),
            200
        );
    }
    let missing = uuid::Uuid::now_v7();
    assert_eq!(
        app.get(&format!("/v1/workflows/{missing}"), &p.key)
            .await
            .status(),
        404
    );
    let a = scrape(&app.client, &app.url("/metrics")).await;
    let route = "route=\"/v1/workflows/{workflowId}\"";
    assert_eq!(
        series(
            &a,
            &format!("wharf_http_requests_total{{{route},status=\"200\"}}")
        ),
        Some(3.0),
        "{a}"
    );
    assert_eq!(
        series(
            &a,
            &format!("wharf_http_requests_total{{{route},status=\"404\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &a,
            &format!("wharf_http_request_duration_seconds_count{{{route}}}")
        ),
        Some(4.0)
    );
    assert!(
        !a.contains(&wf) && !a.contains(&missing.to_string()),
        "no ids in labels"
    );
    assert_eq!(series(&a, "wharf_exports{status=\"queued\"}"), Some(0.0));
    // A queued export shows at once (after the second's cache) on any process.
    drop(worker);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.create_export(&p.key, &wf, &json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let a = scrape(&app.client, &app.url("/metrics")).await;
    assert_eq!(
        series(&a, "wharf_exports{status=\"queued\"}"),
        Some(1.0),
        "{a}"
    );
    assert!(
        series(&a, "wharf_export_oldest_queued_seconds").is_some_and(|s| s >= 1.0),
        "{a}"
    );
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn the_ops_page_needs_the_admin_token_and_names_running_and_failed_exports() {
    let db = TestDb::new().await;
    let s3 = S3Server::start().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_S3_ENDPOINT", &s3.endpoint)]).await;
    let p = app.create_project("ops-acme").await;
    let (failed, failed_status) = {
        let _w = app.start_worker().await;
        failing_export(&app, &p).await
    };
    let code = failed_status["error"]["code"]
        .as_str()
        .expect("a code")
        .to_string();
    let wide = app.wide_workflow(&p.key, 100_000).await;
    s3.pause();
    let worker = app.start_worker().await;
    let running = app
        .create_export(&p.key, &wide, &json!({"format": "csv"}))
        .await;
    app.poll_export(&p.key, &running, "a running export", |s| {
        s["status"] == "IN_PROGRESS" && s["progress"]["rowsWritten"].as_i64().unwrap_or(0) > 0
    })
    .await;

    let get = |auth: Option<String>| {
        let mut rb = app.client.get(app.url("/ops"));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    let res = get(None).await.expect("sent");
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("www-authenticate").is_some());
    assert_eq!(
        get(Some(basic("admin", "wrong")))
            .await
            .expect("sent")
            .status(),
        401
    );
    assert_eq!(
        get(Some(basic("root", ADMIN_TOKEN)))
            .await
            .expect("sent")
            .status(),
        401
    );
    assert_eq!(
        get(Some(format!("Bearer {ADMIN_TOKEN}")))
            .await
            .expect("sent")
            .status(),
        401
    );
    let res = get(Some(basic("admin", ADMIN_TOKEN))).await.expect("sent");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let html = res.text().await.expect("html");
    for needle in [
        running.as_str(),
        failed.as_str(),
        code.as_str(),
        "ops-acme",
        &worker.worker_id,
        "http-equiv=\"refresh\"",
    ] {
        assert!(html.contains(needle), "the page names {needle}");
    }
    assert!(!html.contains("<script"), "no script is needed");

    if let Some(png) = screenshot(&app).await {
        eprintln!("ops page screenshot: {}", png.display());
    }
    s3.resume();
    app.wait_done(&p.key, &running).await;
}

/// Opens /ops in headless Chromium (Debian's package) with the credentials, saves a PNG under
/// the target directory and checks the page rendered: a PNG of real size, and the project's
/// slug in the DOM dump. Chromium is required: the test fails without it.
async fn screenshot(app: &TestApp) -> Option<std::path::PathBuf> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("headless Chromium (apt-get install chromium) for the ops page screenshot");
    let url = app
        .url("/ops")
        .replacen("http://", &format!("http://admin:{ADMIN_TOKEN}@"), 1);
    let out_dir = std::env::temp_dir().join(format!("wharf-ops-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&out_dir).expect("dir");
    let png = std::env::temp_dir().join("wharf-ops.png");
    let (url2, png2, dir2) = (url.clone(), png.clone(), out_dir.clone());
    let chromium = chromium.to_string();
    let (shot, dom) = tokio::task::spawn_blocking(move || {
        let common = |cmd: &mut std::process::Command| {
            cmd.args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--window-size=1366,1000",
            ])
            .arg(format!("--user-data-dir={}", dir2.display()));
        };
        let mut a = std::process::Command::new(&chromium);
        common(&mut a);
        a.arg(format!("--screenshot={}", png2.display())).arg(&url2);
        let shot = a.output();
        let mut b = std::process::Command::new(&chromium);
        common(&mut b);
        b.arg("--dump-dom").arg(&url2);
        (shot, b.output())
    })
    .await
    .expect("joined");
    std::fs::remove_dir_all(&out_dir).ok();
    let shot = shot.expect("chromium ran");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("the screenshot was saved");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        bytes.len() > 20_000,
        "a page, not a blank: {} bytes",
        bytes.len()
    );
    let dom = String::from_utf8_lossy(&dom.expect("chromium ran").stdout).to_string();
    assert!(
        dom.contains("ops-acme"),
        "the DOM holds the project's slug: {dom}"
    );
    assert!(dom.contains("Running exports"), "{dom}");
    Some(png)
}

/// promtool: `WHARF_TEST_PROMTOOL` (scripts/test unpacks Debian's into its cache), else PATH.
fn promtool() -> String {
    std::env::var("WHARF_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

/// `promtool check metrics` of an exposition: its exit status and what it printed.
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool ({}): {e}; scripts/test fetches it (Debian's prometheus package)",
                promtool()
            )
        });
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("to promtool");
    }
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Both processes answer the Prometheus text format 0.0.4 by default, which promtool (the
/// classic parser) accepts with every series typed and described, and OpenMetrics when the
/// scraper asks for it.
#[tokio::test]
async fn metrics_pass_promtool_and_speak_openmetrics_when_asked() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_METRICS_LISTEN", "127.0.0.1:0")]).await;
    let worker = app.start_worker().await;
    let wurl = format!("http://{}/metrics", worker.metrics_addr().await);
    let (p, wf) = app.one_row_workflow().await;
    let done = app
        .export_and_wait(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    assert_eq!(done["status"], "COMPLETED");
    worker.idle().await;
    let api_counters = ["wharf_http_requests_total"].as_slice();
    let worker_counters = [
        "wharf_exports_finished_total",
        "wharf_export_rows_total",
        "wharf_export_bytes_total",
    ];
    for (url, counters) in [
        (app.url("/metrics"), api_counters),
        (wurl, worker_counters.as_slice()),
    ] {
        let res = app.client.get(&url).send().await.expect("scraped");
        assert_eq!(res.status(), 200, "{url}");
        let ct = res.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{url}: {ct}");
        let text = res.text().await.expect("text");
        let (ok, said) = promtool_check(&text);
        assert!(ok, "promtool on {url}: {said}\n{text}");
        assert!(said.trim().is_empty(), "promtool on {url} found: {said}");
        for counter in counters {
            assert!(
                text.contains(&format!("# TYPE {counter} counter"))
                    && text.contains(&format!("# HELP {counter} ")),
                "{url}: {counter} typed and described\n{text}"
            );
        }
        assert!(!text.contains("# EOF"), "{url}");

        let res = app
            .client
            .get(&url)
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )
            .send()
            .await
            .expect("scraped");
        let ct = res.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_string();
        assert!(
            ct.starts_with("application/openmetrics-text"),
            "{url}: {ct}"
        );
        let text = res.text().await.expect("text");
        assert!(text.ends_with("# EOF\n"), "{url}: {text}");
        assert!(text.contains("# TYPE wharf_export_rows counter"), "{text}");
    }
}
