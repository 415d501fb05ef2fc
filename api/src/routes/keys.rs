use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_shared::Error;
use wharf_shared::auth::mint_key;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::repo::keys;

use crate::app::audit;
use crate::app::views::KeyCreated;
use crate::auth::{Auth, parse_id};
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::routes::{List, ListQuery};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// One or more of `read`, `write`, `admin`.
    #[schema(value_type = Vec<Scope>, min_items = 1)]
    pub scopes: Vec<String>,
}

/// Mints another key of the caller's project (admin scope).
#[utoipa::path(post, path = "/v1/api-keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope),
        (status = 409, description = "The project holds 1,000 live keys already", body = crate::error::ErrorEnvelope),
        (status = 413, body = crate::error::ErrorEnvelope), (status = 415, body = crate::error::ErrorEnvelope),
        (status = 429, body = crate::error::ErrorEnvelope)))]
#[post("/v1/api-keys")]
pub async fn create_key(
    auth: Auth,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let body: CreateKey = body.parse()?;
    if body.scopes.is_empty() {
        return Err(Error::invalid("scopes: must name at least one of read, write, admin").into());
    }
    let mut scopes = Vec::with_capacity(body.scopes.len());
    for (i, s) in body.scopes.iter().enumerate() {
        let scope = Scope::parse(s).ok_or_else(|| {
            Error::invalid(format!(
                "scopes[{i}]: unknown scope \"{}\" (expected read, write or admin)",
                wharf_shared::domain::schema::printable(s)
            ))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes.sort();
    let new_key = mint_key();
    let key = keys::create_capped(
        &state.pool,
        principal.project_id,
        &new_key.hash,
        &new_key.prefix,
        &scopes,
    )
    .await?;
    tracing::info!(key_id = %key.id, project_id = %key.project_id, "api key created");
    let detail =
        serde_json::json!({"keyId": key.id, "prefix": new_key.prefix, "scopes": key.scopes});
    audit::changed(&state, &req, principal, "key.created", detail).await;
    Ok(HttpResponse::Created().json(KeyCreated {
        id: key.id,
        key: new_key.secret,
        scopes: key.scopes,
    }))
}

/// A key as listed: never its secret or its hash.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyDto {
    pub id: uuid::Uuid,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    /// When the key was last used (updated at most about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The project's keys, newest first, revoked ones included (admin scope).
#[utoipa::path(get, path = "/v1/api-keys", tag = "keys", params(ListQuery),
    responses((status = 200, body = List<KeyDto>), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope),
        (status = 429, body = crate::error::ErrorEnvelope)))]
#[get("/v1/api-keys")]
pub async fn list_keys(
    auth: Auth,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let (rows, next) = keys::list(&state.pool, principal.project_id, query.page()?).await?;
    let data = rows
        .into_iter()
        .map(|k| KeyDto {
            id: k.id,
            prefix: k.prefix,
            scopes: k.scopes,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(List::new(data, next)))
}

/// Revokes a key of the caller's project; effective on the next request (admin scope).
/// The project's last live admin key cannot be revoked (409).
#[utoipa::path(delete, path = "/v1/api-keys/{keyId}", tag = "keys",
    params(("keyId" = uuid::Uuid, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "The project's last live admin key", body = crate::error::ErrorEnvelope),
        (status = 429, body = crate::error::ErrorEnvelope)))]
#[delete("/v1/api-keys/{keyId}")]
pub async fn revoke_key(
    auth: Auth,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let key_id = parse_id("keyId", &path)?;
    match keys::revoke(&state.pool, principal.project_id, key_id).await? {
        keys::Revoked::Done => {
            let detail = serde_json::json!({"keyId": key_id});
            audit::changed(&state, &req, principal, "key.revoked", detail).await;
        }
        keys::Revoked::NotFound => return Err(Error::NotFound("api key").into()),
        keys::Revoked::LastAdmin => {
            return Err(Error::Conflict(
                "this is the project's last admin key; create another admin key before revoking it"
                    .into(),
            )
            .into());
        }
    }
    // This process at once; the others when PostgreSQL's notification reaches them.
    state.keys.invalidate();
    tracing::info!(key_id = %key_id, "api key revoked");
    Ok(HttpResponse::NoContent().finish())
}
