//! The application layer: the use cases the routes and the seed dialects call. Route modules
//! parse a request, call one of these and shape the answer; they never import each other, and
//! nothing here knows a route.

pub mod audit;
pub mod datasets;
pub mod exports;
pub mod files;
pub mod jobs;
pub mod views;
pub mod workflows;
