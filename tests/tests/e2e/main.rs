//! End-to-end tests: real PostgreSQL (a database per test), Redis, and S3 (s3s-fs).

mod auth;
mod downloads;
mod errors;
mod export_jobs;
mod export_params;
mod exports;
mod faults;
mod ingest;
mod ops;
mod workflows;
