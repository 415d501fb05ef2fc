//! Import bombs (issue 21): a bundle is held to what it really holds, not to what its central
//! directory claims; each run file backs one run; entries, runs and scratch space are capped.
//! Each case is refused before its files are written, with its own code.

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, TestProject, spawn_app};

use super::bundles::{database_bundle, edit_manifest, import, project_with_data, rewrite};

/// Every occurrence of `from` in `bytes` replaced by `to` (same length).
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + to.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

/// The central directory record of `name`: its offset in `zip`.
fn central_record(zip: &[u8], name: &[u8]) -> usize {
    (0..zip.len() - 46)
        .find(|&i| {
            zip[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] && {
                let len = u16::from_le_bytes([zip[i + 28], zip[i + 29]]) as usize;
                zip.get(i + 46..i + 46 + len) == Some(name)
            }
        })
        .expect("the entry's central record")
}

async fn refused(app: &TestApp, p: &TestProject, bundle: Vec<u8>) -> (String, String) {
    let done = import(app, &p.key, bundle, "").await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["workflows"], json!([]));
    let res = app.get("/v1/workflows", &p.key).await;
    let listed: Value = res.json().await.expect("json");
    assert_eq!(listed["data"], json!([]), "nothing written");
    (
        done["error"]["code"].as_str().unwrap_or_default().into(),
        done["error"]["message"].as_str().unwrap_or_default().into(),
    )
}

#[tokio::test]
async fn bundles_are_held_to_what_they_really_hold() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _w = app.start_worker().await;
    let (a, _) = project_with_data(&app, "acme").await;
    let good = database_bundle(&app, "acme", &a.key).await;
    let b = app.create_project("beta").await;

    // (a) A run file whose central directory claims 12x the compressed bytes really there
    // (50 MB of zeros deflate to ~50 KB; claimed: 600 KB, a ratio the old check let through),
    // named by the manifest with its claimed size: once extracted in full before its checksum
    // failed. Now the local header and the directory disagree: refused before extraction.
    let bomb = vec![0u8; 50 << 20];
    let with_bomb = rewrite(
        &good,
        |n, x| Some((n.into(), x)),
        &[("bomb.parquet", bomb, true)],
    );
    let mut lying = edit_manifest(&with_bomb, |m| {
        m["workflows"][0]["runs"][0]["file"] = json!("bomb.parquet");
        m["workflows"][0]["runs"][0]["bytes"] = json!(50 << 20);
    });
    let at = central_record(&lying, b"bomb.parquet");
    lying[at + 20..at + 24].copy_from_slice(&(600u32 << 10).to_le_bytes());
    let (code, message) = refused(&app, &b, lying).await;
    assert_eq!(code, "BUNDLE_INVALID", "{message}");
    assert!(message.contains("inconsistent"), "{message}");

    // (b) One run file named for 200 runs (a 7 KB bundle importing 200 runs, before).
    let repeated = edit_manifest(&good, |m| {
        let run = m["workflows"][0]["runs"][0].clone();
        m["workflows"][0]["runs"] = json!(vec![run; 200]);
    });
    let (code, message) = refused(&app, &b, repeated).await;
    assert_eq!(code, "BUNDLE_INVALID", "{message}");
    assert!(message.contains("each run file backs one run"), "{message}");

    // (c) More entries than an import takes, counted before the directory is loaded.
    let empties: Vec<(String, Vec<u8>, bool)> = (0..10_001)
        .map(|i| (format!("empty/{i}"), Vec::new(), false))
        .collect();
    let extra: Vec<(&str, Vec<u8>, bool)> = empties
        .iter()
        .map(|(n, b, d)| (n.as_str(), b.clone(), *d))
        .collect();
    let many = rewrite(&good, |n, x| Some((n.into(), x)), &extra);
    let (code, message) = refused(&app, &b, many).await;
    assert_eq!(code, "BUNDLE_TOO_LARGE", "{message}");
    assert!(message.contains("at most 10000"), "{message}");

    // (d) Two entries of one name (a reader picks either): refused by the zip crate's checks.
    let twins = rewrite(
        &good,
        |n, x| Some((n.into(), x)),
        &[
            ("twin-a.bin", b"one".to_vec(), false),
            ("twin-b.bin", b"two".to_vec(), false),
        ],
    );
    let mut twins = twins;
    assert_eq!(patch(&mut twins, b"twin-b.bin", b"twin-a.bin"), 2);
    let (code, message) = refused(&app, &b, twins).await;
    assert_eq!(code, "BUNDLE_INVALID", "{message}");
    assert!(message.contains("duplicate"), "{message}");

    // The untouched bundle still imports.
    let done = import(&app, &b.key, good, "").await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}

#[tokio::test]
async fn an_import_larger_than_the_workers_scratch_space_fails_before_writing() {
    let db = TestDb::new().await;
    let app = spawn_app(db.pool.clone()).await;
    let _w = app
        .start_worker_with(|w| {
            w.ctx.scratch = wharf_shared::export::scratch::ScratchBudget::new(4 << 20);
        })
        .await;
    let (a, _) = project_with_data(&app, "acme").await;
    let good = database_bundle(&app, "acme", &a.key).await;
    // Run files declared at 5 MB: more than the 4 MiB this worker may fill.
    let big = edit_manifest(&good, |m| {
        m["workflows"][0]["runs"][0]["bytes"] = json!(5_000_000)
    });
    let b = app.create_project("beta").await;
    let (code, message) = refused(&app, &b, big).await;
    assert_eq!(code, "BUNDLE_TOO_LARGE", "{message}");
    assert!(message.contains("WHARF_IMPORT_SCRATCH"), "{message}");
    let done = import(&app, &b.key, good, "").await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}
