//! wharf-bench: ingests N rows (default 1,000,000) of a 13-field workflow through the API,
//! exports them in every format with a real `wharf-worker` process (a fresh one per format,
//! so its peak RSS is that export's), and prints the figures beside the floors measured in the
//! same run: `psql -c "COPY (SELECT …) TO STDOUT (FORMAT csv|binary)" > file` of the same rows
//! (text formats against the CSV floor, Parquet against the binary one), then where each
//! export's time went (the worker's phase timings).
//!
//! Run (services up, see scripts/services.sh):
//!   cargo build --release --bin wharf-worker --bin wharf-bench
//!   $CARGO_TARGET_DIR/release/wharf-bench [ROWS]

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
  {"name": "qty", "type": "integer"}, {"name": "views", "type": "integer", "nullable": true},
  {"name": "price", "type": "number"}, {"name": "rating", "type": "number", "nullable": true},
  {"name": "active", "type": "boolean"}, {"name": "listed", "type": "timestamp"},
  {"name": "note", "type": "string", "nullable": true}, {"name": "attrs", "type": "json", "nullable": true},
  {"name": "description", "type": "string"}, {"name": "score", "type": "number"},
  {"name": "seen", "type": "timestamp"}
]"#;

/// Fields of `SCHEMA` (the table's columns c1..cN).
const FIELDS: usize = 13;

/// A long text (~200 characters) for row `n`.
fn description(n: u64) -> String {
    format!(
        "Description of item {n}: a longer text of the kind scraped pages hold, with commas, \
         a semicolon; and words enough to make the field wide. Batch {} of {}, variant {}.",
        n / 1000,
        n % 97,
        n % 13
    )
}

/// A float of up to 17 significant digits for row `n` (its shortest round-trip form).
fn score(n: u64) -> f64 {
    (n as f64 + 0.5).sqrt() * std::f64::consts::PI
}

