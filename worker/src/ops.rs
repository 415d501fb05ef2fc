//! What a worker tells operators: `/metrics` and `/healthz` on `WHARF_METRICS_LISTEN` (a small
//! HTTP/1.1 responder: one request per connection, GET only), and its row in the live-workers
//! register every few seconds (deleted when it stops).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wharf_shared::repo::ops;

use crate::startup::Worker;

/// How often a worker says it is alive.
pub const SEEN_EVERY: Duration = Duration::from_secs(2);

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Binds `addr` and serves until `stop`; returns the bound address.
pub async fn serve_metrics(
    worker: Worker,
    addr: &str,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { continue };
            let worker = worker.clone();
            tokio::spawn(async move {
                if let Err(e) = respond(&worker, stream).await {
                    tracing::debug!(error = %e, "metrics request ended early");
                }
            });
        }
    });
    Ok(bound)
}

async fn respond(worker: &Worker, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::other("request head timed out"))??;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => match worker.ctx.metrics.render(&worker.ctx.pool).await {
            Ok(text) => ("200 OK", wharf_shared::metrics::CONTENT_TYPE, text),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("metrics unavailable: {}\n", e.public_message()),
            ),
        },
        ("GET", "/healthz") => (
            "200 OK",
            "application/json",
            format!(
                "{{\"status\":\"ok\",\"worker\":{},\"running\":{}}}\n",
                serde_json::Value::String(worker.ctx.worker_id.clone()),
                worker.running()
            ),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The worker's row in the live-workers register, refreshed every `SEEN_EVERY`, removed at stop.
pub async fn register(worker: Worker, stop: CancellationToken) {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let concurrency = i32::try_from(worker.concurrency).unwrap_or(i32::MAX);
    let mut tick = tokio::time::interval(SEEN_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let running = i32::try_from(worker.running()).unwrap_or(i32::MAX);
                if let Err(e) = ops::worker_seen(&worker.ctx.pool, &worker.ctx.worker_id, &host, concurrency, running).await {
                    tracing::debug!(error = %e, "live-worker register not updated; next tick");
                }
            }
        }
    }
    ops::worker_gone(&worker.ctx.pool, &worker.ctx.worker_id)
        .await
        .ok();
}
