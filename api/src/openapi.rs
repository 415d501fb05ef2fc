//! The OpenAPI document, generated from the handlers' own annotations and types.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorEnvelope, ErrorMeta};
use crate::routes::{compat, downloads, exports, health, keys, projects, runs, workflows};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wharf",
        description = "Asynchronous exports of workflow datasets. Every error uses the envelope \
            `{\"error\": {\"code\", \"message\"}, \"meta\": {\"request_id\"}}`. Scopes: `read`, \
            `write` and `admin` (admin implies the others; read and write are independent). \
            Lists are newest first, `{\"data\": [...], \"nextCursor\"}`; pass `cursor` for the next \
            page and `limit` (1-200, default 50)."
    ),
    paths(
        health::healthz, health::readyz, health::metrics,
        projects::create_project, keys::create_key, keys::revoke_key,
        workflows::create_workflow, workflows::list_workflows, workflows::get_workflow,
        runs::create_run, runs::list_runs,
        exports::post_export, exports::list_exports, exports::get_export, exports::cancel_export, exports::get_dock_status,
        downloads::download, downloads::signed_file,
        compat::kadoa_create, compat::kadoa_download, compat::project_download,
    ),
    components(schemas(ErrorEnvelope, ErrorBody, ErrorMeta)),
    modifiers(&Security),
    security(("apiKey" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
