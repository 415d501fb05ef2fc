//! The API as a real process (for tests that read its memory or its log), and raw HTTP
//! exchanges (for bodies that stall, never end, or that a client library would refuse).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ADMIN_TOKEN, TestApp, worker_command};

/// A `wharf-api` process on the app's database and services; killed when dropped.
pub struct ApiProcess {
    child: std::process::Child,
    pub address: String,
    pub log: std::path::PathBuf,
}

impl ApiProcess {
    /// Peak resident memory of the process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `secs` for the process to exit; whether it did, cleanly.
    pub fn terminate(&mut self, secs: u64) -> bool {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .ok();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Log lines at ERROR level (the JSON log format).
    pub fn error_lines(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .map(String::from)
            .collect()
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Starts `cmd` with JSON logs at info into a temporary file; returns the child and the file.
pub fn spawn_logged(
    mut cmd: std::process::Command,
    name: &str,
) -> (std::process::Child, std::path::PathBuf) {
    let log = std::env::temp_dir().join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
    let file = std::fs::File::create(&log).expect("log file");
    let child = cmd
        .env("WHARF_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    (child, log)
}

/// A binary built beside this test binary.
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test (it builds the binaries first)",
        bin.display()
    );
    bin
}

impl TestApp {
    /// Starts the real API binary on a free port with the app's settings and `env` on top,
    /// and waits until it answers.
    pub async fn spawn_api_process(&self, env: &[(&str, &str)]) -> ApiProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let address = format!("http://127.0.0.1:{port}");
        let mut cmd = worker_command(&binary("wharf-api"), &self.settings, &self.database_url());
        cmd.env("WHARF_LISTEN", format!("127.0.0.1:{port}"))
            .env("WHARF_PUBLIC_URL", &address)
            .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(env.iter().copied());
        let (child, log) = spawn_logged(cmd, "wharf-api");
        let api = ApiProcess {
            child,
            address,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = self
                .client
                .get(format!("{}/healthz", api.address))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return api;
            }
            assert!(
                Instant::now() < deadline,
                "wharf-api did not start: {}",
                api.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `head` (the request line and headers, without the blank line) and then the body
/// chunks, one every `gap`, while reading the answer; the answer may come before the body
/// ends (a server refusing it early). Gives up after `within`.
pub async fn raw_exchange(
    address: &str,
    head: &str,
    chunks: Vec<Vec<u8>>,
    gap: Duration,
    within: Duration,
) -> Option<RawResponse> {
    let addr = address.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut rd, mut wr) = stream.into_split();
    let head = format!("{head}\r\n\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for chunk in chunks {
            wr.write_all(&chunk).await?;
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        // Keep the write half open: closing it could end the exchange before the answer.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, std::io::Error>(wr)
    });
    let read = tokio::time::timeout(within, read_response(&mut rd)).await;
    writer.abort();
    read.ok().flatten()
}

async fn read_response(rd: &mut tokio::net::tcp::OwnedReadHalf) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = rd.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut res = RawResponse {
        status,
        head,
        body: String::new(),
    };
    let len: usize = res
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = rd.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    res.body = String::from_utf8_lossy(&body).to_string();
    Some(res)
}
