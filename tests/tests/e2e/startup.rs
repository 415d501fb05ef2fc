//! Startup explains itself: --help and --version touch no service; a misnamed database is
//! named with its cause at once; a worker waits for the schema instead of failing.

use std::process::Command;
use std::time::{Duration, Instant};

use wharf_tests::process::binary;

#[test]
fn help_and_version_touch_no_service() {
    for bin in ["wharf-api", "wharf-worker"] {
        for flag in ["--help", "--version"] {
            let out = Command::new(binary(bin))
                .arg(flag)
                .env_clear()
                .output()
                .expect("runs");
            assert!(out.status.success(), "{bin} {flag}");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(bin), "{bin} {flag}: {text}");
        }
    }
}

#[test]
fn a_missing_database_is_named_at_once() {
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = server.rsplit_once('/').map_or(server.as_str(), |(s, _)| s);
    let started = Instant::now();
    let out = Command::new(binary("wharf-api"))
        .env_clear()
        .env("DATABASE_URL", format!("{base}/wharf_no_such_database"))
        .env("WHARF_SIGNING_KEYS", "k:s")
        .env("WHARF_LISTEN", "127.0.0.1:0")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database \"wharf_no_such_database\" does not exist"),
        "{err}"
    );
    assert!(
        err.contains("/wharf_no_such_database): "),
        "the address is named: {err}"
    );
    let out = Command::new(binary("wharf-api"))
        .env_clear()
        .env("WHARF_SIGNING_KEYS", "k:s")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
}

/// A Redis that answers but refuses the URL (database 99 of its 16) is named at start, by both
/// binaries, in Redis's own words, before any other service is touched.
#[test]
fn a_redis_database_out_of_range_is_named_at_once() {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    for bin in ["wharf-api", "wharf-worker"] {
        let started = Instant::now();
        let out = Command::new(binary(bin))
            .env_clear()
            .env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/wharf_never_touched",
            )
            .env("REDIS_URL", format!("{}/99", redis.trim_end_matches('/')))
            .env("WHARF_SIGNING_KEYS", "k:s")
            .env("WHARF_LISTEN", "127.0.0.1:0")
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{bin}");
        assert!(started.elapsed() < Duration::from_secs(10), "{bin}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("REDIS_URL") && err.contains("DB index is out of range"),
            "{bin}: {err}"
        );
    }
}

#[test]
fn a_short_admin_token_stops_the_api_at_start_naming_it() {
    let out = Command::new(binary("wharf-api"))
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("WHARF_SIGNING_KEYS", "k:s")
        .env("WHARF_LISTEN", "127.0.0.1:0")
        .env("WHARF_ADMIN_TOKEN", "change-me")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WHARF_ADMIN_TOKEN") && err.contains("32"),
        "{err}"
    );
}
