use actix_web::{HttpResponse, delete, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_shared::Error;
use wharf_shared::auth::mint_key;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::repo::keys;

use crate::auth::{Auth, parse_id};
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// One or more of `read`, `write`, `admin`.
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: uuid::Uuid,
    /// The secret: shown only in this response, stored only as a hash.
    pub key: String,
    pub scopes: Vec<Scope>,
}

/// Mints another key of the caller's project (admin scope).
#[utoipa::path(post, path = "/v1/api-keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope)))]
#[post("/v1/api-keys")]
pub async fn create_key(
    auth: Auth,
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
    let mut conn = state.pool.acquire().await.map_err(Error::from)?;
    let key = keys::create(
        &mut conn,
        principal.project_id,
        &new_key.hash,
        &new_key.prefix,
        &scopes,
    )
    .await?;
    tracing::info!(key_id = %key.id, project_id = %key.project_id, "api key created");
    Ok(HttpResponse::Created().json(KeyCreated {
        id: key.id,
        key: new_key.secret,
        scopes: key.scopes,
    }))
}

/// Revokes a key of the caller's project; effective on the next request (admin scope).
#[utoipa::path(delete, path = "/v1/api-keys/{keyId}", tag = "keys",
    params(("keyId" = uuid::Uuid, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope),
        (status = 404, body = crate::error::ErrorEnvelope)))]
#[delete("/v1/api-keys/{keyId}")]
pub async fn revoke_key(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth.require(Scope::Admin)?;
    let key_id = parse_id("keyId", &path)?;
    if !keys::revoke(&state.pool, principal.project_id, key_id).await? {
        return Err(Error::NotFound("api key").into());
    }
    tracing::info!(key_id = %key_id, "api key revoked");
    Ok(HttpResponse::NoContent().finish())
}
