use wharf_api::startup::Application;
use wharf_shared::config::Settings;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    wharf_shared::telemetry::init();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wharf-api: {e}");
            std::process::exit(2);
        }
    };
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    Ok(())
}
