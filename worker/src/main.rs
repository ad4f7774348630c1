//! `cspm-worker`: runs SubJobs from the queue.

use clap::Parser;
use cspm_shared::config::{Env, render_help};
use cspm_worker::app::WorkerApp;
use cspm_worker::config::{WorkerConfig, all_keys};

/// A stateless worker of the CSPM scan fleet: takes sub-jobs from the Redis queues, runs the scanner,
/// stores normalised findings in MongoDB and rolls the scan runs up. Run as many as you like.
#[derive(Parser)]
#[command(name = "cspm-worker", version, after_help = render_help(&all_keys()))]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    let config = match WorkerConfig::from_env(Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cspm-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    cspm_shared::telemetry::init("cspm-worker", config.common.log_format, &config.common.log_filter);
    let app = match WorkerApp::build(config).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(cspm_shared::ops::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            std::process::ExitCode::FAILURE
        }
    }
}
