//! Kore.ai's dialect (API.md, "Kore.ai").

mod routes;

pub use routes::*;
