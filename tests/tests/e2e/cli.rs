//! The `wharf` CLI, as a user runs it: the built binary against the real API.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};
use sha2::Digest;
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, spawn_app};

async fn wharf(app: &TestApp, key: &str, args: &[&str], dir: &Path) -> Output {
    let bin = wharf_tests::process::binary("wharf");
    let (url, key, dir) = (app.address.clone(), key.to_string(), dir.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(&args)
            .current_dir(dir)
            .env("WHARF_URL", url)
            .env("WHARF_API_KEY", key)
            .output()
    })
    .await
    .expect("joined")
    .expect("the wharf binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn sha(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("file")))
}

fn scratch() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("wharf-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[tokio::test]
async fn export_builds_downloads_and_verifies_and_an_interrupted_download_resumes() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _worker = app.start_worker().await;
    let dir = scratch();
    let p = app.create_project("cli").await;
    let wf = app
        .create_workflow(
            &p.key,
            "Products",
            json!([{"name": "n", "type": "integer"}, {"name": "t", "type": "string", "nullable": true}]),
        )
        .await;
    let rows: String = (0..5000)
        .map(|i| format!("{{\"n\": {i}, \"t\": \"row {i}\"}}\n"))
        .collect();
    std::fs::write(dir.join("rows.ndjson"), rows).expect("write");

    let out = wharf(&app, &p.key, &["ingest", &wf, "rows.ndjson"], &dir).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("5000 rows"),
        "{}",
        text(&out.stdout)
    );
    let size = std::fs::metadata(dir.join("rows.ndjson"))
        .expect("size")
        .len();
    assert!(
        text(&out.stdout).contains(&format!("uploaded {size} of {size} bytes (100 %)")),
        "progress off a terminal: {}",
        text(&out.stdout)
    );
    let out = wharf(&app, &p.key, &["workflows"], &dir).await;
    assert!(text(&out.stdout).contains(&wf) && text(&out.stdout).contains("Products"));

    let out = wharf(
        &app,
        &p.key,
        &[
            "export", &wf, "--format", "csv", "--filter", "n:gte:10", "--sort", "n", "--order",
            "desc", "-o", "out.csv",
        ],
        &dir,
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    assert!(
        stdout.contains("created") && stdout.contains("COMPLETED"),
        "plain lines off a terminal: {stdout}"
    );
    assert!(
        stdout.contains("downloaded ") && stdout.contains("bytes (100 %)"),
        "download progress off a terminal: {stdout}"
    );
    let file = dir.join("out.csv");
    let body = std::fs::read_to_string(&file).expect("the file");
    assert_eq!(
        body.lines().count(),
        4991,
        "header and the 4,990 rows the filter keeps"
    );
    assert!(
        body.lines().nth(1).is_some_and(|l| l.starts_with("4999,")),
        "sorted desc"
    );
    assert!(
        stdout.contains(&sha(&file)),
        "the sha256 is printed and verified: {stdout}"
    );
    assert!(!dir.join("out.csv.part").exists());

    // An interrupted download: half the file is there; the next run asks for the rest only.
    let export_id = {
        let (_, list) = (
            0,
            app.get(&format!("/v1/workflows/{wf}/exports"), &p.key)
                .await
                .json::<Value>()
                .await
                .expect("json"),
        );
        list["data"][0]["exportId"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let whole = std::fs::read(&file).expect("file");
    std::fs::remove_file(&file).ok();
    std::fs::write(dir.join("again.csv.part"), &whole[..whole.len() / 2]).expect("write");
    let out = wharf(
        &app,
        &p.key,
        &["download", &export_id, "-o", "again.csv"],
        &dir,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("resuming at byte {}", whole.len() / 2)),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read(dir.join("again.csv")).expect("file"), whole);

    // A damaged partial file is caught by the sha256, removed, and the next run starts over.
    let mut bad = whole[..100].to_vec();
    bad[10] ^= 0xff;
    std::fs::write(dir.join("third.csv.part"), &bad).expect("write");
    let out = wharf(
        &app,
        &p.key,
        &["download", &export_id, "-o", "third.csv"],
        &dir,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("CHECKSUM_MISMATCH"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("third.csv.part").exists());
    let out = wharf(
        &app,
        &p.key,
        &["download", &export_id, "-o", "third.csv"],
        &dir,
    )
    .await;
    assert!(out.status.success());
    assert_eq!(std::fs::read(dir.join("third.csv")).expect("file"), whole);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn failures_exit_1_with_the_servers_code_and_bad_usage_exits_2() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _worker = app.start_worker().await;
    let dir = scratch();
    let (p, wf) = app.one_row_workflow().await;
    // A bad filter: the server's 400, its code and message.
    let out = wharf(
        &app,
        &p.key,
        &["export", &wf, "--filter", "nope:eq:1"],
        &dir,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("INVALID_REQUEST") && text(&out.stderr).contains("nope"),
        "{}",
        text(&out.stderr)
    );
    // An export that fails: its code.
    let table = format!("rows_{}", uuid::Uuid::parse_str(&wf).expect("id").simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&app.pool)
        .await
        .expect("dropped");
    let out = wharf(&app, &p.key, &["export", &wf], &dir).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let code = {
        let list: Value = app
            .get(&format!("/v1/workflows/{wf}/exports"), &p.key)
            .await
            .json()
            .await
            .expect("json");
        list["data"][0]["error"]["code"]
            .as_str()
            .expect("a code")
            .to_string()
    };
    assert!(text(&out.stderr).contains(&code), "{}", text(&out.stderr));
    // Another project's export: the server's 404.
    let q = app.create_project("other").await;
    let out = wharf(
        &app,
        &q.key,
        &["status", &uuid::Uuid::now_v7().to_string()],
        &dir,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("NOT_FOUND"));
    // Usage: a missing argument, an unknown command, a malformed filter, no key.
    for args in [
        vec!["export"],
        vec!["frobnicate"],
        vec!["export", &wf, "--filter", "justone"],
        vec!["export", &wf, "--format", "xml"],
    ] {
        let out = wharf(&app, &p.key, &args, &dir).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = wharf(&app, "", &["workflows"], &dir).await;
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
