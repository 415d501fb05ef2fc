//! TSV: CSV with a tab between fields (API.md, Output options). A value holding a tab, a quote,
//! CR or LF is quoted as CSV quotes it, so every value reads back as it was stored.

use super::Encoder;
use crate::domain::export::Compression;
use crate::error::Result;
use crate::export::sink::ChunkSink;
use crate::repo::export_query::OutColumn;

pub(super) fn encoder(
    sink: ChunkSink,
    columns: &[OutColumn],
    compression: Compression,
) -> Result<Box<dyn Encoder>> {
    super::csv::with_delimiter(sink, columns, compression, b'\t')
}
