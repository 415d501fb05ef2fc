//! Wharf's domain: configuration, errors, storage of records and objects, ingest and export.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod files;
#[cfg(test)]
mod fuzz;
pub mod ingest;
pub mod jobs;
pub mod json;
pub mod metrics;
pub mod queue;
pub mod repo;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod views;
pub mod webhooks;

pub use error::{Error, ErrorCode, Result};
