//! `cspm-api`: the control API of the CSPM scan fleet.

use clap::Parser;
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
    cspm_shared::ops::run_main::<cspm_api::Application>(ApiConfig::from_env(Env::from_process())).await
}
