//! Domain types shared by the API and the workers.

pub mod ids;
pub mod schema;
pub mod scopes;
