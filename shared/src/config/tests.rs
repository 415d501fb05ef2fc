use super::*;
use std::collections::HashMap;

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(&move |k| map.get(k).cloned())
}

#[test]
fn installations_on_different_databases_get_different_queues() {
    let a = default_queue("postgres://u:p@db1:5432/wharf");
    assert_eq!(a, default_queue("postgres://other:secret@db1:5432/wharf"));
    assert_ne!(a, default_queue("postgres://u:p@db2:5432/wharf"));
    assert_ne!(a, default_queue("postgres://u:p@db1:5433/wharf"));
    assert_ne!(a, default_queue("postgres://u:p@db1:5432/staging"));
    assert!(a.starts_with("wharf-exports-wharf-"), "{a}");
    assert!(!default_queue("postgres://h/we:ird db").contains([':', ' ']));
}

#[test]
fn missing_required_settings_are_named() {
    let err = settings(&[("WHARF_SIGNING_KEYS", "k1:s")])
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("missing required environment variable DATABASE_URL")
    );
    let err = settings(&[("DATABASE_URL", "postgres://x")])
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("missing required environment variable WHARF_SIGNING_KEYS")
    );
}

#[test]
fn defaults_follow_the_contract() -> Result<(), ConfigError> {
    let s = settings(&[
        ("DATABASE_URL", "postgres://x"),
        ("WHARF_SIGNING_KEYS", "a:1,b:2"),
    ])?;
    assert_eq!(
        s.redis_url, None,
        "the embedded default: the queue in PostgreSQL"
    );
    assert_eq!(
        s.store,
        StoreKind::Dir("./wharf-data".into()),
        "and a local directory"
    );
    assert_eq!(s.s3.bucket, "wharf-exports");
    assert_eq!(s.s3.region, "us-east-1");
    assert_eq!(s.listen, "127.0.0.1:8080");
    assert_eq!(s.public_url, "http://127.0.0.1:8080");
    assert_eq!(s.export_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(s.link_ttl, Duration::from_secs(3600));
    assert_eq!(s.presign_ttl, Duration::from_secs(300));
    assert_eq!(s.worker_concurrency, 4);
    assert_eq!(s.max_run_bytes, 1 << 30);
    assert_eq!(s.max_row_bytes, 1 << 20);
    assert_eq!(s.body_timeout, Duration::from_secs(30));
    assert_eq!(s.project_ingests, 4);
    assert_eq!(s.project_reads, 4);
    assert_eq!(
        s.rate_limit,
        Some(RateLimit {
            per_second: 50,
            burst: 100
        })
    );
    assert_eq!(s.project_queue_max, 1_000);
    assert_eq!(
        s.signing_keys
            .iter()
            .map(|k| k.kid.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(s.admin_token.is_none());
    assert_eq!(s.auth_failures_per_minute, Some(20));
    assert_eq!(s.import_scratch, 64 << 30);
    assert_eq!(s.audit_ttl, Duration::from_secs(90 * 86_400));
    Ok(())
}

#[test]
fn a_short_admin_token_is_refused_by_name() {
    let base = [
        ("DATABASE_URL", "postgres://x"),
        ("WHARF_SIGNING_KEYS", "a:1"),
    ];
    let with = |token: &str| {
        let mut pairs = base.to_vec();
        pairs.push(("WHARF_ADMIN_TOKEN", token));
        settings(&pairs).map(|s| s.admin_token.is_some())
    };
    let err = with("dev-admin-token").err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("WHARF_ADMIN_TOKEN") && e.contains("32")),
        "{err:?}"
    );
    assert_eq!(with(&"t".repeat(32)).ok(), Some(true));
    assert_eq!(parse_per_minute("20/min"), Some(Some(20)));
    assert_eq!(parse_per_minute("0"), Some(None));
    assert_eq!(parse_per_minute("20"), None);
}

#[test]
fn bad_values_are_named() {
    let err = settings(&[
        ("DATABASE_URL", "postgres://x"),
        ("WHARF_SIGNING_KEYS", "a:1"),
        ("WHARF_EXPORT_TTL", "soon"),
    ])
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("WHARF_EXPORT_TTL"), "{err}");
    let err = settings(&[
        ("DATABASE_URL", "postgres://x"),
        ("WHARF_SIGNING_KEYS", "nocolon"),
    ])
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("WHARF_SIGNING_KEYS"), "{err}");
}

#[test]
fn units_parse() {
    assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("x"), None);
    assert_eq!(parse_bytes("1GiB"), Some(1 << 30));
    assert_eq!(parse_bytes("10MB"), Some(10_000_000));
    assert_eq!(parse_bytes("12"), Some(12));
    assert_eq!(parse_bytes("1 parsec"), None);
    assert_eq!(parse_rate_limit("0"), Some(None));
    assert_eq!(
        parse_rate_limit("10/s"),
        Some(Some(RateLimit {
            per_second: 10,
            burst: 10
        }))
    );
    assert_eq!(parse_rate_limit("10"), None);
    assert_eq!(parse_rate_limit("0/s,5"), None);
}
