//! The README's walk-through, run as written: its shell block is taken from README.md, pointed
//! at this test's API (its address and admin token for `localhost:8080` and the dev token; a
//! receiver of the test's own for the example webhook host, which needs DNS), and run by bash
//! with `set -euo pipefail` in a scratch directory. What each step says it answers is checked
//! in its output and the files it writes, so the README cannot drift from the product again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wharf_tests::db::TestDb;
use wharf_tests::receiver::Receiver;
use wharf_tests::{ADMIN_TOKEN, spawn_app_with};

/// Marks each step's start in the output: `echo "=== step N"` before its `# N.` comment (and
/// `=== step ops` before "# Operations"), so each step's answers are checked in its own output.
fn marked(script: &str) -> String {
    let mut out = String::with_capacity(script.len() + 512);
    for line in script.lines() {
        let step = line
            .strip_prefix("# ")
            .and_then(|rest| rest.split_once('.'))
            .filter(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            .map(|(n, _)| n.to_string())
            .or_else(|| (line == "# Operations").then(|| "ops".to_string()));
        if let Some(step) = step {
            out.push_str(&format!("echo '=== step {step}'\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// What step `step` printed (from its marker to the next).
fn step_output<'a>(stdout: &'a str, step: &str) -> &'a str {
    let start = format!("=== step {step}\n");
    let Some((_, rest)) = stdout.split_once(&start) else {
        return "";
    };
    rest.split_once("=== step ").map_or(rest, |(this, _)| this)
}

/// The first ```sh block after the "## Walk-through" heading.
fn walk_through() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let section = text
        .split_once("\n## Walk-through")
        .expect("the README has a walk-through")
        .1;
    let block = section.split_once("```sh\n").expect("a sh block").1;
    block
        .split_once("\n```")
        .expect("the block ends")
        .0
        .to_string()
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wharf-readme-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[tokio::test]
async fn the_readme_walk_through_runs_as_written() {
    let db = TestDb::new().await;
    let app = spawn_app_with(db.pool.clone(), &[("WHARF_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let _worker = app.start_worker().await;
    let rx = Receiver::start(vec![]).await;
    let host = app.address.trim_start_matches("http://").to_string();
    let script = walk_through();
    for needle in [
        "localhost:8080",
        "dev-admin-token-0123456789abcdef0123",
        "https://example.com/wharf-hook",
    ] {
        assert!(script.contains(needle), "the walk-through uses {needle}");
    }
    let script = marked(&script)
        .replace("localhost:8080", &host)
        .replace("dev-admin-token-0123456789abcdef0123", ADMIN_TOKEN)
        .replace("https://example.com/wharf-hook", &rx.url);
    let dir = scratch();
    // The CLI where the walk-through looks for it: $CARGO_TARGET_DIR/debug/wharf.
    let cli = wharf_tests::process::binary("wharf");
    let target = cli
        .parent()
        .and_then(Path::parent)
        .expect("the target dir")
        .to_path_buf();
    let run_dir = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(run_dir)
            .env("CARGO_TARGET_DIR", target)
            .env_remove("WHARF_API_KEY")
            .output()
    })
    .await
    .expect("joined")
    .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let shown = format!("stdout:\n{}\nstderr:\n{stderr}", tail(&stdout));
    assert!(out.status.success(), "the walk-through failed: {shown}");
    for (step, expected) in [
        ("3", "\"rowCount\":2"),
        (
            "4",
            "line 2: field \\\"price\\\": expected a number, got a string",
        ),
        ("6", "\"status\":\"COMPLETED\""),
        ("6", "\"code\":\"CONFLICT\""),
        ("7", "302 http"),
        ("8", "\"importId\":"),
        ("9", "\"secret\":\"whsec_"),
        ("9", "\"type\":\"export.downloaded\""),
        ("10", "products.parquet\t"),
        ("ops", "\"openapi\":\"3."),
    ] {
        let said = step_output(&stdout, step);
        assert!(
            said.contains(expected),
            "step {step}: {expected} in {said:?}; {shown}"
        );
    }
    // Step 6's first answer, the long poll's: the export completed (the filter kept one row).
    let polled = serde_json::Deserializer::from_str(step_output(&stdout, "6"))
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    assert_eq!(
        polled["status"], "COMPLETED",
        "step 6: the long poll: {polled}"
    );
    assert_eq!(polled["rowCount"], 1, "step 6: the long poll: {polled}");
    for (file, magic) in [
        ("products.parquet", &b"PAR1"[..]),
        ("acme.wharf.zip", b"PK"),
        ("wharf-api.html", b"<!doctype html>"),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        assert!(bytes.starts_with(magic), "{file} is what the step says");
    }
    // Step 9's endpoint got the event of step 10's export.
    rx.wait_for(1, Duration::from_secs(20)).await;
    let (_, body) = rx.get(0);
    let event: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(event["type"], "export.completed");
    std::fs::remove_dir_all(&dir).ok();
}

fn tail(s: &str) -> &str {
    let cut = s.len().saturating_sub(6000);
    let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    &s[cut..]
}
