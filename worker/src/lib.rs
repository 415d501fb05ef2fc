//! The export worker: hears of work (Redis via apalis, or PostgreSQL's LISTEN/NOTIFY), claims
//! the fairest export and runs the export pipeline of `shared`.

pub mod janitor;
pub mod ops;
pub mod pull;
pub mod reconciler;
pub mod startup;
pub mod webhooks;
