//! End-to-end tests: real PostgreSQL (a database per test), Redis, and S3 (s3s-fs).

mod auth;
mod errors;
mod exports;
mod ingest;
mod ops;
mod workflows;
