//! `JsonBody`: a JSON request body whose errors wait until the handler has checked the key,
//! so a bad key is 401/403 before a bad body is 400, and whose messages name the field.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use wharf_shared::Error;

use crate::error::ApiError;

pub struct JsonBody(Result<serde_json::Value, Error>);

impl JsonBody {
    /// Deserializes the body; errors name the JSON path of the bad part.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        from_value(self.0?)
    }
}

/// Deserializes a JSON value; errors name the JSON path of the bad part.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        ApiError(Error::invalid(msg))
    })
}

/// Reads a whole (small) body, refusing more than `limit` bytes with 413.
pub async fn read_limited(mut body: web::Payload, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use futures::StreamExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
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
        let fut = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            Ok(JsonBody(
                fut.await.map(web::Json::into_inner).map_err(classify),
            ))
        })
    }
}

fn classify(err: actix_web::Error) -> Error {
    match err.as_error::<JsonPayloadError>() {
        Some(JsonPayloadError::ContentType) => {
            Error::UnsupportedMediaType("Content-Type must be application/json".into())
        }
        Some(
            JsonPayloadError::Overflow { limit }
            | JsonPayloadError::OverflowKnownLength { limit, .. },
        ) => Error::PayloadTooLarge {
            limit: *limit as u64,
        },
        Some(JsonPayloadError::Deserialize(de)) => {
            Error::invalid(format!("invalid JSON body: {de}"))
        }
        Some(other) => Error::invalid(format!("invalid JSON body: {other}")),
        None => Error::invalid("invalid JSON body"),
    }
}
