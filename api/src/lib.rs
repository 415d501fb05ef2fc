//! The HTTP API: authentication, routes, the error envelope, OpenAPI.

pub mod app;
pub mod auth;
pub mod compat;
pub mod error;
pub mod json;
pub mod limits;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod state;
pub mod waiters;
