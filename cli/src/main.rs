//! `wharf`: the command-line client (API.md, "The `wharf` command-line client"). Create an
//! export, watch it build, download it (resuming an interrupted download with Range) and verify
//! its sha256, in one command. Bars on a terminal, plain lines otherwise.
//! Exit codes: 0 success, 1 the export failed or the server refused, 2 bad usage.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
#[command(name = "wharf", version, about = "Wharf's command-line client")]
struct Cli {
    /// The API's base URL.
    #[arg(long, env = "WHARF_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key of the project.
    #[arg(long, env = "WHARF_API_KEY", hide_env_values = true)]
    key: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The project's workflows.
    Workflows,
    /// Uploads FILE as a run of WORKFLOW (NDJSON, JSON or CSV, by its extension).
    Ingest { workflow: String, file: PathBuf },
    /// Creates an export, waits for it with a progress bar, downloads and verifies it.
    Export {
        workflow: String,
        /// csv, tsv, json, ndjson or parquet.
        #[arg(long, default_value = "csv")]
        format: String,
        /// FIELD:OP:VALUE (VALUE as JSON when it parses, else text), repeatable.
        #[arg(long = "filter")]
        filters: Vec<String>,
        #[arg(long)]
        sort: Option<String>,
        /// asc or desc.
        #[arg(long)]
        order: Option<String>,
        /// Comma-separated columns.
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// gzip for text formats; snappy, zstd or none for parquet.
        #[arg(long)]
        compression: Option<String>,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// An export's status, as JSON.
    Status { export: String },
    /// Downloads a completed export (resuming a partial file) and verifies its sha256.
    Download {
        export: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// A failure to report: the server's code and message, or ours.
struct Failure {
    code: String,
    message: String,
    usage: bool,
}

type Outcome<T> = Result<T, Failure>;

fn fail(code: &str, message: impl Into<String>) -> Failure {
    Failure {
        code: code.into(),
        message: message.into(),
        usage: false,
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: "USAGE".into(),
        message: message.into(),
        usage: true,
    }
}

fn net(e: reqwest::Error) -> Failure {
    fail("NETWORK", format!("cannot reach the API: {e}"))
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    tty: bool,
}

impl Client {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
    }

    /// The JSON body of a 2xx answer, else the server's error code and message.
    async fn json(&self, req: reqwest::RequestBuilder) -> Outcome<Value> {
        let res = req.send().await.map_err(net)?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(server_error(status.as_u16(), &body))
        }
    }

    /// Plain lines when not on a terminal.
    fn say(&self, line: &str) {
        if !self.tty {
            println!("{line}");
        }
    }
}

fn server_error(status: u16, body: &Value) -> Failure {
    let code = body["error"]["code"]
        .as_str()
        .map_or_else(|| format!("HTTP_{status}"), str::to_string);
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("the server refused the request")
        .to_string();
    fail(&code, message)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(key) = cli.key.clone().filter(|k| !k.is_empty()) else {
        eprintln!("wharf: no API key: set WHARF_API_KEY or pass --key");
        return ExitCode::from(2);
    };
    let client = Client {
        http: reqwest::Client::new(),
        base: cli.url.trim_end_matches('/').to_string(),
        key,
        tty: std::io::stderr().is_terminal(),
    };
    match run(&client, cli.cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("wharf: {}: {}", f.code, f.message);
            ExitCode::from(if f.usage { 2 } else { 1 })
        }
    }
}

