//! The seed products' dialects: what each one's routes share (its envelope, parameters, id
//! codec). Their handlers are in `routes/` and call the application layer (`app`).

pub mod kadoa;
pub mod zangtable;