fn row(n: u64) -> String {
    format!(
        concat!(
            "{{\"sku\":\"SKU-{:08}\",\"title\":\"Product number {} with a longer title, \\\"quoted\\\"\",",
            "\"qty\":{},\"views\":{},\"price\":{}.{:02},\"rating\":{},\"active\":{},",
            "\"listed\":\"2024-{:02}-{:02}T{:02}:{:02}:{:02}Z\",\"note\":{},\"attrs\":{{\"color\":\"c{}\",\"tags\":[\"a\",\"b\"],\"n\":{}}},",
            "\"description\":\"{}\",\"score\":{},\"seen\":\"2025-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\"}}\n"
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
        n,
        description(n),
        score(n),
        n % 12 + 1,
        n % 28 + 1,
        n % 24,
        n % 60,
        n % 60,
        n % 1_000_000
    )
}

/// The same row as `row(n)`, as a CSV record (header `CSV_HEADER`): nulls are empty cells,
/// the json field is its JSON text, quoted.
fn csv_row(n: u64) -> String {
    let opt = |cond: bool, v: String| if cond { String::new() } else { v };
    format!(
        "SKU-{n:08},\"Product number {n} with a longer title, \"\"quoted\"\"\",{},{},{}.{:02},{},{},\
         2024-{:02}-{:02}T{:02}:{:02}:{:02}Z,{},\"{{\"\"color\"\":\"\"c{}\"\",\"\"tags\"\":[\"\"a\"\",\"\"b\"\"],\"\"n\"\":{n}}}\",\
         \"{}\",{},2025-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\n",
        n % 1000,
        opt(n.is_multiple_of(7), (n * 31).to_string()),
        n % 500,
        n % 100,
        opt(n.is_multiple_of(5), format!("{}.5", n % 5)),
        n.is_multiple_of(2),
        n % 12 + 1,
        n % 28 + 1,
        n % 24,
        n % 60,
        n % 60,
        opt(n.is_multiple_of(3), format!("note {n}")),
        n % 10,
        description(n),
        score(n),
        n % 12 + 1,
        n % 28 + 1,
        n % 24,
        n % 60,
        n % 60,
        n % 1_000_000,
    )
}

const CSV_HEADER: &str =
    "sku,title,qty,views,price,rating,active,listed,note,attrs,description,score,seen\n";

/// A run body's media type, its first bytes (a CSV header) and how each row is written.
#[derive(Clone, Copy)]
struct BodyKind {
    content_type: &'static str,
    head: &'static str,
    make: fn(u64) -> String,
}

const NDJSON: BodyKind = BodyKind {
    content_type: "application/x-ndjson",
    head: "",
    make: row,
};

const CSV: BodyKind = BodyKind {
    content_type: "text/csv",
    head: CSV_HEADER,
    make: csv_row,
};

/// Uploads `rows` rows made by `kind.make` as one run (a streamed body, 10,000 rows a chunk, made
/// as they are sent); the run's JSON and the seconds it took.
async fn ingest(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    wf_id: &str,
    rows: u64,
    kind: BodyKind,
) -> anyhow::Result<(Value, f64)> {
    let BodyKind {
        content_type,
        head,
        make,
    } = kind;
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) });
    let body = first.chain(
        futures::stream::iter(0..rows.div_ceil(10_000)).map(move |c| {
            let s: String = (c * 10_000..((c + 1) * 10_000).min(rows))
                .map(make)
                .collect();
            Ok::<_, std::io::Error>(Bytes::from(s))
        }),
    );
    let t = Instant::now();
    let run: Value = client
        .post(format!("{base}/v1/workflows/{wf_id}/runs"))
        .header("x-api-key", key)
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?
        .json()
        .await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        run["rowCount"].as_u64() == Some(rows),
        "ingest failed: {run}"
    );
    Ok((run, secs))
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

    println!("wharf-bench: {rows} rows, {FIELDS} fields");
    let (run, ndjson_secs) = ingest(&client, &base, &key, &wf_id, rows, NDJSON).await?;
    // The same rows as CSV, into a second workflow of the same schema (the exports below read
    // the first one, which holds one run).
    let csv_wf: Value = client
        .post(format!("{base}/v1/workflows"))
        .header("x-api-key", &key)
        .json(&json!({"name": "bench-csv", "schema": serde_json::from_str::<Value>(SCHEMA)?}))
        .send()
        .await?
        .json()
        .await?;
    let csv_wf = csv_wf["id"].as_str().unwrap_or_default().to_string();
    let (_, csv_secs) = ingest(&client, &base, &key, &csv_wf, rows, CSV).await?;
    let table = format!("rows_{}", uuid::Uuid::parse_str(&wf_id)?.simple());
    let text_floor = copy_in_floor(&database_url, &table, "text")?;
    let ingest_floor = copy_in_floor(&database_url, &table, "binary")?;
    println!(
        "ingest floor: psql -c \"COPY … FROM STDIN (FORMAT binary)\" < file (the same rows, into a copy of the table): {ingest_floor:.2} s, {:.0} rows/s (text format: {text_floor:.2} s)",
        rows as f64 / ingest_floor
    );
    for (what, secs) in [("NDJSON", ndjson_secs), ("CSV", csv_secs)] {
        println!(
            "ingest {what} over HTTP (parse, validate, COPY): {secs:.2} s, {:.0} rows/s, {:.2} × the floor",
            rows as f64 / secs,
            secs / ingest_floor
        );
    }
    let run_id = run["runId"].as_str().unwrap_or_default();
    // The honest floor: the same rows in a plain, analyzed table, `COPY (SELECT * FROM plain)`
    // by psql into a file, as a user would compare. Beside it, Wharf's own ordered query on its
    // rows table (the run's primary key order).
    let plain = plain_table(&database_url, &table, run_id, FIELDS)?;
    let floor = copy_floor(&database_url, &format!("SELECT * FROM {plain}"), "csv")?;
    let binary_floor = copy_floor(&database_url, &format!("SELECT * FROM {plain}"), "binary")?;
    let cols: Vec<String> = (1..=FIELDS).map(|i| format!("c{i}")).collect();
    let ordered = format!(
        "SELECT {} FROM {table} WHERE run_id = '{run_id}' ORDER BY _id",
        cols.join(", ")
    );
    let ordered_floor = copy_floor(&database_url, &ordered, "csv")?;
    println!(
        "floor: psql COPY (SELECT * FROM plain) TO STDOUT (FORMAT csv, HEADER) > file, the same rows in a plain analyzed table: {floor:.2} s, {:.0} rows/s",
        rows as f64 / floor
    );
    println!(
        "floor: psql COPY (SELECT * FROM plain) TO STDOUT (FORMAT binary) > file: {binary_floor:.2} s, {:.0} rows/s",
        rows as f64 / binary_floor
    );
    println!(
        "beside it: Wharf's ordered query (… WHERE run_id = … ORDER BY _id) as CSV by psql: {ordered_floor:.2} s, {:.2} × the floor",
        ordered_floor / floor
    );
    match adbc_peer(&database_url, &format!("SELECT * FROM {plain}")) {
        Some(secs) => println!(
            "peer: ADBC (binary COPY → Arrow) streamed into pyarrow's ParquetWriter, zstd, from the plain table: {secs:.2} s, {:.2} × the binary floor\n",
            secs / binary_floor
        ),
        None => println!(
            "peer: ADBC skipped (pip install adbc-driver-postgresql pyarrow to compare with it)\n"
        ),
    }
    println!(
        "Each export: a fresh run ingested, then timed from the create request to COMPLETED as a \
         polling client sees it, started right after the ingest (no ANALYZE, no VACUUM).\n"
    );
    println!(
        "| format | compression | seconds | rows/s | × its floor | size MB | worker peak RSS MB |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut phase_rows = Vec::new();
    let worker_bin = std::env::current_exe()?.with_file_name("wharf-worker");
    // The fresh runs live in a project of their own (their rows are dropped after each
    // export; the bench project's database bundle below must not see them).
    let (fresh_key, _) = wharf_tests::bench::project_and_workflow(
        &client,
        &base,
        "fresh",
        serde_json::from_str::<Value>(SCHEMA)?,
    )
    .await?;
    for (format, compression) in [
        ("csv", "none"),
        ("csv", "gzip"),
        ("ndjson", "none"),
        ("json", "none"),
        ("parquet", "zstd"),
        ("parquet", "snappy"),
    ] {
        let fresh: Value = client
            .post(format!("{base}/v1/workflows"))
            .header("x-api-key", &fresh_key)
            .json(&json!({"name": format!("bench-{format}-{compression}"), "schema": serde_json::from_str::<Value>(SCHEMA)?}))
            .send()
            .await?
            .json()
            .await?;
        let fresh = fresh["id"].as_str().unwrap_or_default().to_string();
        let mut worker = spawn_worker(&worker_bin, &settings, &database_url)?;
        ingest(&client, &base, &fresh_key, &fresh, rows, NDJSON).await?;
        let t = Instant::now();
        let created: Value = client
            .post(format!("{base}/v1/workflows/{fresh}/exports"))
            .header("x-api-key", &fresh_key)
            .json(&json!({"format": format, "compression": compression}))
            .send()
            .await?
            .json()
            .await?;
        let id = created["exportId"].as_str().unwrap_or_default().to_string();
        let status = wharf_tests::bench::wait_done(
            &client,
            &base,
            &fresh_key,
            &id,
            Duration::from_millis(20),
        )
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
        // Text formats against the CSV floor, Parquet against the binary one.
        let its_floor = if format == "parquet" {
            binary_floor
        } else {
            floor
        };
        println!(
            "| {format} | {compression} | {secs:.2} | {:.0} | {:.2} | {size:.1} | {rss:.0} |",
            rows as f64 / secs,
            secs / its_floor
        );
        if let Some(p) = phases(&worker_log()) {
            phase_rows.push((format!("{format} {compression}"), secs, p));
        }
        // The run's rows are not needed again (10M rows are gigabytes of disk).
        let fresh_table = format!("rows_{}", uuid::Uuid::parse_str(&fresh)?.simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {fresh_table}")))
            .execute(&pool)
            .await?;
    }
    bundles(
        &client,
        &base,
        &key,
        &worker_bin,
        &settings,
        &database_url,
        rows,
    )
    .await?;
    reads(&client, &key, &wf_id, &settings, &database_url, rows).await?;
    println!(
        "\nphases (ms after the claim; create → claim is the rest of the total): counted, first rows \
         from COPY, last rows read, encoder busy (not waiting for rows), encoded, written to the store"
    );
    println!(
        "| export | total ms | counted | first rows | read | encoder busy | encoded | written |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, secs, p) in phase_rows {
        let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            secs * 1000.0,
            f("counted_ms"),
            f("first_rows_ms"),
            f("read_done_ms"),
            f("encode_busy_ms"),
            f("encode_done_ms"),
            f("written_ms"),
        );
    }
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .await
        .ok();
    // The bucket, and the queue's keys in the shared Redis.
    // Gigabytes of exports at 10M rows: deleting them takes the S3 server a while.
    wharf_tests::remove_bucket(&settings, Duration::from_secs(300));
    if let Some(url) = &settings.redis_url {
        wharf_tests::bench::remove_redis_keys(url, &format!("{queue}*"));
    }
    Ok(())
}

