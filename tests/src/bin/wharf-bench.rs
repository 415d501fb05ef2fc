//! wharf-bench: ingests N rows (default 1,000,000) of a 10-field workflow through the API,
//! exports them in every format with a real `wharf-worker` process (a fresh one per format,
//! so its peak RSS is that export's), and prints the figures beside the floor: PostgreSQL's
//! own `COPY (SELECT …) TO STDOUT (FORMAT csv)` of the same rows into a file.
//!
//! Run (services up, see scripts/services.sh):
//!   cargo build --release --bin wharf-worker --bin wharf-bench
//!   $CARGO_TARGET_DIR/release/wharf-bench [ROWS]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use wharf_api::startup::Application;

const SCHEMA: &str = r#"[
  {"name": "sku", "type": "string"}, {"name": "title", "type": "string"},
  {"name": "qty", "type": "integer"}, {"name": "views", "type": "integer", "nullable": true},
  {"name": "price", "type": "number"}, {"name": "rating", "type": "number", "nullable": true},
  {"name": "active", "type": "boolean"}, {"name": "listed", "type": "timestamp"},
  {"name": "note", "type": "string", "nullable": true}, {"name": "attrs", "type": "json", "nullable": true}
]"#;

fn row(n: u64) -> String {
    format!(
        concat!(
            "{{\"sku\":\"SKU-{:08}\",\"title\":\"Product number {} with a longer title, \\\"quoted\\\"\",",
            "\"qty\":{},\"views\":{},\"price\":{}.{:02},\"rating\":{},\"active\":{},",
            "\"listed\":\"2024-{:02}-{:02}T{:02}:{:02}:{:02}Z\",\"note\":{},\"attrs\":{{\"color\":\"c{}\",\"tags\":[\"a\",\"b\"],\"n\":{}}}}}\n"
        ),
        n,
        n,
        n % 1000,
        if n.is_multiple_of(7) {
            "null".to_string()
        } else {
            (n * 31).to_string()
        },
        n % 500,
        n % 100,
        if n.is_multiple_of(5) {
            "null".to_string()
        } else {
            format!("{}.5", n % 5)
        },
        n.is_multiple_of(2),
        n % 12 + 1,
        n % 28 + 1,
        n % 24,
        n % 60,
        n % 60,
        if n.is_multiple_of(3) {
            "null".to_string()
        } else {
            format!("\"note {n}\"")
        },
        n % 10,
        n
    )
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::args()
        .nth(1)
        .map(|a| a.replace('_', "").parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let server = env("WHARF_BENCH_PG", "postgres://postgres@127.0.0.1:5432");
    let db = "wharf_bench";
    let (mut admin, database_url, pool) = wharf_tests::bench::fresh_database(&server, db).await?;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let queue = format!("wharf-bench:{}", uuid::Uuid::new_v4().simple());
    let bucket = format!(
        "wharf-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let settings = wharf_tests::test_settings(
        &bucket,
        &[
            ("WHARF_QUEUE", &queue),
            ("WHARF_PUBLIC_URL", &base),
            ("DATABASE_URL", &database_url),
            ("WHARF_MAX_RUN_BYTES", "16GiB"),
        ],
    );
    let app = Application::build_with(settings.clone(), pool.clone(), listener).await?;
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let (key, wf_id) = wharf_tests::bench::project_and_workflow(
        &client,
        &base,
        "bench",
        serde_json::from_str::<Value>(SCHEMA)?,
    )
    .await?;

    println!("wharf-bench: {rows} rows, 10 fields");
    let body = futures::stream::iter(0..rows.div_ceil(10_000)).map(move |c| {
        let s: String = (c * 10_000..((c + 1) * 10_000).min(rows))
            .map(row)
            .collect();
        Ok::<_, std::io::Error>(Bytes::from(s))
    });
    let t = Instant::now();
    let run: Value = client
        .post(format!("{base}/v1/workflows/{wf_id}/runs"))
        .header("x-api-key", &key)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?
        .json()
        .await?;
    let ingest = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        run["rowCount"].as_u64() == Some(rows),
        "ingest failed: {run}"
    );
    println!(
        "ingest (NDJSON over HTTP, validate, COPY): {ingest:.2} s, {:.0} rows/s",
        rows as f64 / ingest
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM ANALYZE rows_{}",
        uuid::Uuid::parse_str(&wf_id)?.simple()
    )))
    .execute(&pool)
    .await?;

    let floor = copy_floor(
        &database_url,
        &wf_id,
        run["runId"].as_str().unwrap_or_default(),
    )
    .await?;
    println!(
        "floor: COPY (SELECT …) TO STDOUT (FORMAT csv) → file: {floor:.2} s, {:.0} rows/s\n",
        rows as f64 / floor
    );
    println!(
        "| format | compression | seconds | rows/s | × floor | size MB | worker peak RSS MB |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let worker_bin = std::env::current_exe()?.with_file_name("wharf-worker");
    for (format, compression) in [
        ("csv", "none"),
        ("csv", "gzip"),
        ("ndjson", "none"),
        ("json", "none"),
        ("parquet", "zstd"),
        ("parquet", "snappy"),
    ] {
        let mut worker = spawn_worker(&worker_bin, &settings, &database_url)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let created: Value = client
            .post(format!("{base}/v1/workflows/{wf_id}/exports"))
            .header("x-api-key", &key)
            .json(&json!({"format": format, "compression": compression}))
            .send()
            .await?
            .json()
            .await?;
        let id = created["exportId"].as_str().unwrap_or_default().to_string();
        let status =
            wharf_tests::bench::wait_done(&client, &base, &key, &id, Duration::from_millis(20))
                .await?;
        let secs = t.elapsed().as_secs_f64();
        let rss = peak_rss_kb(worker.id()).unwrap_or(0) as f64 / 1024.0;
        let _ = worker.kill();
        let _ = worker.wait();
        anyhow::ensure!(
            status["status"] == "COMPLETED" && status["rowCount"].as_u64() == Some(rows),
            "export failed: {status}"
        );
        let size = status["sizeBytes"].as_f64().unwrap_or(0.0) / 1e6;
        println!(
            "| {format} | {compression} | {secs:.2} | {:.0} | {:.2} | {size:.1} | {rss:.0} |",
            rows as f64 / secs,
            secs / floor
        );
    }
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .await
        .ok();
    Ok(())
}

