//! Structured logs with `tracing`; `RUST_LOG` filters (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    init_with_default("info");
}

/// Like `init`, with another filter when `RUST_LOG` is unset (tests log only warnings).
pub fn init_with_default(default: &str) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // actix-http logs every malformed request it refuses itself ("stream error: request parse
    // error") at ERROR: a client's mistake, not the server's. Those refusals are answered 400;
    // the request log line of every served request still records what happened.
    if let Ok(quiet) = "actix_http::h1::dispatcher=off".parse() {
        filter = filter.add_directive(quiet);
    }
    let json = std::env::var("WHARF_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // A second init (tests start several apps in one process) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
