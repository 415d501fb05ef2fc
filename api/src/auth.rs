//! The `Auth` extractor: the key from `x-api-key` or `Authorization: Bearer`, resolved to its
//! project and scopes. Handlers then `require` the scope they need.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use wharf_shared::Error;
use wharf_shared::auth::{self, Principal};
use wharf_shared::domain::scopes::Scope;

use crate::error::ApiError;
use crate::state::AppState;

pub struct Auth(pub Principal);

impl Auth {
    pub fn require(&self, scope: Scope) -> Result<&Principal, ApiError> {
        self.0.require(scope)?;
        Ok(&self.0)
    }
}

/// The credential a request presents: `x-api-key` first, else a Bearer token.
pub fn presented_key(req: &HttpRequest) -> Option<String> {
    if let Some(v) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    bearer(req)
}

pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = presented_key(req);
        let client = req.peer_addr().map(|a| a.ip());
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let key = key.filter(|k| !k.is_empty()).ok_or(Error::Unauthorized)?;
            let state =
                state.ok_or_else(|| Error::Unexpected(anyhow::anyhow!("app state missing")))?;
            state.auth_failures.admit(client)?;
            let principal = match auth::authenticate(&state.pool, &state.keys, &key).await {
                Err(Error::Unauthorized) => {
                    state.auth_failures.failed(client);
                    return Err(Error::Unauthorized.into());
                }
                other => other?,
            };
            state.limiter.check(principal.key_id)?;
            tracing::Span::current()
                .record("project_id", tracing::field::display(principal.project_id));
            Ok(Auth(principal))
        })
    }
}

/// Parses an id from a path segment: malformed → 400 naming the parameter.
pub fn parse_id(name: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| {
        Error::invalid(format!(
            "{name}: \"{}\" is not a valid UUID",
            wharf_shared::domain::schema::printable(raw)
        ))
        .into()
    })
}
