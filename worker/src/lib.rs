//! The export worker: pulls jobs from Redis (apalis) and runs the export pipeline of `shared`.

pub mod janitor;
pub mod reconciler;
pub mod startup;
