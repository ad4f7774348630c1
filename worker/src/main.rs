//! `cspm-worker`: runs SubJobs from the queue.

use clap::Parser;
use cspm_shared::config::{Env, render_help};
use cspm_worker::config::{WorkerConfig, all_keys};

/// A stateless worker of the CSPM scan fleet: takes sub-jobs from the Redis queues, runs the scanner,
/// stores normalised findings in MongoDB and rolls the scan runs up. Run as many as you like.
#[derive(Parser)]
#[command(name = "cspm-worker", version, after_help = render_help(&all_keys()))]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    cspm_shared::ops::run_main::<cspm_worker::app::WorkerApp>(WorkerConfig::from_env(Env::from_process())).await
}
