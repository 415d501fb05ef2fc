//! What a worker tells operators: `/metrics` and `/healthz` on `WHARF_METRICS_LISTEN` (served
//! by actix-web, as the API is), and its row in the live-workers register every few seconds
//! (deleted when it stops).

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpResponse, HttpServer, web};
use tokio_util::sync::CancellationToken;
use wharf_shared::metrics::Exposition;
use wharf_shared::repo::ops;

use crate::startup::Worker;

/// How often a worker says it is alive.
pub const SEEN_EVERY: Duration = Duration::from_secs(2);

/// Binds `addr` and serves until `stop`; returns the bound address.
pub async fn serve_metrics(
    worker: Worker,
    addr: &str,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let data = web::Data::new(worker);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
            .service(web::resource("/metrics").get(metrics))
            .service(web::resource("/healthz").get(healthz))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("the metrics listener bound no address"))?;
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    tokio::spawn(async move {
        stop.cancelled().await;
        handle.stop(true).await;
    });
    Ok(bound)
}

async fn metrics(req: actix_web::HttpRequest, worker: web::Data<Worker>) -> HttpResponse {
    let format = Exposition::from_accept(
        req.headers()
            .get(actix_web::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    match worker.ctx.metrics.render(&worker.ctx.pool, format).await {
        Ok(text) => HttpResponse::Ok()
            .content_type(format.content_type())
            .insert_header((actix_web::http::header::VARY, "Accept"))
            .body(text),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body(format!("metrics unavailable: {}\n", e.public_message())),
    }
}

async fn healthz(worker: web::Data<Worker>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "worker": worker.ctx.worker_id,
        "running": worker.running(),
    }))
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
