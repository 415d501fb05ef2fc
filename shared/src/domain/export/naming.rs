//! What a download is called and what it is: file names, Content-Disposition, content types.

use super::Compression;
use super::Format;

/// The file name a download gets: `<workflow>-<YYYY-MM-DD>.<ext>[.gz]`.
pub fn file_name(
    workflow_name: &str,
    date: chrono::NaiveDate,
    format: Format,
    compression: Compression,
) -> String {
    let ext = format.as_str();
    let gz = if compression == Compression::Gzip {
        ".gz"
    } else {
        ""
    };
    format!("{}-{date}.{ext}{gz}", safe_base(workflow_name))
}

/// A bundle's file name: `<workflow or project>-<date>.wharf.zip`.
pub fn bundle_file_name(name: &str, date: chrono::NaiveDate) -> String {
    format!("{}-{date}.wharf.zip", safe_base(name))
}

pub const BUNDLE_CONTENT_TYPE: &str = "application/zip";

/// A name as the stem of a file name: no path separators, controls or invisible characters.
fn safe_base(workflow_name: &str) -> String {
    let base: String = workflow_name
        .chars()
        .filter(|c| !is_format_char(*c))
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | '"' | ':' | '*' | '?' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .chars()
        .take(100)
        .collect();
    if base.is_empty() {
        "export".to_string()
    } else {
        base
    }
}

/// Invisible characters that change how a name is shown (Unicode category Cf: bidirectional
/// overrides and isolates, zero-width joiners and spaces, the BOM, tag characters...).
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{08E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266 / 5987).
pub fn content_disposition(file_name: &str) -> String {
    let shown: String = file_name.chars().filter(|c| !is_format_char(*c)).collect();
    let file_name = shown.as_str();
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                if c == '"' || c == '\\' { '_' } else { c }
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in file_name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if ascii == file_name {
        format!("attachment; filename=\"{ascii}\"")
    } else {
        format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
    }
}

pub fn content_type(format: Format, compression: Compression) -> &'static str {
    if compression == Compression::Gzip {
        "application/gzip"
    } else {
        format.content_type()
    }
}
