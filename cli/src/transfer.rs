//! Watching an export build, downloading it (resumed with Range, verified by sha256), and
//! ingesting a file as a run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::client::*;
use crate::finished_badly;

/// Waits for the export with long polls, showing rows, percent and ETA; returns its final
/// status, or the failure it ended in.
pub(crate) async fn watch(c: &Client, id: &str) -> Outcome<Value> {
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
pub(crate) fn default_name(status: &Value, disposition: Option<&str>) -> PathBuf {
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

pub(crate) fn part_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// Downloads into `OUTPUT.part`, resuming what a previous run left there with `Range`, checks the
/// whole file's sha256 against the status, then renames it into place.
pub(crate) async fn download(c: &Client, status: &Value, output: Option<PathBuf>) -> Outcome<()> {
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
    let bar = byte_bar(
        c,
        size,
        "downloading [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    );
    bar.set_position(start);
    let lines = plain_lines(c, &bar, "downloaded");
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
    lines.finish();
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

pub(crate) fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Streams FILE as a run, with a byte bar.
pub(crate) async fn ingest(c: &Client, workflow: &str, file: &Path) -> Outcome<()> {
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
    let bar = byte_bar(
        c,
        size,
        "uploading [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec}",
    );
    let lines = plain_lines(c, &bar, "uploaded");
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
    if run.is_ok() {
        lines.finish();
    }
    let run = run?;
    println!(
        "run {}\t{} rows",
        run["runId"].as_str().unwrap_or_default(),
        run["rowCount"]
    );
    Ok(())
}

/// A bar of `size` bytes drawn with `template` on a terminal; hidden (but counting, for
/// `plain_lines`) off one.
fn byte_bar(c: &Client, size: u64, template: &str) -> ProgressBar {
    let bar = if c.tty {
        ProgressBar::new(size)
    } else {
        ProgressBar::hidden()
    };
    bar.set_length(size);
    if c.tty {
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
    }
    bar
}

/// Off a terminal (a log, a pipe), progress as plain lines on stdout (as `say`): one every
/// `PLAIN_EVERY` while bytes move, and one at the end.
pub(crate) struct PlainLines {
    bar: ProgressBar,
    verb: &'static str,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub(crate) fn plain_lines(c: &Client, bar: &ProgressBar, verb: &'static str) -> PlainLines {
    let ticker = (!c.tty).then(|| {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PLAIN_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                println!("{}", plain_line(&bar, verb));
            }
        })
    });
    PlainLines {
        bar: bar.clone(),
        verb,
        ticker,
    }
}

impl PlainLines {
    pub(crate) fn finish(mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
            println!("{}", plain_line(&self.bar, self.verb));
        }
    }
}

impl Drop for PlainLines {
    fn drop(&mut self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
    }
}

fn plain_line(bar: &ProgressBar, verb: &str) -> String {
    let (done, total) = (bar.position(), bar.length().unwrap_or(0));
    let pct = if total > 0 {
        done as f64 * 100.0 / total as f64
    } else {
        100.0
    };
    format!("{verb} {done} of {total} bytes ({pct:.0} %)")
}