/// PostgreSQL's own floor for storing the run: its rows in COPY `format` (text or binary;
/// `COPY table TO STDOUT`, not timed) loaded by `psql -c "COPY … FROM STDIN" < file` into an
/// empty copy of the table (same columns, same primary key), best of two.
fn copy_in_floor(database_url: &str, table: &str, format: &str) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!("wharf-bench-ingest.{format}"));
    let psql = |sql: &str| -> anyhow::Result<()> {
        let status = std::process::Command::new("psql")
            .arg(database_url)
            .args(["-qXc", sql])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "psql failed: {sql}");
        Ok(())
    };
    let status = std::process::Command::new("psql")
        .arg(database_url)
        .args(["-qXc", &format!("COPY {table} TO STDOUT (FORMAT {format})")])
        .stdout(std::fs::File::create(&path)?)
        .status()?;
    anyhow::ensure!(status.success(), "psql COPY TO failed");
    let copy = format!("{table}_floor");
    psql(&format!("CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)"))?;
    let mut best = f64::MAX;
    for _ in 0..2 {
        psql(&format!("TRUNCATE {copy}"))?;
        let t = Instant::now();
        let status = std::process::Command::new("psql")
            .arg(database_url)
            .args(["-qXc", &format!("COPY {copy} FROM STDIN (FORMAT {format})")])
            .stdin(std::fs::File::open(&path)?)
            .status()?;
        anyhow::ensure!(status.success(), "psql COPY FROM failed");
        best = best.min(t.elapsed().as_secs_f64());
    }
    psql(&format!("DROP TABLE {copy}"))?;
    let _ = std::fs::remove_file(&path);
    Ok(best)
}

