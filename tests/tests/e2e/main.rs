//! End-to-end tests: real PostgreSQL (a database per test), Redis, and S3 (s3s-fs).

mod auth;
mod bundles;
mod claims;
mod cli;
mod downloads;
mod errors;
mod export_jobs;
mod export_params;
mod exports;
mod faults;
mod guessing;
mod hardening;
mod ingest;
mod isolation;
mod janitor;
mod kadoa;
mod limits;
mod long_poll;
mod numbers;
mod operators;
mod ops;
mod queue_contract;
mod startup;
mod store_contract;
mod webhooks;
mod workflows;
