//! Runners execute what a tool adapter planned. Every runner has the same contract: run the command with
//! the SubJob's output directory, stop it when asked (cancel, lost lease, shutdown) or when its time is up
//! (SIGTERM, then SIGKILL), and report the exit code and a bounded tail of its output.

pub mod docker;
pub mod local;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

/// Why a running SubJob must stop before it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A user cancelled the run.
    Cancelled,
    /// Our lease was taken away (we stalled past it); another worker may be running the SubJob.
    LeaseLost,
    /// The worker is shutting down and its grace period is over: hand the SubJob back.
    Shutdown,
}

/// The stop signal a running SubJob watches.
pub type StopSignal = watch::Receiver<Option<StopReason>>;

/// Waits for the next stop request (one already seen does not count again); a dropped sender is a
/// shutdown. Cancel-safe, for `select!` beside what it interrupts.
pub async fn stopped(stop: &mut StopSignal) -> StopReason {
    loop {
        if stop.changed().await.is_err() {
            return StopReason::Shutdown;
        }
        if let Some(reason) = *stop.borrow() {
            return reason;
        }
    }
}

/// A process to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Extra environment (credentials travel here, never in `args`). The rest of the environment is
    /// cleared except `PATH`, `HOME`, `LANG` and `TZ`.
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    /// Exit codes that mean "finished" besides 0 (Prowler exits 3 when it found failing checks).
    pub ok_exit_codes: Vec<i32>,
    /// Files holding secrets for the scanner (a credential file); removed as soon as it ends, whatever
    /// the outcome, so that a kept output directory never keeps them.
    pub secret_files: Vec<PathBuf>,
    /// Paths besides the output directory the scanner reads (a directory to scan) or writes (a cache).
    /// The local runner ignores them; the Docker runner bind-mounts them at the same path, so they must
    /// be paths of the Docker host that the worker sees at the same place.
    pub mounts: Vec<PathMount>,
}

/// The file, in a SubJob's output directory, that a container image exported from the local image store
/// is written to (see `ImageInput`). Scratch, never raw output: removed when the scanner ends.
pub const IMAGE_ARCHIVE: &str = ".cspm-image.tar";

/// A container image a scanner reads by reference (Trivy's `image` target). Scanner containers get no
/// Docker socket, so an image that is only in the host's local image store (built there, never pushed)
/// is out of their reach: the Docker runner exports it to `archive` (in the SubJob's output directory,
/// which the container mounts) and runs `archive_args` instead of the spec's arguments. An image that is
/// not local is read from its registry, with the spec's arguments. The local runner ignores this: a local
/// scanner reads the local image store itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// The image as the SubJob names it.
    pub reference: String,
    /// Where the export goes: `IMAGE_ARCHIVE` in the SubJob's output directory.
    pub archive: PathBuf,
    /// The scanner's arguments when it reads `archive` instead of `reference`.
    pub archive_args: Vec<String>,
}

/// A path a scanner needs (see `ProcessSpec::mounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMount {
    pub path: PathBuf,
    pub writable: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The process exited by itself with this code (or was killed by a signal: `None`).
    Exited(Option<i32>),
    /// The time limit passed; the process was stopped.
    TimedOut,
    /// Stopped on request.
    Stopped(StopReason),
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub exit: Exit,
    pub duration: Duration,
    /// The last bytes the process wrote to stdout and stderr, for error messages.
    pub output_tail: String,
    /// Docker runner: from asking for the container to its start (the runner's own overhead).
    pub start_latency: Option<Duration>,
}

impl RunReport {
    pub fn succeeded(&self, spec: &ProcessSpec) -> bool {
        matches!(self.exit, Exit::Exited(Some(c)) if c == 0 || spec.ok_exit_codes.contains(&c))
    }
}
