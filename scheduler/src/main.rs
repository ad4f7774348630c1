//! `cspm-scheduler`: the fleet's hygiene loops.

use clap::Parser;
use cspm_scheduler::SchedulerApp;
use cspm_scheduler::config::{SchedulerConfig, all_keys};
use cspm_shared::config::{Env, render_help};

/// The scheduler of the CSPM scan fleet: re-queues or fails sub-jobs whose worker died, feeds waiting
/// sub-jobs into the queue, re-dispatches lost queue messages and rolls up runs whose roll-up was missed.
/// Safe to run in several replicas.
#[derive(Parser)]
#[command(name = "cspm-scheduler", version, after_help = render_help(&all_keys()))]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    let config = match SchedulerConfig::from_env(Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cspm-scheduler: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    cspm_shared::telemetry::init("cspm-scheduler", config.common.log_format, &config.common.log_filter);
    let app = match SchedulerApp::build(config).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(cspm_shared::ops::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "scheduler failed");
            std::process::ExitCode::FAILURE
        }
    }
}
