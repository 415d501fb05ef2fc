//! wharf-parts: one large export built as a dataset by several workers. Ingests N rows
//! (default 10,000,000) of a 6-field workflow through the API, then exports the run as CSV and
//! as Parquet with `parallelism` 1, 2 and 4, on 1 and on 2 `wharf-worker` processes (fresh ones
//! for each export, so their peak RSS is that export's), timed from the create request to
//! COMPLETED as a polling client sees it. Printed beside the floors measured in the same run:
//! `psql -c "COPY (SELECT * FROM plain) TO STDOUT (FORMAT csv|binary)" > file` of the same rows
//! in a plain, analyzed table (CSV against the CSV floor, Parquet against the binary one).
//!
//! Run (services up, see scripts/services.sh):
//!   cargo build --release --workspace --bins
//!   $CARGO_TARGET_DIR/release/wharf-parts [ROWS]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Executor;
use wharf_api::startup::Application;
use wharf_tests::bench::{copy_floor, peak_rss_kb, plain_table};

const SCHEMA: &str = r#"[
  {"name": "sku", "type": "string"}, {"name": "title", "type": "string"},
  {"name": "qty", "type": "integer"}, {"name": "price", "type": "number"},
  {"name": "active", "type": "boolean"}, {"name": "listed", "type": "timestamp"}
]"#;
const FIELDS: usize = 6;

fn row(n: u64) -> String {
    format!(
        "{{\"sku\":\"SKU-{n:09}\",\"title\":\"Item number {n} of the catalogue, in stock\",\"qty\":{},\"price\":{}.{:02},\"active\":{},\"listed\":\"2026-{:02}-{:02}T{:02}:{:02}:00Z\"}}\n",
        n % 1000,
        n % 10_000,
        n % 100,
        !n.is_multiple_of(3),
        1 + n % 12,
        1 + n % 28,
        n % 24,
        n % 60
    )
}

async fn ingest(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    wf: &str,
    rows: u64,
) -> anyhow::Result<(Value, f64)> {
    let body = futures::stream::iter(0..rows.div_ceil(10_000)).map(move |c| {
        let s: String = (c * 10_000..((c + 1) * 10_000).min(rows))
            .map(row)
            .collect();
        Ok::<_, std::io::Error>(Bytes::from(s))
    });
    let t = Instant::now();
    let run: Value = client
        .post(format!("{base}/v1/workflows/{wf}/runs"))
        .header("x-api-key", key)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        run["rowCount"].as_u64() == Some(rows),
        "ingest failed: {run}"
    );
    Ok((run, t.elapsed().as_secs_f64()))
}

