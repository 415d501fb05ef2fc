//! The OpenAPI document, generated from the routes' registration (`routes::configure`, through
//! utoipa-actix-web: a handler without its `#[utoipa::path]` cannot be registered) and the
//! handlers' own annotations and types. The router and the document cannot drift: both come
//! from the same `service` calls.

use std::sync::OnceLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;

use crate::compat::zangtable as compat;
use crate::error::{ErrorBody, ErrorEnvelope, ErrorMeta};
use crate::routes;

/// A file's bytes, as the document describes them (`type: string, format: binary`).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(#[allow(dead_code)] Vec<u8>);

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
    components(schemas(ErrorEnvelope, ErrorBody, ErrorMeta, compat::ProjectErrorEnvelope)),
    security(("apiKey" = []), ("bearer" = [])),
)]
struct ApiDoc;

/// The document `/openapi.json` serves: every registered route, with the security schemes
/// and the answers every route can give. Built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, mut doc) = actix_web::App::new()
            .into_utoipa_app()
            .openapi(ApiDoc::openapi())
            .configure(routes::configure)
            .split_for_parts();
        Security.modify(&mut doc);
        CommonResponses.modify(&mut doc);
        doc
    })
}

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

/// The answers every route can give besides its own: the HTTP layer's (400, 414, 431), a
/// backing service down (503), and on keyed routes the key's (401, 403) and the rate limit's
/// (429). Added here once, so no route's list can forget them.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let unkeyed = ["/healthz", "/metrics", "/readyz"].contains(&path.as_str());
            let schema = if path.starts_with("/projects/") {
                "ProjectErrorEnvelope"
            } else {
                "ErrorEnvelope"
            };
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
                &mut item.head,
            ];
            for op in ops.into_iter().flatten() {
                let keyed = op.security.is_none() && !unkeyed;
                for (code, what) in common_answers(unkeyed, keyed, op.request_body.is_some()) {
                    // The HTTP layer's own answers are in the plain envelope on every route.
                    let schema = if ["414", "431"].contains(&code) {
                        "ErrorEnvelope"
                    } else {
                        schema
                    };
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| envelope(schema, what).into());
                }
            }
        }
    }
}

/// The common answers of an operation: the HTTP layer's; a backing service's unless `unkeyed`
/// (health and metrics); the key's and the rate limit's when `keyed`; a body's when it takes one.
fn common_answers(unkeyed: bool, keyed: bool, body: bool) -> Vec<(&'static str, &'static str)> {
    let mut common = vec![
        (
            "400",
            "Malformed request or invalid parameters (the message names them)",
        ),
        ("414", "Request URI over 8 KiB"),
        ("431", "More than 64 request headers"),
    ];
    if !unkeyed {
        common.push((
            "503",
            "A backing service is unavailable; retry (Retry-After)",
        ));
    }
    if keyed {
        common.extend([
            ("401", "Missing, unknown or revoked API key"),
            ("403", "The key lacks the scope this route needs"),
            (
                "429",
                "Over the key's rate limit (WHARF_RATE_LIMIT), or too many failed \
                 authentications from this address (WHARF_AUTH_FAILURES); see Retry-After",
            ),
        ]);
    }
    if body {
        common.extend([
            ("413", "Request body too large"),
            ("415", "Unsupported Content-Type"),
        ]);
    }
    common
}

/// An error answer in the envelope named `schema`.
fn envelope(schema: &str, what: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(what)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .build()
}

/// The methods the API serves on `path` (from this document), when the path is one of its
/// routes: a request with another method is 405 with `Allow`.
pub fn allowed_methods(path: &str) -> Option<Vec<&'static str>> {
    static TABLE: std::sync::OnceLock<Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        document()
            .paths
            .paths
            .iter()
            .map(|(pattern, item)| {
                let mut methods: Vec<&'static str> = Vec::new();
                let ops = [
                    ("GET", item.get.is_some()),
                    ("HEAD", item.head.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ];
                for (name, present) in ops {
                    if present {
                        methods.push(name);
                    }
                }
                (actix_web::dev::ResourceDef::new(pattern.as_str()), methods)
            })
            .collect()
    });
    let mut allowed: Vec<&'static str> = Vec::new();
    for (def, methods) in table {
        if def.is_match(path) {
            for m in methods {
                if !allowed.contains(m) {
                    allowed.push(m);
                }
            }
        }
    }
    (!allowed.is_empty()).then_some(allowed)
}