async fn run(c: &Client, cmd: Cmd) -> Outcome<()> {
    match cmd {
        Cmd::Workflows => {
            let body = c.json(c.get("/v1/workflows?limit=200")).await?;
            for w in body["data"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}",
                    w["id"].as_str().unwrap_or_default(),
                    w["createdAt"].as_str().unwrap_or_default(),
                    w["name"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        Cmd::Ingest { workflow, file } => ingest(c, &workflow, &file).await,
        Cmd::Export {
            workflow,
            format,
            filters,
            sort,
            order,
            columns,
            compression,
            output,
        } => {
            let mut body = json!({"format": format});
            if !filters.is_empty() {
                body["filters"] = Value::Array(
                    filters
                        .iter()
                        .map(|f| parse_filter(f))
                        .collect::<Outcome<_>>()?,
                );
            }
            if let Some(s) = sort {
                body["sortBy"] = json!(s);
            }
            if let Some(o) = order {
                body["order"] = json!(o);
            }
            if !columns.is_empty() {
                body["columns"] = json!(columns);
            }
            if let Some(z) = compression {
                body["compression"] = json!(z);
            }
            let created = c
                .json(
                    c.post(&format!("/v1/workflows/{workflow}/exports"))
                        .json(&body),
                )
                .await?;
            let id = created["exportId"].as_str().unwrap_or_default().to_string();
            c.say(&format!("export {id} created"));
            let status = watch(c, &id).await?;
            download(c, &status, output).await
        }
        Cmd::Status { export } => {
            let body = c.json(c.get(&format!("/v1/exports/{export}"))).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
            Ok(())
        }
        Cmd::Download { export, output } => {
            let status = c.json(c.get(&format!("/v1/exports/{export}"))).await?;
            if status["status"] != "COMPLETED" {
                return Err(finished_badly(&status));
            }
            download(c, &status, output).await
        }
    }
}

/// FIELD:OP:VALUE → a native filter; VALUE as JSON when it parses (numbers, true, null, lists),
/// else as text; `is_null` and `not_null` take none.
fn parse_filter(raw: &str) -> Outcome<Value> {
    let mut parts = raw.splitn(3, ':');
    let (Some(field), Some(op)) = (parts.next(), parts.next()) else {
        return Err(usage(format!(
            "--filter {raw}: expected FIELD:OP:VALUE (e.g. price:gte:10)"
        )));
    };
    let mut f = json!({"field": field, "op": op});
    match (op, parts.next()) {
        ("is_null" | "not_null", None) => {}
        (_, Some(v)) => {
            f["value"] = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.into()));
        }
        (_, None) => return Err(usage(format!("--filter {raw}: a value is needed"))),
    }
    Ok(f)
}

fn finished_badly(status: &Value) -> Failure {
    let s = status["status"].as_str().unwrap_or("UNKNOWN");
    match s {
        "FAILED" => fail(
            status["error"]["code"].as_str().unwrap_or("EXPORT_FAILED"),
            status["error"]["message"]
                .as_str()
                .unwrap_or("the export failed"),
        ),
        "CANCELLED" => fail("EXPORT_CANCELLED", "the export was cancelled"),
        "EXPIRED" => fail("EXPORT_EXPIRED", "the export's file has expired"),
        other => fail("EXPORT_NOT_READY", format!("the export is {other}")),
    }
}

/// Waits for the export with long polls, showing rows, percent and ETA; returns its final
/// status, or the failure it ended in.
async fn watch(c: &Client, id: &str) -> Outcome<Value> {
    // Until the row count is known (queued, or counting), a spinner; then the bar.
    let waiting = ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let counting = ProgressStyle::with_template(
        "{spinner} building  [{bar:32}] {pos}/{len} rows {percent:>3}%  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar = if c.tty {
        let b = ProgressBar::new(0);
        b.set_style(waiting.clone());
        b.set_message("starting");
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        ProgressBar::hidden()
    };
    let mut last_line = String::new();
    loop {
        let s = c.json(c.get(&format!("/v1/exports/{id}?wait=1"))).await?;
        let state = s["status"].as_str().unwrap_or("UNKNOWN");
        let (rows, total) = (
            s["progress"]["rowsWritten"].as_u64().unwrap_or(0),
            s["progress"]["rowsTotal"].as_u64().unwrap_or(0),
        );
        let eta = s["etaSeconds"]
            .as_f64()
            .map(|e| format!("ETA {e:.0} s"))
            .unwrap_or_default();
        let queued = s["queuePosition"]
            .as_i64()
            .map(|p| format!("queued, {p} ahead"))
            .unwrap_or_default();
        if total == 0 {
            bar.set_style(waiting.clone());
            bar.set_message(if queued.is_empty() {
                "starting".to_string()
            } else {
                queued.clone()
            });
        } else {
            bar.set_style(counting.clone());
            bar.set_length(total.max(rows));
            bar.set_position(rows);
            bar.set_message(eta.clone());
        }
        let line = format!(
            "{state} {rows}/{total} rows {:.0}% {queued}{eta}",
            s["progress"]["percent"].as_f64().unwrap_or(0.0)
        );
        if line != last_line {
            c.say(line.trim_end());
            last_line = line;
        }
        match state {
            "QUEUED" | "IN_PROGRESS" => continue,
            "COMPLETED" => {
                bar.finish_and_clear();
                return Ok(s);
            }
            _ => {
                bar.abandon();
                return Err(finished_badly(&s));
            }
        }
    }
}