async fn copy_floor(database_url: &str, wf_id: &str, run_id: &str) -> anyhow::Result<f64> {
    use tokio::io::AsyncWriteExt;
    let table = format!("rows_{}", uuid::Uuid::parse_str(wf_id)?.simple());
    let cols: Vec<String> = (1..=10).map(|i| format!("c{i}")).collect();
    let sql = format!(
        "COPY (SELECT {} FROM {table} WHERE run_id = '{run_id}' ORDER BY _id) TO STDOUT (FORMAT csv)",
        cols.join(", ")
    );
    let mut best = f64::MAX;
    for _ in 0..2 {
        let mut conn = PgConnection::connect(database_url).await?;
        let path = std::env::temp_dir().join("wharf-bench-floor.csv");
        let mut file =
            tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&path).await?);
        let t = Instant::now();
        let mut stream = conn.copy_out_raw(&sql).await?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?).await?;
        }
        file.flush().await?;
        best = best.min(t.elapsed().as_secs_f64());
        drop(stream);
        let _ = tokio::fs::remove_file(&path).await;
    }
    Ok(best)
}

fn spawn_worker(
    bin: &std::path::Path,
    s: &wharf_shared::config::Settings,
    database_url: &str,
) -> anyhow::Result<std::process::Child> {
    Ok(wharf_tests::worker_command(bin, s, database_url)
        .env("RUST_LOG", "warn")
        .spawn()?)
}