/// The ADBC peer (scripts/adbc-peer.py), best of two; None when Python lacks its packages.
fn adbc_peer(database_url: &str, query: &str) -> Option<f64> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/adbc-peer.py");
    let out = std::env::temp_dir().join("wharf-bench-adbc.parquet");
    let mut best: Option<f64> = None;
    for _ in 0..2 {
        let run = std::process::Command::new("python3")
            .arg(&script)
            .args([database_url, query])
            .arg(&out)
            .output()
            .ok()?;
        if !run.status.success() {
            return None;
        }
        let secs: f64 = String::from_utf8_lossy(&run.stdout).trim().parse().ok()?;
        best = Some(best.map_or(secs, |b: f64| b.min(secs)));
    }
    let _ = std::fs::remove_file(&out);
    best
}

/// Kadoa's synchronous reads on an API process of their own: page 1 and a deep page (limit
/// 1,000; page 5,000 when the run has 5M rows, else its last), and `limit=0` streaming the whole
/// run as JSON, with the API's resident memory before and its peak after.
async fn reads(
    client: &reqwest::Client,
    key: &str,
    wf_id: &str,
    settings: &wharf_shared::config::Settings,
    database_url: &str,
    rows: u64,
) -> anyhow::Result<()> {
    let api_bin = std::env::current_exe()?.with_file_name("wharf-api");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut api = wharf_tests::worker_command(&api_bin, settings, database_url)
        .env("WHARF_LISTEN", format!("127.0.0.1:{port}"))
        .env("WHARF_RATE_LIMIT", "0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deep = (rows / 1000).clamp(1, 5000);
    let mut timings = Vec::new();
    for page in [1, deep] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let body = client
                .get(format!(
                    "{base}/v4/workflows/{wf_id}/data?page={page}&limit=1000"
                ))
                .header("x-api-key", key)
                .send()
                .await?
                .bytes()
                .await?;
            anyhow::ensure!(body.len() > 1000, "page {page} came back short");
            best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        }
        timings.push((page, best));
    }
    let rss_kb = |pid: u32, field: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let before = rss_kb(api.id(), "VmRSS:");
    let t = Instant::now();
    let mut stream = client
        .get(format!("{base}/v4/workflows/{wf_id}/data?limit=0"))
        .header("x-api-key", key)
        .send()
        .await?
        .bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    let peak = rss_kb(api.id(), "VmHWM:");
    let _ = api.kill();
    let _ = api.wait();
    println!(
        "\nKadoa reads (GET /v4/workflows/{{id}}/data, limit 1,000, best of 5): page 1 {:.1} ms, page {} {:.1} ms",
        timings[0].1, timings[1].0, timings[1].1
    );
    println!(
        "limit=0 as JSON, {rows} rows: {secs:.2} s, {:.0} rows/s, {:.1} MB; API RSS {:.0} MB before, peak {:.0} MB",
        rows as f64 / secs,
        bytes as f64 / 1e6,
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    Ok(())
}

