//! `cspm-worker`: runs SubJobs from the queue; `cspm-worker normalize` converts a report offline.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use cspm_shared::config::{Env, render_help};
use cspm_worker::config::{WorkerConfig, all_keys};
use cspm_worker::tools::{ReportKind, normalize_report};

/// A stateless worker of the CSPM scan fleet: takes sub-jobs from the Redis queues, runs the scanner,
/// stores normalised findings in MongoDB and rolls the scan runs up. Run as many as you like.
#[derive(Parser)]
#[command(name = "cspm-worker", version, after_help = render_help(&all_keys()))]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Converts a scanner report to OCSF 1.4.0 Detection Findings, one JSON event per line on stdout,
    /// through the same parsers the worker uses. Exits 1 with a message on a report it cannot read.
    Normalize {
        /// The scanner that wrote the report.
        #[arg(long, value_enum)]
        tool: ReportKind,
        /// The report file.
        file: PathBuf,
        /// Refuse reports larger than this many bytes.
        #[arg(long, default_value_t = 512 * 1024 * 1024)]
        max_bytes: u64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Some(Command::Normalize { tool, file, max_bytes }) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let result = tokio::task::block_in_place(|| normalize_report(tool, &file, max_bytes, &mut out));
            match result.and_then(|n| {
                std::io::Write::flush(&mut out)
                    .map(|()| n)
                    .map_err(|e| cspm_worker::tools::ToolError::new(e.to_string()))
            }) {
                Ok(_) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cspm-worker normalize: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        None => {
            cspm_shared::ops::run_main::<cspm_worker::app::WorkerApp>(WorkerConfig::from_env(Env::from_process())).await
        }
    }
}
