//! The seed products' dialects, one folder each: its routes (`routes.rs`, calling only the
//! application layer) and what they share (its envelope, parameters, id codec, status map).

pub mod kadoa;
pub mod kore;
pub mod zangtable;