/// A database bundle of the bench project (its two workflows, 2 × `rows` rows) and its import
/// into a new project: seconds, rows/s, size and each worker's peak RSS.
async fn bundles(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    worker_bin: &std::path::Path,
    settings: &wharf_shared::config::Settings,
    database_url: &str,
    rows: u64,
) -> anyhow::Result<()> {
    let every = Duration::from_millis(20);
    let mut worker = spawn_worker(worker_bin, settings, database_url)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let created: Value = client
        .post(format!("{base}/projects/bench/export"))
        .header("x-api-key", key)
        .json(&json!({"scope": "database"}))
        .send()
        .await?
        .json()
        .await?;
    let exp = created["data"]["export_id"].as_str().unwrap_or_default();
    let id = uuid::Uuid::parse_str(exp.trim_start_matches("exp_"))?.to_string();
    let status = wharf_tests::bench::wait_done(client, base, key, &id, every).await?;
    let secs = t.elapsed().as_secs_f64();
    let rss = peak_rss_kb(worker.id()).unwrap_or(0) as f64 / 1024.0;
    let _ = worker.kill();
    let _ = worker.wait();
    anyhow::ensure!(
        status["status"] == "COMPLETED" && status["rowCount"].as_u64() == Some(2 * rows),
        "bundle failed: {status}"
    );
    let size = status["sizeBytes"].as_f64().unwrap_or(0.0) / 1e6;
    println!(
        "\nbundle (scope database: 2 workflows, {} rows, Parquet zstd in a ZIP): {secs:.2} s, {:.0} rows/s, {size:.1} MB, worker peak RSS {rss:.0} MB",
        2 * rows,
        (2 * rows) as f64 / secs
    );

    // The bundle streamed from the API into POST /v1/imports of another project.
    let (import_key, _) = wharf_tests::bench::project_and_workflow(
        client,
        base,
        "bench-import",
        serde_json::from_str::<Value>(SCHEMA)?,
    )
    .await?;
    let mut worker = spawn_worker(worker_bin, settings, database_url)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let body = client
        .get(format!("{base}/v1/exports/{id}/download?mode=stream"))
        .header("x-api-key", key)
        .send()
        .await?
        .bytes_stream();
    let created: Value = client
        .post(format!("{base}/v1/imports"))
        .header("x-api-key", &import_key)
        .header("content-type", "application/zip")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?
        .json()
        .await?;
    let import_id = created["importId"].as_str().unwrap_or_default().to_string();
    let uploaded = t.elapsed().as_secs_f64();
    let status = loop {
        let s: Value = client
            .get(format!("{base}/v1/imports/{import_id}"))
            .header("x-api-key", &import_key)
            .send()
            .await?
            .json()
            .await?;
        if !matches!(s["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")) {
            break s;
        }
        tokio::time::sleep(every).await;
    };
    let secs = t.elapsed().as_secs_f64();
    let rss = peak_rss_kb(worker.id()).unwrap_or(0) as f64 / 1024.0;
    let _ = worker.kill();
    let _ = worker.wait();
    anyhow::ensure!(
        status["status"] == "COMPLETED"
            && status["progress"]["rowsTotal"].as_u64() == Some(2 * rows),
        "import failed: {status}"
    );
    println!(
        "import of that bundle (upload {uploaded:.2} s, then verify every checksum and schema, write in one transaction): {secs:.2} s, {:.0} rows/s, worker peak RSS {rss:.0} MB",
        (2 * rows) as f64 / secs
    );
    Ok(())
}

/// The phase figures of the worker's "export completed" log line (milliseconds since claim).
fn phases(log: &std::path::Path) -> Option<Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "export completed")
        .map(|v| v["fields"].clone())
}

fn spawn_worker(
    bin: &std::path::Path,
    s: &wharf_shared::config::Settings,
    database_url: &str,
) -> anyhow::Result<std::process::Child> {
    let log = std::fs::File::create(worker_log())?;
    Ok(wharf_tests::worker_command(bin, s, database_url)
        .env("RUST_LOG", "warn,wharf_shared::export=info")
        .env("WHARF_LOG_FORMAT", "json")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

fn worker_log() -> std::path::PathBuf {
    std::env::temp_dir().join("wharf-bench-worker.log")
}