/// One timed export: `workers` fresh worker processes, the dataset asked for, the status.
struct Case<'a> {
    format: &'a str,
    parallelism: u32,
    workers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::args()
        .nth(1)
        .map(|a| a.replace('_', "").parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let server = std::env::var("WHARF_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db = "wharf_parts";
    let (mut admin, database_url, pool) = wharf_tests::bench::fresh_database(&server, db).await?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let queue = format!("wharf-parts:{}", uuid::Uuid::new_v4().simple());
    let bucket = format!(
        "wharf-parts-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let settings = wharf_tests::test_settings(
        &bucket,
        &[
            ("WHARF_QUEUE", &queue),
            ("WHARF_PUBLIC_URL", &base),
            ("DATABASE_URL", &database_url),
            ("WHARF_MAX_RUN_BYTES", "16GiB"),
            ("WHARF_PROJECT_CONCURRENCY", "8"),
        ],
    );
    let app = Application::build_with(settings.clone(), pool.clone(), listener).await?;
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let (key, wf) = wharf_tests::bench::project_and_workflow(
        &client,
        &base,
        "parts",
        serde_json::from_str::<Value>(SCHEMA)?,
    )
    .await?;
    println!(
        "wharf-parts: {rows} rows, {FIELDS} fields, {} cores",
        cores()
    );
    let (run, ingest_secs) = ingest(&client, &base, &key, &wf, rows).await?;
    println!(
        "ingest over HTTP: {ingest_secs:.1} s, {:.0} rows/s",
        rows as f64 / ingest_secs
    );
    let worker_bin = std::env::current_exe()?.with_file_name("wharf-worker");
    let mut cases = vec![];
    for format in ["csv", "parquet"] {
        for (workers, parallelism) in [(1, 1), (1, 2), (1, 4), (2, 2), (2, 4)] {
            cases.push(Case {
                format,
                parallelism,
                workers,
            });
        }
    }
    // The first export starts right after the ingest, as a client's would; the floors are
    // measured after it, on a plain analyzed copy of the same rows.
    println!(
        "\n| format | parallelism | worker processes | seconds | rows/s | × its floor | files | parts | worker peak RSS MB (each) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut results = Vec::new();
    for case in &cases {
        results.push(
            export(
                &client,
                &base,
                &key,
                &wf,
                case,
                &worker_bin,
                &settings,
                &database_url,
                rows,
            )
            .await?,
        );
        if results.len() == 1 {
            println!(
                "(the first export above ran right after the ingest; the others read the same run again)"
            );
        }
    }
    let table = format!("rows_{}", uuid::Uuid::parse_str(&wf)?.simple());
    let run_id = run["runId"].as_str().unwrap_or_default();
    let plain = plain_table(&database_url, &table, run_id, FIELDS)?;
    let floor = copy_floor(&database_url, &format!("SELECT * FROM {plain}"), "csv")?;
    let binary_floor = copy_floor(&database_url, &format!("SELECT * FROM {plain}"), "binary")?;
    println!(
        "\nfloor: psql COPY (SELECT * FROM plain) TO STDOUT (FORMAT csv, HEADER) > file: {floor:.2} s, {:.0} rows/s",
        rows as f64 / floor
    );
    println!(
        "floor: psql COPY (SELECT * FROM plain) TO STDOUT (FORMAT binary) > file: {binary_floor:.2} s, {:.0} rows/s\n",
        rows as f64 / binary_floor
    );
    println!("| format | parallelism | worker processes | seconds | × its floor |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (case, secs) in cases.iter().zip(&results) {
        let its = if case.format == "parquet" {
            binary_floor
        } else {
            floor
        };
        println!(
            "| {} | {} | {} | {secs:.2} | {:.2} |",
            case.format,
            case.parallelism,
            case.workers,
            secs / its
        );
    }
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .await
        .ok();
    wharf_tests::remove_bucket(&settings, Duration::from_secs(300));
    if let Some(url) = &settings.redis_url {
        wharf_tests::bench::remove_redis_keys(url, &format!("{queue}*"));
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[allow(clippy::too_many_arguments)]
async fn export(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    wf: &str,
    case: &Case<'_>,
    worker_bin: &std::path::Path,
    settings: &wharf_shared::config::Settings,
    database_url: &str,
    rows: u64,
) -> anyhow::Result<f64> {
    let mut workers = Vec::new();
    for _ in 0..case.workers {
        workers.push(
            wharf_tests::worker_command(worker_bin, settings, database_url)
                .env("RUST_LOG", "warn")
                .env("WHARF_WORKER_CONCURRENCY", "4")
                .stdout(std::process::Stdio::null())
                .spawn()?,
        );
    }
    // The workers register before the export is asked for.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = json!({"format": case.format, "maxRowsPerFile": 1_000_000, "parallelism": case.parallelism});
    let t = Instant::now();
    let created: Value = client
        .post(format!("{base}/v1/workflows/{wf}/exports"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let id = created["exportId"].as_str().unwrap_or_default().to_string();
    let status =
        wharf_tests::bench::wait_done(client, base, key, &id, Duration::from_millis(20)).await?;
    let secs = t.elapsed().as_secs_f64();
    let rss: Vec<String> = workers
        .iter()
        .map(|w| format!("{:.0}", peak_rss_kb(w.id()).unwrap_or(0) as f64 / 1024.0))
        .collect();
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    anyhow::ensure!(
        status["status"] == "COMPLETED" && status["rowCount"].as_u64() == Some(rows),
        "export failed: {status}"
    );
    println!(
        "| {} | {} | {} | {secs:.2} | {:.0} | — | {} | {} | {} |",
        case.format,
        case.parallelism,
        case.workers,
        rows as f64 / secs,
        status["files"].as_array().map_or(0, Vec::len),
        status["parts"]["total"],
        rss.join(", ")
    );
    Ok(secs)
}
