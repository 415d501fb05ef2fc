//! Structured logs with `tracing`; `RUST_LOG` filters (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    init_with_default("info");
}

/// Like `init`, with another filter when `RUST_LOG` is unset (tests log only warnings).
pub fn init_with_default(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
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