/// The file name the server gave (Content-Disposition's ASCII `filename`), else the id.
fn default_name(status: &Value, disposition: Option<&str>) -> PathBuf {
    let given = disposition.and_then(|d| {
        d.split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("filename="))
            .map(|n| n.trim_matches('"').replace(['/', '\\'], "_"))
    });
    PathBuf::from(given.unwrap_or_else(|| {
        format!(
            "{}.{}",
            status["exportId"].as_str().unwrap_or("export"),
            status["format"].as_str().unwrap_or("bin")
        )
    }))
}

fn part_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// Downloads into `OUTPUT.part`, resuming what a previous run left there with `Range`, checks the
/// whole file's sha256 against the status, then renames it into place.
async fn download(c: &Client, status: &Value, output: Option<PathBuf>) -> Outcome<()> {
    let id = status["exportId"].as_str().unwrap_or_default();
    let want_sha = status["sha256"].as_str().unwrap_or_default().to_string();
    let size = status["sizeBytes"].as_u64().unwrap_or(0);
    let io = |e: std::io::Error| fail("IO", e.to_string());
    // Find the name first (HEAD), so a resumed download writes to the same place.
    let head = c
        .http
        .head(format!("{}/v1/exports/{id}/download?mode=stream", c.base))
        .header("x-api-key", &c.key)
        .send()
        .await
        .map_err(net)?;
    let disposition = head
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let out = output.unwrap_or_else(|| default_name(status, disposition.as_deref()));
    let part = part_path(&out);
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut req = c.get(&format!("/v1/exports/{id}/download?mode=stream"));
    if have > 0 && have < size {
        req = req.header("range", format!("bytes={have}-"));
    }
    let res = req.send().await.map_err(net)?;
    let code = res.status().as_u16();
    let (mut file, start) = match code {
        206 => (
            std::fs::OpenOptions::new()
                .append(true)
                .open(&part)
                .map_err(io)?,
            have,
        ),
        200 => (std::fs::File::create(&part).map_err(io)?, 0),
        _ => {
            let body: Value = res.json().await.unwrap_or(Value::Null);
            return Err(server_error(code, &body));
        }
    };
    if start > 0 {
        c.say(&format!("resuming at byte {start} of {size}"));
    }
    let bar = if c.tty {
        let b = ProgressBar::new(size);
        b.set_style(
            ProgressStyle::with_template(
                "downloading [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_position(start);
        b
    } else {
        ProgressBar::hidden()
    };
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            fail(
                "NETWORK",
                format!("the download was interrupted ({e}); run the command again to resume"),
            )
        })?;
        file.write_all(&chunk).map_err(io)?;
        bar.inc(chunk.len() as u64);
    }
    file.flush().map_err(io)?;
    drop(file);
    bar.finish_and_clear();
    let got = sha256_of(&part).map_err(io)?;
    if got != want_sha {
        std::fs::remove_file(&part).ok();
        return Err(fail(
            "CHECKSUM_MISMATCH",
            format!("the file's sha256 is {got}, the export's {want_sha}; removed, run again"),
        ));
    }
    std::fs::rename(&part, &out).map_err(io)?;
    println!("{}\t{size} bytes\tsha256 {got}", out.display());
    Ok(())
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Streams FILE as a run, with a byte bar.
async fn ingest(c: &Client, workflow: &str, file: &Path) -> Outcome<()> {
    let ct = match file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("ndjson" | "jsonl") => "application/x-ndjson",
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        _ => {
            return Err(usage(format!(
                "{}: expected a .ndjson, .jsonl, .json or .csv file",
                file.display()
            )));
        }
    };
    let size = std::fs::metadata(file)
        .map_err(|e| usage(format!("{}: {e}", file.display())))?
        .len();
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| usage(format!("{}: {e}", file.display())))?;
    let bar = if c.tty {
        let b = ProgressBar::new(size);
        b.set_style(
            ProgressStyle::with_template(
                "uploading [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let counted = bar.clone();
    let body = futures::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<bytes::Bytes, std::io::Error>(bytes::Bytes::from(buf)),
                    f,
                ))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
    .inspect(move |c| {
        if let Ok(b) = c {
            counted.inc(b.len() as u64);
        }
    });
    let run = c
        .json(
            c.post(&format!("/v1/workflows/{workflow}/runs"))
                .header("content-type", ct)
                .body(reqwest::Body::wrap_stream(body)),
        )
        .await;
    bar.finish_and_clear();
    let run = run?;
    println!(
        "run {}\t{} rows",
        run["runId"].as_str().unwrap_or_default(),
        run["rowCount"]
    );
    Ok(())
}
