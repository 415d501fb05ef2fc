use clap::Parser;
use wharf_api::startup::Application;
use wharf_shared::config::Settings;

/// wharf-api: the HTTP API of Wharf. Configured by environment variables (README,
/// Configuration); applies pending migrations at start.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    wharf_shared::telemetry::init();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wharf-api: {e}");
            std::process::exit(2);
        }
    };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("wharf-api: {e:#}");
            std::process::exit(1);
        }
    };
    app.run_until_stopped().await?;
    Ok(())
}
