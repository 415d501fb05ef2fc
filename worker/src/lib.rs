//! The export worker. For now it connects to its services and waits; the export pipeline
//! (claim, stream, encode, upload) arrives with the export issue.

pub mod startup;
