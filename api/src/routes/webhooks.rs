//! Webhook endpoints (admin scope): register (the URL checked against SSRF), list, remove, send
//! a test event, the recent deliveries of one, and a delivery sent again.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_shared::Error;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::repo::webhooks::{self, Webhook};
use wharf_shared::webhooks::{Event, SendError, events_of, new_secret, resolve, send};

use super::{List, ListQuery};
use crate::app::audit;
use crate::auth::{Auth, parse_id};
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// An http(s) URL; its host may not be or resolve to a loopback, private, link-local or
    /// metadata address (`WHARF_WEBHOOK_ALLOW_PRIVATE` allows loopback and private ones).
    #[schema(max_length = 2048)]
    pub url: String,
    /// Any of export.completed, export.failed, export.expired, import.completed, import.failed.
    pub events: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDto {
    pub id: uuid::Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCreated {
    pub id: uuid::Uuid,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_…` and the base64 of 32 bytes: the HMAC key of `Wharf-Signature` (the whole
    /// string) and of the Standard Webhooks `webhook-signature` (the bytes), shown only here.
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookDto {
    fn from(w: Webhook) -> Self {
        WebhookDto {
            id: w.id,
            url: w.url,
            events: w.events,
            created_at: w.created_at,
        }
    }
}

/// Registers an endpoint for the project's events (admin scope).
#[utoipa::path(post, operation_id = "create_webhook", path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookCreated), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 409, description = "The project has its 20 endpoints already", body = crate::error::ErrorEnvelope),
        (status = 413, body = crate::error::ErrorEnvelope), (status = 415, body = crate::error::ErrorEnvelope)))]
#[post("/v1/webhooks")]
pub async fn create(
    auth: Auth,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let ask: CreateWebhook = body.parse()?;
    let events = events_of(&ask.events)?;
    resolve(&ask.url, state.settings.webhook_allow_private).await?;
    let secret = new_secret();
    let hook = webhooks::create(
        &state.pool,
        principal.project_id,
        &ask.url,
        &events,
        &secret,
    )
    .await?
    .ok_or_else(|| {
        Error::Conflict(format!(
            "the project has {} webhook endpoints already; remove one first",
            webhooks::MAX_WEBHOOKS
        ))
    })?;
    tracing::info!(webhook_id = %hook.id, "webhook registered");
    let detail = serde_json::json!({"webhookId": hook.id, "url": hook.url, "events": hook.events});
    audit::changed(&state, &req, principal, "webhook.created", detail).await;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(WebhookCreated {
            id: hook.id,
            url: hook.url,
            events: hook.events,
            secret: hook.secret,
            created_at: hook.created_at,
        }))
}

/// The project's endpoints, newest first (admin scope; secrets are never shown again).
#[utoipa::path(get, operation_id = "list_webhooks", path = "/v1/webhooks", tag = "webhooks", params(ListQuery),
    responses((status = 200, body = List<WebhookDto>), (status = 400, body = crate::error::ErrorEnvelope)))]
#[get("/v1/webhooks")]
pub async fn list(
    auth: Auth,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let (rows, next) = webhooks::list(&state.pool, principal.project_id, query.page()?).await?;
    Ok(HttpResponse::Ok().json(List::new(
        rows.into_iter().map(WebhookDto::from).collect(),
        next,
    )))
}

/// Removes an endpoint: no more deliveries to it (admin scope).
#[utoipa::path(delete, operation_id = "delete_webhook", path = "/v1/webhooks/{webhookId}", tag = "webhooks", params(("webhookId" = uuid::Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[delete("/v1/webhooks/{webhookId}")]
pub async fn remove(
    auth: Auth,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let id = parse_id("webhookId", &path)?;
    if !webhooks::delete(&state.pool, principal.project_id, id).await? {
        return Err(Error::NotFound("webhook").into());
    }
    let detail = serde_json::json!({"webhookId": id});
    audit::changed(&state, &req, principal, "webhook.deleted", detail).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDto {
    /// The delivery (one event to this endpoint): what `…/deliveries/{deliveryId}/retry` takes.
    pub id: uuid::Uuid,
    /// `evt_…`, as the receiver saw it.
    pub event_id: String,
    pub event: String,
    pub job_id: uuid::Uuid,
    /// PENDING, DELIVERED or DEAD (undelivered for 24 h).
    pub state: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// When a PENDING delivery is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The project's endpoint named by the path's `webhookId` (404 for another project's).
async fn endpoint(
    state: &AppState,
    principal: &wharf_shared::auth::Principal,
    raw: &str,
) -> Result<Webhook, ApiError> {
    let id = parse_id("webhookId", raw)?;
    Ok(webhooks::get(&state.pool, principal.project_id, id)
        .await?
        .ok_or(Error::NotFound("webhook"))?)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryDto>,
}

/// The 100 most recent deliveries of an endpoint (admin scope).
#[utoipa::path(get, operation_id = "list_webhook_deliveries", path = "/v1/webhooks/{webhookId}/deliveries", tag = "webhooks", params(("webhookId" = uuid::Uuid, Path)),
    responses((status = 200, body = DeliveryList), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/v1/webhooks/{webhookId}/deliveries")]
pub async fn deliveries(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let hook = endpoint(&state, principal, &path).await?;
    let rows = webhooks::deliveries(&state.pool, hook.id, 100).await?;
    Ok(HttpResponse::Ok().json(DeliveryList {
        data: rows.into_iter().map(DeliveryDto::from).collect(),
    }))
}

impl From<webhooks::Delivery> for DeliveryDto {
    fn from(d: webhooks::Delivery) -> Self {
        DeliveryDto {
            id: d.id,
            event_id: format!("evt_{}", d.event_id.simple()),
            event: d.event_type,
            job_id: d.job_id,
            next_attempt_at: d.next_attempt_at.filter(|_| d.state == "PENDING"),
            state: d.state,
            attempts: d.attempts,
            last_status_code: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
        }
    }
}

/// What a test event got.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestSent {
    /// The `ping` event's id (`evt_…`).
    pub event_id: String,
    /// The receiver answered 2xx.
    pub delivered: bool,
    /// What the receiver answered, if it answered.
    pub status_code: Option<u16>,
    /// Why there was no answer (no connection, no answer within 10 s, an address the rules
    /// refuse now).
    pub error: Option<String>,
}

/// Sends a `ping` event to the endpoint at once, signed as every delivery, and answers with what
/// the receiver said (admin scope). Not retried, not recorded as a delivery.
#[utoipa::path(post, operation_id = "test_webhook", path = "/v1/webhooks/{webhookId}/test", tag = "webhooks", params(("webhookId" = uuid::Uuid, Path)),
    responses((status = 200, body = TestSent), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[post("/v1/webhooks/{webhookId}/test")]
pub async fn test(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let hook = endpoint(&state, principal, &path).await?;
    let event = Event {
        id: format!("evt_{}", wharf_shared::domain::ids::new_id().simple()),
        kind: "ping",
        created_at: Utc::now(),
        data: serde_json::json!({"webhookId": hook.id, "url": hook.url}),
    };
    let sent = send(
        &hook.url,
        state.settings.webhook_allow_private,
        &hook.secret,
        &event,
    )
    .await;
    tracing::info!(webhook_id = %hook.id, outcome = ?sent.as_ref().ok(), "webhook test sent");
    let (status_code, error) = match sent {
        Ok(code) => (Some(code), None),
        Err(SendError::Refused(e)) => (None, Some(e.public_message())),
        Err(SendError::Failed(why)) => (None, Some(why)),
    };
    Ok(HttpResponse::Ok().json(TestSent {
        event_id: event.id,
        delivered: status_code.is_some_and(|c| (200..300).contains(&c)),
        status_code,
        error,
    }))
}

/// Sends a delivery again: QUEUED at once with a day of attempts of its own, whatever its state
/// (receivers dedupe by the event's id); the endpoint's pause after failures ends (admin scope).
#[utoipa::path(post, operation_id = "retry_webhook_delivery", path = "/v1/webhooks/{webhookId}/deliveries/{deliveryId}/retry", tag = "webhooks",
    params(("webhookId" = uuid::Uuid, Path), ("deliveryId" = uuid::Uuid, Path)),
    responses((status = 202, body = DeliveryDto), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "The delivery is being made right now", body = crate::error::ErrorEnvelope)))]
#[post("/v1/webhooks/{webhookId}/deliveries/{deliveryId}/retry")]
pub async fn retry(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let hook = endpoint(&state, principal, &path.0).await?;
    let delivery = parse_id("deliveryId", &path.1)?;
    match webhooks::retry(&state.pool, hook.id, delivery).await? {
        webhooks::Retried::Queued(d) => {
            tracing::info!(webhook_id = %hook.id, delivery_id = %d.id, "webhook delivery retried");
            Ok(HttpResponse::Accepted().json(DeliveryDto::from(*d)))
        }
        webhooks::Retried::InFlight => Err(Error::Conflict(
            "the delivery is being made right now; see its outcome in the deliveries".into(),
        )
        .into()),
        webhooks::Retried::NotFound => Err(Error::NotFound("delivery").into()),
    }
}
