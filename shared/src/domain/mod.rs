//! Domain types shared by the API and the workers.

pub mod dataset;
pub mod export;
pub mod ids;
pub mod schema;
pub mod scopes;
pub mod states;
