//! `cspm-api`: the control API of the CSPM scan fleet.

use clap::Parser;
use cspm_api::Application;
use cspm_api::config::{ApiConfig, all_keys};
use cspm_shared::config::{Env, render_help};

/// The control API: authenticates, validates, creates scan runs and their sub-jobs, queues them, and
/// serves status, progress and results. Configured entirely from the environment.
#[derive(Parser)]
#[command(name = "cspm-api", version, after_help = render_help(&all_keys()))]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    let config = match ApiConfig::from_env(Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cspm-api: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    cspm_shared::telemetry::init("cspm-api", config.common.log_format, &config.common.log_filter);
    let app = match Application::build(config).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(cspm_shared::ops::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}
