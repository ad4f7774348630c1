//! `cspm-scheduler`: the fleet's hygiene loops.

use clap::Parser;
use cspm_scheduler::config::{SchedulerConfig, all_keys};
use cspm_shared::config::{Env, render_help};

/// The scheduler of the CSPM scan fleet: fires scan schedules (exactly once per fire across replicas),
/// re-queues or fails sub-jobs whose worker died, feeds waiting sub-jobs into the queue, re-dispatches
/// lost queue messages, rolls up runs whose roll-up was missed, ends stuck runs, trims the queue and
/// applies retention. Safe to run in several replicas.
#[derive(Parser)]
#[command(name = "cspm-scheduler", version, after_help = render_help(&all_keys()))]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    cspm_shared::ops::run_main::<cspm_scheduler::SchedulerApp>(SchedulerConfig::from_env(Env::from_process())).await
}
