use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde_json::json;
use wharf_shared::ErrorCode;
use wharf_shared::metrics::Exposition;

use crate::error::{ApiError, envelope_response};
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Up")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// PostgreSQL, the queue (Redis, when it is the transport) and the object store (S3 or the
/// directory) are reachable; 503 naming the ones that are not.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready"), (status = 503, description = "A backing service is down", body = crate::error::ErrorEnvelope)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let limit = Duration::from_secs(2);
    let (pg, queue, s3) = futures::join!(
        tokio::time::timeout(limit, wharf_shared::repo::ping(&state.pool)),
        tokio::time::timeout(limit, state.queue.ping()),
        tokio::time::timeout(limit, state.store.check()),
    );
    let mut checks = vec![("postgres", matches!(pg, Ok(Ok(()))))];
    if state.queue.kind() != "postgres" {
        checks.push((state.queue.kind(), matches!(queue, Ok(Ok(())))));
    }
    let store = match state.settings.store {
        wharf_shared::config::StoreKind::S3 => "s3",
        wharf_shared::config::StoreKind::Dir(_) => "dir",
    };
    checks.push((store, matches!(s3, Ok(Ok(())))));
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    if down.is_empty() {
        let mut ok = serde_json::Map::new();
        for (name, _) in checks {
            ok.insert(name.to_string(), json!("ok"));
        }
        return HttpResponse::Ok().json(json!({"status": "ready", "checks": ok}));
    }
    tracing::warn!(down = ?down, "not ready");
    envelope_response(
        ErrorCode::ServiceUnavailable,
        format!("not ready: {} unreachable", down.join(", ")),
    )
}

/// Metrics: queue depth and oldest age (from PostgreSQL, cached for a second), this process's
/// HTTP requests and latency by route pattern, and its connection pool. The Prometheus text
/// format 0.0.4, or OpenMetrics 1.0.0 when `Accept` asks for it.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text 0.0.4 (`text/plain; version=0.0.4`), or OpenMetrics text when Accept names application/openmetrics-text",
        content((String = "text/plain"), (String = "application/openmetrics-text"))),
        (status = 503, body = crate::error::ErrorEnvelope)))]
#[get("/metrics")]
pub async fn metrics(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let format = Exposition::from_accept(
        req.headers()
            .get(actix_web::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let body = state.metrics.render(&state.pool, format).await?;
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((actix_web::http::header::VARY, "Accept"))
        .body(body))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json")))]
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}
