//! `JsonBody`: a JSON request body whose errors wait until the handler has checked the key,
//! so a bad key is 401/403 before a bad body is 400, and whose messages name the field.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use wharf_shared::Error;

use crate::error::ApiError;

/// Largest JSON body of the non-ingest routes (a 500-field schema is ~50 KiB).
pub const MAX_JSON_BYTES: usize = 1 << 20;

pub struct JsonBody(Result<serde_json::Value, Error>);

impl JsonBody {
    /// Deserializes the body; errors name the JSON path of the bad part.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        from_value(self.0?)
    }
}

/// Deserializes a JSON object; errors name the JSON path of the bad part, never a Rust type.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(Error::invalid("the body must be a JSON object").into());
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = plain(&e.into_inner().to_string());
        let msg = if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        };
        ApiError(Error::invalid(msg))
    })
}

/// serde's messages with the names of Rust types replaced by JSON's.
fn plain(msg: &str) -> String {
    let mut out = msg.to_string();
    if let Some(i) = out.find("expected struct ") {
        out.replace_range(i.., "expected an object");
    }
    if let Some(i) = out.find("expected enum ") {
        out.replace_range(i.., "expected a string");
    }
    for (rust, json) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected i32", "expected an integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a borrowed string", "expected a string"),
        ("expected UUID", "expected a UUID"),
    ] {
        out = out.replace(rust, json);
    }
    out
}

/// Reads a whole (small) body, refusing more than `limit` bytes with 413, and a body that
/// sends nothing for `stall` with 408.
pub async fn read_limited(
    mut body: web::Payload,
    limit: usize,
    stall: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    loop {
        let Some(chunk) = wharf_shared::files::next_within(stall, &mut body).await? else {
            break;
        };
        let chunk =
            chunk.map_err(|e| Error::invalid(format!("request body could not be read: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(Error::PayloadTooLarge {
                limit: limit as u64,
            }
            .into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        let body = web::Payload::from_request(req, payload);
        let stall = req
            .app_data::<web::Data<crate::state::AppState>>()
            .map_or(std::time::Duration::from_secs(30), |s| {
                s.settings.body_timeout
            });
        Box::pin(async move {
            if !is_json {
                return Ok(JsonBody(Err(Error::UnsupportedMediaType(
                    "Content-Type must be application/json".into(),
                ))));
            }
            let parsed = match body.await {
                Ok(body) => match read_limited(body, MAX_JSON_BYTES, stall).await {
                    Ok(bytes) => wharf_shared::json::parse(&bytes)
                        .map_err(|e| Error::invalid(format!("invalid JSON body: {e}"))),
                    Err(e) => Err(e.0),
                },
                Err(e) => Err(Error::invalid(format!(
                    "request body could not be read: {e}"
                ))),
            };
            Ok(JsonBody(parsed))
        })
    }
}

/// The request's media type: `Content-Type` without its parameters, trimmed ("" when absent).
pub fn media_type(req: &actix_web::HttpRequest) -> &str {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map_or("", str::trim)
}

/// 415 unless the body is declared as JSON.
pub fn require_json(req: &actix_web::HttpRequest) -> Result<(), ApiError> {
    if media_type(req).eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType("Content-Type must be application/json".into()).into())
    }
}
