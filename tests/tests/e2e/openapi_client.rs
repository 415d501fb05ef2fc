//! The OpenAPI document as client generators read it: valid by openapi-spec-validator, and a
//! client openapi-python-client generates from it, unchanged, creates a workflow, ingests
//! NDJSON, exports, polls and downloads the bytes (tests/python/generated_client.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use wharf_tests::db::TestDb;
use wharf_tests::spawn_app;

/// The Python of the test tools' virtualenv (scripts/test makes it: `python_tools_up`).
fn python() -> PathBuf {
    PathBuf::from(std::env::var("WHARF_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}; scripts/test makes WHARF_TEST_PYTHON"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{said}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[tokio::test]
async fn a_generated_python_client_exports_and_downloads_and_the_document_validates() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _worker = app.start_worker().await;
    let p = app.create_project("generated").await;
    let doc = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("document");
    let dir =
        Scratch(std::env::temp_dir().join(format!("wharf-oapi-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&dir.0).expect("scratch");
    let doc_path = dir.0.join("openapi.json");
    std::fs::write(&doc_path, &doc).expect("written");

    let said = run(
        Command::new(python())
            .args(["-m", "openapi_spec_validator"])
            .arg(&doc_path),
        "openapi-spec-validator",
    );
    assert!(said.contains("OK"), "{said}");

    let client = dir.0.join("wharf_client");
    run(
        Command::new(python())
            .args([
                "-m",
                "openapi_python_client",
                "generate",
                "--meta",
                "none",
                "--path",
            ])
            .arg(&doc_path)
            .arg("--output-path")
            .arg(&client),
        "openapi-python-client generate",
    );
    for generated in [
        "api/downloads/download_export.py",
        "api/exports/post_export.py",
    ] {
        assert!(Path::new(&client).join(generated).exists(), "{generated}");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/generated_client.py");
    let file = tokio::task::spawn_blocking({
        let (dir, base, key) = (dir.0.clone(), app.url(""), p.key.clone());
        move || {
            run(
                Command::new(python())
                    .arg(script)
                    .arg(&dir)
                    .arg(base.trim_end_matches('/'))
                    .arg(key),
                "the generated client",
            )
        }
    })
    .await
    .expect("ran");
    assert_eq!(file, "title,price\na,1.5\n\"b,c\",\n");
}
