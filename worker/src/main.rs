use clap::Parser;
use wharf_shared::config::Settings;

/// wharf-worker: pulls export jobs and materializes them in object storage.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Jobs this process runs at once (overrides WHARF_WORKER_CONCURRENCY).
    #[arg(long)]
    concurrency: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    wharf_shared::telemetry::init();
    let mut settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wharf-worker: {e}");
            std::process::exit(2);
        }
    };
    if let Some(n) = cli.concurrency.filter(|n| *n > 0) {
        settings.worker_concurrency = n;
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        signal.cancel();
    });
    wharf_worker::startup::run(settings, shutdown).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
