//! `wharf`: the command-line client (API.md, "The `wharf` command-line client"). Create an
//! export, watch it build, download it (resuming an interrupted download with Range) and verify
//! its sha256, in one command. Bars on a terminal, plain lines otherwise.
//! Exit codes: 0 success, 1 the export failed or the server refused, 2 bad usage.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

mod client;
mod transfer;
mod watch;

use client::*;
use transfer::*;
use watch::watch;
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
    Export(ExportArgs),
    /// An export's status, as JSON.
    Status { export: String },
    /// Downloads a completed export (resuming a partial file) and verifies its sha256.
    Download {
        export: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    workflow: String,
    /// csv, tsv, json, ndjson or parquet.
    #[arg(long, default_value = "csv",
          value_parser = ["csv", "tsv", "json", "ndjson", "parquet"])]
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
}

impl ExportArgs {
    /// The create request's body: only what was given, the server's defaults for the rest.
    fn body(&self) -> Outcome<Value> {
        let mut body = json!({"format": self.format});
        if !self.filters.is_empty() {
            let filters = self.filters.iter().map(|f| parse_filter(f));
            body["filters"] = Value::Array(filters.collect::<Outcome<_>>()?);
        }
        if !self.columns.is_empty() {
            body["columns"] = json!(self.columns);
        }
        for (name, value) in [
            ("sortBy", &self.sort),
            ("order", &self.order),
            ("compression", &self.compression),
        ] {
            if let Some(v) = value {
                body[name] = json!(v);
            }
        }
        Ok(body)
    }
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
        Cmd::Export(args) => {
            let path = format!("/v1/workflows/{}/exports", args.workflow);
            let created = c.json(c.post(&path).json(&args.body()?)).await?;
            let id = created["exportId"].as_str().unwrap_or_default().to_string();
            c.say(&format!("export {id} created"));
            let status = watch(c, &id).await?;
            download(c, &status, args.output).await
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

pub(crate) fn finished_badly(status: &Value) -> Failure {
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
