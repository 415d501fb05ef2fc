use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_shared::Error;
use wharf_shared::auth::{admin_token_matches, mint_key};
use wharf_shared::domain::schema::validate_workflow_name;
use wharf_shared::domain::scopes::Scope;
use wharf_shared::repo::projects;

use crate::app::views::KeyCreated;
use crate::auth::bearer;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// 1-64 characters of a-z, 0-9 and -, starting with a letter or digit.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9][a-z0-9-]{0,63}$")]
    pub slug: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectCreated {
    pub id: uuid::Uuid,
    pub slug: String,
    pub name: String,
    /// The project's first key, with every scope. Its secret is shown only here.
    pub api_key: KeyCreated,
}

fn validate_slug(slug: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "slug: must be 1-64 characters of a-z, 0-9 and -, not starting with -",
        ))
    }
}

/// Creates a project and its first (admin) key. Needs `Authorization: Bearer $WHARF_ADMIN_TOKEN`.
#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = CreateProject,
    security(("bearer" = [])),
    responses(
        (status = 201, body = ProjectCreated),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 401, body = crate::error::ErrorEnvelope),
        (status = 404, description = "WHARF_ADMIN_TOKEN is not set: the route is disabled", body = crate::error::ErrorEnvelope),
        (status = 409, description = "The slug is taken", body = crate::error::ErrorEnvelope),
        (status = 429, description = "Too many failed authentications from this address (WHARF_AUTH_FAILURES)", body = crate::error::ErrorEnvelope)))]
#[post("/v1/projects")]
pub async fn create_project(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let configured = state.settings.admin_token.as_ref().ok_or(Error::NotFound(
        "route (project creation is disabled: WHARF_ADMIN_TOKEN is not set)",
    ))?;
    let presented = bearer(&req).ok_or(Error::UnauthorizedOperator(
        "project creation needs Authorization: Bearer <WHARF_ADMIN_TOKEN>",
    ))?;
    let client = req.peer_addr().map(|a| a.ip());
    state.auth_failures.admit(client)?;
    if !admin_token_matches(configured, &presented) {
        state.auth_failures.failed(client);
        return Err(Error::UnauthorizedOperator(
            "invalid admin token (project creation needs Authorization: Bearer <WHARF_ADMIN_TOKEN>)",
        )
        .into());
    }
    let body: CreateProject = body.parse()?;
    validate_slug(&body.slug)?;
    validate_workflow_name(&body.name)
        .map_err(|_| Error::invalid("name: must be 1 to 200 characters"))?;
    let scopes = [Scope::Read, Scope::Write, Scope::Admin];
    let new_key = mint_key();
    let (project, key) =
        projects::create_with_key(&state.pool, &body.slug, &body.name, &new_key, &scopes).await?;
    tracing::info!(project_id = %project.id, key_id = %key.id, "project created");
    Ok(HttpResponse::Created().json(ProjectCreated {
        id: project.id,
        slug: project.slug,
        name: project.name,
        api_key: KeyCreated {
            id: key.id,
            key: new_key.secret,
            scopes: key.scopes,
        },
    }))
}
