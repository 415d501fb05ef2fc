//! The file formats an export can be written in: one file each, and one entry each in
//! `REGISTRY` (its name, extension, content type, the compressions it takes and how to build
//! its encoder). Everything else — validation of a request, the stored file's name and type,
//! the worker's encoding — reads the registry, so a new format is its file, its variant and its
//! entry here.

mod csv;
mod json;
mod parquet;
mod tsv;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use self::csv::CsvWriter;
pub use self::json::JsonWriter;
pub use self::parquet::{ParquetWriter, arrow_schema};
use super::sink::ChunkSink;
use crate::domain::export::Compression;
use crate::error::Result;
use crate::repo::export_query::OutColumn;

/// An export's file format (API.md, Exports: `format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Csv,
    Tsv,
    Json,
    Ndjson,
    Parquet,
}

/// Rows in (binary COPY tuples, fields as offsets into `buf`), bytes out into the sink it was
/// built with.
pub trait Encoder: Send {
    fn row(&mut self, buf: &[u8], fields: &[Option<(usize, usize)>]) -> Result<()>;
    /// Writes what is buffered and the file's end; returns the file's size in bytes.
    fn finish(self: Box<Self>) -> Result<u64>;
}

/// Builds a format's encoder writing into `sink`, with the compression validation allowed.
pub type NewEncoder = fn(ChunkSink, &[OutColumn], Compression) -> Result<Box<dyn Encoder>>;

/// One format, as the registry describes it.
pub struct FormatInfo {
    pub format: Format,
    /// Its name in requests, statuses and metrics labels; the file's extension too.
    pub name: &'static str,
    pub content_type: &'static str,
    /// What `compression` may be; the first is the default.
    pub compressions: &'static [Compression],
    pub new: NewEncoder,
}

const TEXT: &[Compression] = &[Compression::None, Compression::Gzip];

pub static REGISTRY: &[FormatInfo] = &[
    FormatInfo {
        format: Format::Csv,
        name: "csv",
        content_type: "text/csv; charset=utf-8",
        compressions: TEXT,
        new: csv::encoder,
    },
    FormatInfo {
        format: Format::Tsv,
        name: "tsv",
        content_type: "text/tab-separated-values; charset=utf-8",
        compressions: TEXT,
        new: tsv::encoder,
    },
    FormatInfo {
        format: Format::Json,
        name: "json",
        content_type: "application/json",
        compressions: TEXT,
        new: json::array_encoder,
    },
    FormatInfo {
        format: Format::Ndjson,
        name: "ndjson",
        content_type: "application/x-ndjson",
        compressions: TEXT,
        new: json::lines_encoder,
    },
    FormatInfo {
        format: Format::Parquet,
        name: "parquet",
        content_type: "application/vnd.apache.parquet",
        compressions: &[Compression::Zstd, Compression::Snappy, Compression::None],
        new: parquet::encoder,
    },
];

impl Format {
    pub fn info(self) -> &'static FormatInfo {
        REGISTRY
            .iter()
            .find(|i| i.format == self)
            .unwrap_or(&REGISTRY[0])
    }
    pub fn as_str(self) -> &'static str {
        self.info().name
    }
    pub fn parse(s: &str) -> Option<Self> {
        REGISTRY.iter().find(|i| i.name == s).map(|i| i.format)
    }
    pub fn content_type(self) -> &'static str {
        self.info().content_type
    }
    /// The names of every format, for error messages.
    pub fn names() -> String {
        let names: Vec<&str> = REGISTRY.iter().map(|i| i.name).collect();
        names.join(", ")
    }
    /// This format's encoder, writing into `sink`.
    pub fn encoder(
        self,
        sink: ChunkSink,
        columns: &[OutColumn],
        compression: Compression,
    ) -> Result<Box<dyn Encoder>> {
        (self.info().new)(sink, columns, compression)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_has_one_entry_and_its_name_parses_back() {
        for info in REGISTRY {
            assert_eq!(info.format.info().name, info.name);
            assert_eq!(Format::parse(info.name), Some(info.format));
            assert!(!info.compressions.is_empty());
            let json = serde_json::to_string(&info.format).unwrap_or_default();
            assert_eq!(
                json,
                format!("\"{}\"", info.name),
                "serde and registry agree"
            );
        }
        let mut names: Vec<&str> = REGISTRY.iter().map(|i| i.name).collect();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
    }
}
