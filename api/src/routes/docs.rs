//! `GET /docs`: the API's reference as one HTML page, rendered on the server from the same
//! OpenAPI document `/openapi.json` serves (so it lists exactly the routes that exist): every
//! operation by tag, with its parameters, request body and answers. No script, nothing fetched
//! from elsewhere; built once.

use std::fmt::Write;
use std::sync::OnceLock;

use actix_web::{HttpResponse, get};
use serde_json::Value;

use super::ops::escape;

const METHODS: [&str; 6] = ["get", "post", "put", "patch", "delete", "head"];

/// This reference, as a page for people: every route of `/openapi.json`.
#[utoipa::path(get, path = "/docs", tag = "operations", security(()),
    responses((status = 200, description = "The API reference (HTML), rendered from the OpenAPI document", content_type = "text/html")))]
#[get("/docs")]
pub async fn docs() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let doc = serde_json::to_value(crate::openapi::document()).unwrap_or_default();
        render(&doc)
    });
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=300",
        ))
        .body(page.clone())
}

/// One operation of the document: its method, path and body.
struct Op<'a> {
    method: &'a str,
    path: &'a str,
    body: &'a Value,
}

/// The operations grouped by their first tag, tags in the order they first appear.
fn by_tag(doc: &Value) -> Vec<(String, Vec<Op<'_>>)> {
    let mut groups: Vec<(String, Vec<Op<'_>>)> = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return groups;
    };
    for (path, item) in paths {
        for method in METHODS {
            let body = &item[method];
            if !body.is_object() {
                continue;
            }
            let tag = body["tags"][0].as_str().unwrap_or("other").to_string();
            let op = Op { method, path, body };
            match groups.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, ops)) => ops.push(op),
                None => groups.push((tag, vec![op])),
            }
        }
    }
    groups
}

fn render(doc: &Value) -> String {
    let mut h = String::with_capacity(256 * 1024);
    let title = escape(doc["info"]["title"].as_str().unwrap_or("Wharf"));
    let version = escape(doc["info"]["version"].as_str().unwrap_or(""));
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} API reference</title><style>{STYLE}</style></head><body>\
         <h1>{title} API reference <small>{version}</small></h1><p>{}</p>\
         <p>The machine-readable document: <a href=\"/openapi.json\">/openapi.json</a>.</p>",
        escape(doc["info"]["description"].as_str().unwrap_or(""))
    );
    let groups = by_tag(doc);
    h.push_str("<nav>");
    for (tag, ops) in &groups {
        let _ = write!(
            h,
            "<a href=\"#tag-{0}\">{0}</a> ({1}) ",
            escape(tag),
            ops.len()
        );
    }
    h.push_str("</nav>");
    for (tag, ops) in &groups {
        let _ = write!(h, "<h2 id=\"tag-{0}\">{0}</h2>", escape(tag));
        for op in ops {
            operation(&mut h, op);
        }
    }
    h.push_str("</body></html>");
    h
}

fn operation(h: &mut String, op: &Op<'_>) {
    let id = op.body["operationId"].as_str().unwrap_or_default();
    let _ = write!(
        h,
        "<section id=\"{}\"><h3><span class=\"m\">{}</span> <code>{}</code></h3>",
        escape(id),
        op.method.to_uppercase(),
        escape(op.path)
    );
    for key in ["summary", "description"] {
        if let Some(text) = op.body[key].as_str() {
            let _ = write!(h, "<p>{}</p>", escape(text));
        }
    }
    if let Some(params) = op.body["parameters"].as_array().filter(|p| !p.is_empty()) {
        parameters(h, params);
    }
    if let Some(content) = op.body["requestBody"]["content"].as_object() {
        let types: Vec<String> = content.keys().map(|k| escape(k)).collect();
        let _ = write!(
            h,
            "<p>Body: <code>{}</code></p>",
            types.join("</code>, <code>")
        );
    }
    if let Some(responses) = op.body["responses"].as_object() {
        h.push_str("<ul class=\"r\">");
        for (code, r) in responses {
            let _ = write!(
                h,
                "<li><b>{}</b> {}</li>",
                escape(code),
                escape(r["description"].as_str().unwrap_or_default())
            );
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>");
}

fn parameters(h: &mut String, params: &[Value]) {
    h.push_str("<table><tr><th>parameter</th><th>in</th><th>required</th><th></th></tr>");
    for p in params {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(p["name"].as_str().unwrap_or_default()),
            escape(p["in"].as_str().unwrap_or_default()),
            if p["required"] == true { "yes" } else { "" },
            escape(p["description"].as_str().unwrap_or_default())
        );
    }
    h.push_str("</table>");
}

const STYLE: &str = "body { font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 24px auto; padding: 0 16px; color: #1d2430; }
h1 small { color: #6b7280; font-size: 14px; } h2 { border-bottom: 1px solid #e5e7eb; margin-top: 32px; }
nav a { margin-right: 4px; } section { border: 1px solid #e5e7eb; border-radius: 6px; padding: 4px 14px; margin: 12px 0; }
h3 { font-size: 15px; } .m { display: inline-block; min-width: 52px; color: #2563eb; }
code { font: 13px ui-monospace, Menlo, monospace; } table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
ul.r { padding-left: 18px; } ul.r li { margin: 1px 0; }";
