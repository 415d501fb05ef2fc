//! Fuzz targets as property tests: whatever a client sends, the row parsers, the filter
//! validator and the signed-link checks answer without panicking, and numbers round-trip.
//! `PROPTEST_CASES` sets how many inputs each target tries (CI bounds it; see .ci/run).

use proptest::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::domain::export::ExportRequest;
use crate::domain::schema::{Field, FieldType};
use crate::ingest::{BodyFormat, FirstId, RowError, parse, values, writer::RowWriter};

fn fields() -> Vec<Field> {
    [
        ("s", FieldType::String, false),
        ("i", FieldType::Integer, true),
        ("x", FieldType::Number, true),
        ("b", FieldType::Boolean, true),
        ("t", FieldType::Timestamp, true),
        ("j", FieldType::Json, true),
    ]
    .into_iter()
    .map(|(name, field_type, nullable)| Field {
        name: name.into(),
        field_type,
        nullable,
    })
    .collect()
}

/// Parses `body` as `format` the way an upload is parsed; returns the COPY text or the error.
fn run_parser(format: BodyFormat, body: &[u8], max_row: usize) -> Result<Vec<u8>, RowError> {
    let fields = fields();
    let (tx, mut rx) = mpsc::channel(1 << 16);
    let (ask_tx, _ask_rx) = oneshot::channel();
    let (id_tx, id_rx) = oneshot::channel();
    id_tx.send(1).ok();
    let first = FirstId {
        ask: Some(ask_tx),
        answer: id_rx,
    };
    let mut w = RowWriter::new(&fields, uuid::Uuid::nil(), first, tx);
    match format {
        BodyFormat::Ndjson => parse::ndjson(body, &mut w, max_row)?,
        BodyFormat::JsonArray => parse::json_array(body, &mut w, max_row)?,
        BodyFormat::Csv => parse::csv(body, &mut w, max_row)?,
    }
    w.finish()?;
    let mut out = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        out.extend(batch);
    }
    Ok(out)
}

/// JSON-ish text: mostly well-formed rows with hostile values, sometimes garbage.
fn row_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\\PC{0,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("\"9999-12-31T23:59:59-14:00\"".to_string()),
        Just("\"2016-12-31T23:59:60Z\"".to_string()),
        Just("{\"a\":1,\"a\":2}".to_string()),
        Just("[[[[[[[[[[]]]]]]]]]]".to_string()),
        "[ -~]{0,8}",
    ];
    let key = prop_oneof![
        Just("s"),
        Just("i"),
        Just("x"),
        Just("b"),
        Just("t"),
        Just("j"),
        Just("zz")
    ];
    prop::collection::vec((key, value), 0..7).prop_map(|pairs| {
        let inner: Vec<String> = pairs
            .into_iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", inner.join(", "))
    })
}

proptest! {
    #[test]
    fn row_parsers_never_panic_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512),
                                        max_row in 16usize..256) {
        for format in [BodyFormat::Ndjson, BodyFormat::JsonArray, BodyFormat::Csv] {
            let _ = run_parser(format, &body, max_row);
        }
    }

    #[test]
    fn row_parsers_never_panic_on_rows(rows in prop::collection::vec(row_text(), 0..8)) {
        let ndjson = rows.join("\n");
        let array = format!("[{}]", rows.join(","));
        let _ = run_parser(BodyFormat::Ndjson, ndjson.as_bytes(), 1 << 20);
        let _ = run_parser(BodyFormat::JsonArray, array.as_bytes(), 1 << 20);
        let csv = format!("s,j\n{}", rows.iter().map(|r| format!("x,\"{}\"\n", r.replace('"', "\"\""))).collect::<String>());
        let _ = run_parser(BodyFormat::Csv, csv.as_bytes(), 1 << 20);
    }

    #[test]
    fn no_row_over_the_limit_is_accepted(len in 1usize..4096, max_row in 64usize..2048) {
        let line = format!("{{\"s\": \"{}\"}}\n", "a".repeat(len));
        let res = run_parser(BodyFormat::Ndjson, line.as_bytes(), max_row);
        prop_assert_eq!(res.is_ok(), line.len() - 1 <= max_row);
    }

    #[test]
    fn floats_round_trip(bits in any::<u64>(), long in any::<bool>()) {
        let f = f64::from_bits(bits);
        prop_assume!(f.is_finite());
        let text = if long { format!("{f:.16e}") } else { format!("{f:?}") };
        let mut buf = Vec::new();
        values::push_raw_value(&mut buf, FieldType::Number, &text).map_err(TestCaseError::fail)?;
        // One float8 field: length 8, then the bits.
        prop_assert_eq!(&buf[..4], &8i32.to_be_bytes());
        let back = buf[4..].try_into().map(u64::from_be_bytes).unwrap_or(0);
        prop_assert_eq!(back, f.to_bits());
    }

    #[test]
    fn filter_validation_never_panics(body in row_text(), ops in prop::collection::vec(
            ("[a-z_]{0,3}", prop_oneof![Just("eq"), Just("in"), Just("contains"), Just("gt"), Just("is_null"), Just("nope")], row_text()), 0..4)) {
        let filters: Vec<String> = ops.iter()
            .map(|(f, op, v)| format!("{{\"field\": \"{f}\", \"op\": \"{op}\", \"value\": {v}}}"))
            .collect();
        for text in [format!("{{\"filters\": [{}]}}", filters.join(",")), body] {
            if let Ok(value) = crate::json::parse(text.as_bytes())
                && let Ok(req) = serde_json::from_value::<ExportRequest>(value)
            {
                let _ = req.validate(&fields());
            }
        }
    }

    #[test]
    fn signed_link_checks_never_panic(expires in "\\PC{0,24}", sig in "\\PC{0,80}", kid in "\\PC{0,8}") {
        let _ = crate::signing::is_canonical(&expires, &sig);
        let key = crate::config::SigningKey { kid: "k".into(), secret: "s".to_string().into() };
        let claims = crate::signing::LinkClaims {
            export_id: uuid::Uuid::nil(),
            workflow_id: uuid::Uuid::nil(),
            format: "csv",
            expires: expires.parse().unwrap_or(0),
            path: None,
        };
        prop_assert!(!crate::signing::verify(&[key], &kid, &sig, &claims) || sig.len() == 64);
    }
}

#[test]
fn parsed_rows_are_numbered_from_the_first_id() -> Result<(), RowError> {
    let out = run_parser(
        BodyFormat::Ndjson,
        b"{\"s\": \"a\"}\n{\"s\": \"b\"}\n",
        1024,
    )?;
    // Each tuple: field count (2 bytes), `_id` (length 8, value), `run_id` (16), then the six
    // fields: "a"/"b" (4 + 1) and five NULLs (4 each).
    let tuple = 2 + 12 + 20 + 5 + 5 * 4;
    assert_eq!(out.len(), 2 * tuple);
    let ids: Vec<i64> = (0..2)
        .filter_map(|i| {
            let at = i * tuple + 6;
            out[at..at + 8].try_into().ok().map(i64::from_be_bytes)
        })
        .collect();
    assert_eq!(ids, [1, 2]);
    Ok(())
}
