//! The Docker runner: every scanner runs in its own short-lived sibling container, started through the
//! Docker socket the worker sees (the host's). Same contract as the local-process runner: the command
//! the adapter planned, the SubJob's output directory, stop on request or when time is up (SIGTERM,
//! then SIGKILL), exit code and a bounded tail of the output.
//!
//! What the daemon is asked for, and why (see docs/docker-runner.md):
//! - the image must be on the allow-list; it is pulled if missing (or never, or always, by policy);
//! - one container per SubJob, named after it (`cspm-<subjob>`), labelled with run, SubJob and worker:
//!   a re-delivered SubJob finds the container of the earlier attempt by name and replaces it, so a
//!   scan never runs twice at once; orphans of dead workers are found by label and removed;
//! - bind mounts by HOST path: the SubJob's directory under `PROWLER_HOST_OUTPUT_DIR` is mounted at the
//!   path the worker sees it at (under `CSPM_WORKER_OUTPUT_DIR`), so the planned command line works
//!   unchanged and the worker reads the output through its own mount;
//! - least privilege: a non-root user that owns the output directory, every capability dropped,
//!   `no-new-privileges`, never privileged, CPU, memory and process limits, a read-only root filesystem
//!   with a small `/tmp`, and the configured network;
//! - `auto_remove` off: the exit code and logs are read first, then the container is removed;
//! - a scanner that reads a container image (`ImageInput`) gets an image of the local image store as an
//!   export in its output directory (scanners never get the socket); other images come from registries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptions,
};
use cspm_shared::config::{Env, KeySpec};
use cspm_shared::domain::scan::{SubJobStatus, Tool};
use cspm_shared::ids::{RunId, SubJobId};
use futures::StreamExt;

use super::{Exit, ImageInput, ProcessSpec, RunReport, StopSignal, stopped};
use crate::metrics::WorkerMetrics;

/// Label keys on every container this fleet starts.
pub const LABEL_MANAGED: &str = "io.cspm.managed";
pub const LABEL_RUN: &str = "io.cspm.run";
pub const LABEL_SUBJOB: &str = "io.cspm.subjob";
pub const LABEL_WORKER: &str = "io.cspm.worker";
pub const LABEL_TOOL: &str = "io.cspm.tool";
/// Which fleet (database prefix) started the container: fleets sharing a Docker host leave each
/// other's containers alone.
pub const LABEL_FLEET: &str = "io.cspm.fleet";

/// How much of a container's output is kept for messages.
const TAIL_BYTES: usize = 4096;
/// Log lines asked of the daemon (the tail is then cut to `TAIL_BYTES`).
const TAIL_LINES: &str = "200";
/// The uid and gid scanners run as when the worker itself runs as root.
const DEFAULT_SCANNER_ID: (u32, u32) = (10001, 10001);

pub const DOCKER_KEYS: &[KeySpec] = &[
    KeySpec::optional(
        "CSPM_SCANNER_RUNNER",
        "local",
        "how scanners run: local (child processes of the worker) or docker (sibling containers through the Docker socket; a tool without a CSPM_DOCKER_IMAGE_* runs as a local process)",
    ),
    KeySpec::unset(
        "CSPM_DOCKER_IMAGE_PROWLER",
        "image of Prowler for the Docker runner (e.g. prowlercloud/prowler with a version tag)",
    ),
    KeySpec::unset(
        "CSPM_DOCKER_IMAGE_TRIVY",
        "image of Trivy for the Docker runner (e.g. aquasec/trivy with a version tag)",
    ),
    KeySpec::unset(
        "CSPM_DOCKER_IMAGE_NMAP",
        "image of nmap for the Docker runner (entrypoint or PATH must have `nmap`)",
    ),
    KeySpec::unset("CSPM_DOCKER_IMAGE_WAPITI", "image of Wapiti for the Docker runner"),
    KeySpec::unset("CSPM_DOCKER_IMAGE_ZAP", "image of ZAP for the Docker runner (e.g. zaproxy/zap-stable)"),
    KeySpec::unset(
        "CSPM_DOCKER_ALLOWED_IMAGES",
        "comma-separated images the runner may start: exact references, or prefixes ending in `*` (unset: exactly the configured images)",
    ),
    KeySpec::optional("CSPM_DOCKER_PULL", "if-missing", "image pulls: if-missing, always or never"),
    KeySpec::optional(
        "CSPM_DOCKER_NETWORK",
        "bridge",
        "network of scanner containers (bridge, none, host, or a network's name)",
    ),
    KeySpec::optional("CSPM_DOCKER_CPUS", "1", "CPU limit of one scanner container (cores, fractions allowed)"),
    KeySpec::optional(
        "CSPM_DOCKER_MEMORY_MB",
        "2048",
        "memory limit of one scanner container, in MiB (no swap on top)",
    ),
    KeySpec::optional("CSPM_DOCKER_PIDS_LIMIT", "512", "process limit of one scanner container"),
    KeySpec::unset(
        "CSPM_DOCKER_USER",
        "uid:gid scanners run as (default: the worker's own, or 10001:10001 when the worker runs as root)",
    ),
    KeySpec::optional(
        "CSPM_DOCKER_STOP_GRACE_SECS",
        "10",
        "on timeout or cancel, seconds between SIGTERM and SIGKILL of a scanner container",
    ),
    KeySpec::optional(
        "CSPM_DOCKER_READ_ONLY_ROOTFS",
        "true",
        "scanner containers get a read-only root filesystem (HOME and /tmp are writable)",
    ),
    KeySpec::optional(
        "CSPM_DOCKER_LOCAL_IMAGES",
        "true",
        "an image scan of an image in the host's local image store reads it from there (the worker exports it into the sub-job's directory for Trivy's --input) instead of from its registry",
    ),
    KeySpec::optional(
        "CSPM_DOCKER_LOCAL_IMAGE_MAX_MB",
        "4096",
        "largest local image the worker exports for a scan, in MiB (larger ones fail the sub-job; the export takes that much disk under the output directory while the scan runs)",
    ),
];

/// Where the worker's scanners run.
#[derive(Debug, Clone)]
pub enum RunnerSettings {
    Local,
    Docker(DockerSettings),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    IfMissing,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct DockerSettings {
    images: Vec<(Tool, String)>,
    allowed: Vec<String>,
    pub pull: PullPolicy,
    pub network: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub pids_limit: i64,
    /// Who scanners run as (uid, gid).
    pub user: (u32, u32),
    pub stop_grace: Duration,
    pub read_only_rootfs: bool,
    /// Whether images in the local image store are exported for the scanner to read (`ImageInput`).
    pub local_images: bool,
    /// The largest such export.
    pub local_image_max_bytes: u64,
    /// The output root as the worker sees it, and as the Docker host sees it.
    pub output_dir: PathBuf,
    pub host_output_dir: PathBuf,
}

impl RunnerSettings {
    /// Reads the runner's keys. `output_dir` and `host_output_dir` come from the worker's own keys.
    pub fn load(env: &Env, output_dir: &Path, host_output_dir: Option<&Path>) -> Self {
        match env.string("CSPM_SCANNER_RUNNER", "local").to_ascii_lowercase().as_str() {
            "local" => RunnerSettings::Local,
            "docker" => {
                let host_output_dir = match host_output_dir {
                    Some(p) => p.to_path_buf(),
                    None => {
                        env.refuse(
                            "PROWLER_HOST_OUTPUT_DIR",
                            "required when CSPM_SCANNER_RUNNER=docker: the output directory as the Docker host sees it",
                        );
                        PathBuf::new()
                    }
                };
                RunnerSettings::Docker(DockerSettings::load(env, output_dir, host_output_dir))
            }
            other => {
                env.refuse("CSPM_SCANNER_RUNNER", &format!("`{other}` is not a runner (use local or docker)"));
                RunnerSettings::Local
            }
        }
    }
}

impl DockerSettings {
    fn load(env: &Env, output_dir: &Path, host_output_dir: PathBuf) -> Self {
        let mut images = Vec::new();
        for (tool, key) in IMAGE_KEYS {
            if let Some(image) = env.optional_string(key) {
                if let Err(why) = check_reference(&image) {
                    env.refuse(key, &why);
                }
                images.push((tool, image));
            }
        }
        let allowed: Vec<String> = match env.optional_string("CSPM_DOCKER_ALLOWED_IMAGES") {
            Some(list) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
            None => images.iter().map(|(_, i)| i.clone()).collect(),
        };
        for (tool, image) in &images {
            if !is_allowed(&allowed, image) {
                let key = IMAGE_KEYS.iter().find(|(t, _)| t == tool).map(|(_, k)| *k).unwrap_or("CSPM_DOCKER_IMAGE_*");
                env.refuse(key, &format!("`{image}` is not in CSPM_DOCKER_ALLOWED_IMAGES"));
            }
        }
        let pull = match env.string("CSPM_DOCKER_PULL", "if-missing").to_ascii_lowercase().as_str() {
            "if-missing" | "missing" => PullPolicy::IfMissing,
            "always" => PullPolicy::Always,
            "never" => PullPolicy::Never,
            other => {
                env.refuse("CSPM_DOCKER_PULL", &format!("`{other}` is not a pull policy (if-missing, always, never)"));
                PullPolicy::IfMissing
            }
        };
        let network = env.string("CSPM_DOCKER_NETWORK", "bridge");
        if !network.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            env.refuse("CSPM_DOCKER_NETWORK", "must be a network name (letters, digits, '-', '_', '.')");
        }
        let cpus: f64 = env.parse("CSPM_DOCKER_CPUS", 1.0);
        if !(0.01..=256.0).contains(&cpus) {
            env.refuse("CSPM_DOCKER_CPUS", "must be between 0.01 and 256");
        }
        let memory_mb: i64 = env.bounded("CSPM_DOCKER_MEMORY_MB", 2048, 64, 1 << 20);
        let user = match env.optional_string("CSPM_DOCKER_USER") {
            None => default_scanner_user(),
            Some(text) => parse_user(&text).unwrap_or_else(|why| {
                env.refuse("CSPM_DOCKER_USER", &why);
                DEFAULT_SCANNER_ID
            }),
        };
        if user.0 == 0 {
            env.refuse("CSPM_DOCKER_USER", "scanners never run as root");
        }
        Self {
            images,
            allowed,
            pull,
            network,
            nano_cpus: (cpus * 1e9) as i64,
            memory_bytes: memory_mb * 1024 * 1024,
            pids_limit: env.bounded("CSPM_DOCKER_PIDS_LIMIT", 512, 16, 1 << 20),
            user,
            stop_grace: env.seconds("CSPM_DOCKER_STOP_GRACE_SECS", 10, 0, 600),
            read_only_rootfs: env.flag("CSPM_DOCKER_READ_ONLY_ROOTFS", true),
            local_images: env.flag("CSPM_DOCKER_LOCAL_IMAGES", true),
            local_image_max_bytes: env.bounded("CSPM_DOCKER_LOCAL_IMAGE_MAX_MB", 4096u64, 1, 1 << 30) * 1024 * 1024,
            output_dir: output_dir.to_path_buf(),
            host_output_dir,
        }
    }

    /// The image configured for a tool.
    pub fn image_for(&self, tool: Tool) -> Option<&str> {
        self.images.iter().find(|(t, _)| *t == tool).map(|(_, i)| i.as_str())
    }

    /// Whether this worker can run the tool in a container; the error names the key to set.
    pub fn check_available(&self, tool: Tool) -> Result<(), String> {
        match self.image_for(tool) {
            Some(_) => Ok(()),
            None => {
                let key = IMAGE_KEYS.iter().find(|(t, _)| *t == tool).map(|(_, k)| *k);
                Err(match key {
                    Some(k) => {
                        format!("tool `{tool}` has no container image on this worker (set {k})", tool = tool.as_str())
                    }
                    None => format!("tool `{}` cannot run in a container", tool.as_str()),
                })
            }
        }
    }

    /// The output directory of a path under the worker's output root, as the Docker host sees it.
    fn host_path_of(&self, worker_path: &Path) -> Result<PathBuf, String> {
        let rel = worker_path.strip_prefix(&self.output_dir).map_err(|_| {
            format!(
                "{} is not under the output directory {} (CSPM_WORKER_OUTPUT_DIR)",
                worker_path.display(),
                self.output_dir.display()
            )
        })?;
        Ok(self.host_output_dir.join(rel))
    }
}

const IMAGE_KEYS: [(Tool, &str); 5] = [
    (Tool::Prowler, "CSPM_DOCKER_IMAGE_PROWLER"),
    (Tool::Trivy, "CSPM_DOCKER_IMAGE_TRIVY"),
    (Tool::Nmap, "CSPM_DOCKER_IMAGE_NMAP"),
    (Tool::Wapiti, "CSPM_DOCKER_IMAGE_WAPITI"),
    (Tool::Zap, "CSPM_DOCKER_IMAGE_ZAP"),
];

/// The command a tool's image is asked to run (found on the image's `PATH`).
pub fn container_program(tool: Tool) -> &'static str {
    match tool {
        Tool::Prowler => "prowler",
        Tool::Trivy => "trivy",
        Tool::Nmap => "nmap",
        Tool::Wapiti => "wapiti",
        Tool::Zap => "zap.sh",
        Tool::Canary => "true",
    }
}

/// A syntactic check of an image reference: `[registry/]name[:tag][@digest]`, no spaces or options.
pub fn check_reference(image: &str) -> Result<(), String> {
    let ok_chars = image.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:@".contains(&b));
    if image.is_empty() || image.len() > 255 || !ok_chars || image.starts_with(['-', '.', '/', ':', '@']) {
        return Err(format!("`{image}` is not an image reference ([registry/]name[:tag][@sha256:digest])"));
    }
    Ok(())
}

/// Whether an image matches the allow-list: an exact reference, or a prefix ending in `*`. A reference
/// without a tag means `:latest`, as Docker reads it.
pub fn is_allowed(allowed: &[String], image: &str) -> bool {
    let normal = normalise(image);
    allowed.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => image.starts_with(prefix) || normal.starts_with(prefix),
        None => normalise(entry) == normal,
    })
}

fn normalise(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') { image.to_string() } else { format!("{image}:latest") }
}

fn parse_user(text: &str) -> Result<(u32, u32), String> {
    let (u, g) = text.split_once(':').unwrap_or((text, text));
    match (u.trim().parse(), g.trim().parse()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(format!("`{text}` is not numeric uid:gid (e.g. 10001:10001)")),
    }
}

fn default_scanner_user() -> (u32, u32) {
    let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    if uid == 0 { DEFAULT_SCANNER_ID } else { (uid, gid) }
}

/// A SubJob's container: what to run, and whose it is.
pub struct ContainerJob<'a> {
    pub spec: &'a ProcessSpec,
    pub tool: Tool,
    /// The image's command (`container_program(tool)`; `spec.program` is the local runner's).
    pub program: &'a str,
    pub run_id: &'a RunId,
    pub subjob_id: &'a SubJobId,
}

/// Why a container could not be run at all (as opposed to a scan that ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("image `{0}` is not allowed on this worker (CSPM_DOCKER_ALLOWED_IMAGES)")]
    NotAllowed(String),
    #[error("image `{0}` is not present and pulls are off (CSPM_DOCKER_PULL=never)")]
    Missing(String),
    #[error("pulling image `{image}` failed: {why}")]
    Pull { image: String, why: String },
    #[error("exporting image `{image}` from the local image store failed: {why}")]
    Export { image: String, why: String },
    #[error("{0}")]
    Setup(String),
    #[error("the Docker daemon refused or failed: {0}")]
    Docker(String),
}

fn docker_error(e: DockerError) -> RunnerError {
    RunnerError::Docker(describe(&e))
}

/// A daemon error in one line, without the request's internals.
fn describe(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { status_code, message } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// An image found in the local image store.
struct LocalImage {
    id: String,
    /// Its size as the daemon reports it (about the size of its export).
    size: u64,
}

/// A connection to the Docker daemon and the settings of the containers it starts.
#[derive(Clone)]
pub struct DockerRunner {
    docker: Docker,
    settings: DockerSettings,
    worker: String,
    fleet: String,
    metrics: WorkerMetrics,
}

impl DockerRunner {
    /// Connects (`DOCKER_HOST`, or the local socket) and agrees an API version with the daemon.
    /// `worker` is this process's unique name, `fleet` the fleet's (its database prefix).
    pub async fn connect(
        settings: DockerSettings,
        worker: String,
        fleet: String,
        metrics: WorkerMetrics,
    ) -> Result<Self, String> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| format!("cannot connect to the Docker daemon: {}", describe(&e)))?
            .negotiate_version()
            .await
            .map_err(|e| format!("the Docker daemon does not answer: {}", describe(&e)))?;
        docker.ping().await.map_err(|e| format!("the Docker daemon does not answer: {}", describe(&e)))?;
        let fleet = if fleet.is_empty() { "default".to_string() } else { fleet };
        Ok(Self { docker, settings, worker, fleet, metrics })
    }

    pub fn settings(&self) -> &DockerSettings {
        &self.settings
    }

    /// Whether the daemon answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), String> {
        self.docker.ping().await.map(|_| ()).map_err(|e| describe(&e))
    }

    /// Runs a SubJob's scanner in a fresh container and removes it, whatever happens. Credential files
    /// in the output directory are removed as soon as the scanner ends.
    pub async fn run(
        &self,
        job: ContainerJob<'_>,
        timeout: Duration,
        stop: StopSignal,
    ) -> Result<RunReport, RunnerError> {
        self.run_reading_image(job, None, timeout, stop).await
    }

    /// `run`, for a scanner that reads a container image: when the image is in the local image store
    /// (and `CSPM_DOCKER_LOCAL_IMAGES` is on), it is exported into the SubJob's directory first and the
    /// scanner reads the export (`ImageInput::archive_args`); otherwise the scanner reads the image from
    /// its registry, as planned. The export is removed as soon as the scanner ends, whatever happens,
    /// and counts against the SubJob's time limit.
    pub async fn run_reading_image(
        &self,
        job: ContainerJob<'_>,
        image: Option<&ImageInput>,
        timeout: Duration,
        stop: StopSignal,
    ) -> Result<RunReport, RunnerError> {
        let result = match image.filter(|_| self.settings.local_images) {
            None => self.run_container(&job, timeout, stop).await,
            Some(image) => self.run_from_local_store(&job, image, timeout, stop).await,
        };
        let scratch = image.map(|i| i.archive.clone());
        for f in job.spec.secret_files.iter().chain(scratch.as_ref()) {
            if let Err(e) = std::fs::remove_file(f)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, file = %f.display(), "could not remove a credential file or image export");
            }
        }
        result
    }

    async fn run_from_local_store(
        &self,
        job: &ContainerJob<'_>,
        image: &ImageInput,
        timeout: Duration,
        mut stop: StopSignal,
    ) -> Result<RunReport, RunnerError> {
        let started = Instant::now();
        let Some(local) = self.local_image(&image.reference).await? else {
            tracing::debug!(image = %image.reference, "not in the local image store; the scanner reads it from its registry");
            return self.run_container(job, timeout, stop).await;
        };
        // No export for a scanner that cannot start; and the scanner's user must read the export: its
        // directory is given to it first.
        self.scanner_image(job.tool).await?;
        self.prepare_output(&job.spec.workdir)?;
        let exported = tokio::select! {
            r = self.export(&image.reference, &local, &image.archive) => Some(r?),
            _ = tokio::time::sleep(timeout) => None,
            reason = stopped(&mut stop) => {
                return Ok(RunReport { exit: Exit::Stopped(reason), duration: started.elapsed(), output_tail: String::new(), start_latency: None });
            }
        };
        let Some(bytes) = exported else {
            return Ok(RunReport {
                exit: Exit::TimedOut,
                duration: started.elapsed(),
                output_tail: format!(
                    "exporting image `{}` from the local image store took the whole time limit",
                    image.reference
                ),
                start_latency: None,
            });
        };
        let export_seconds = started.elapsed().as_secs_f64();
        tracing::info!(image = %image.reference, image_id = %local.id, bytes, export_seconds, "image exported from the local image store");
        let spec = ProcessSpec { args: image.archive_args.clone(), ..job.spec.clone() };
        let reading = ContainerJob { spec: &spec, ..*job };
        let mut report = self.run_container(&reading, timeout.saturating_sub(started.elapsed()), stop).await?;
        report.duration = started.elapsed();
        Ok(report)
    }

    /// The local image a reference names, or `None` when the local image store has no such image.
    async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, RunnerError> {
        match self.docker.inspect_image(reference).await {
            Ok(found) => Ok(Some(LocalImage {
                id: found.id.unwrap_or_else(|| reference.to_string()),
                size: found.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            })),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(RunnerError::Export { image: reference.to_string(), why: describe(&e) }),
        }
    }

    /// Streams the image's `docker save` archive to `archive`, within `CSPM_DOCKER_LOCAL_IMAGE_MAX_MB`;
    /// returns its size. The image is exported by id, so that what is scanned is what was inspected even
    /// if the tag moves meanwhile. A failed export leaves no file.
    async fn export(&self, reference: &str, local: &LocalImage, archive: &Path) -> Result<u64, RunnerError> {
        let max = self.settings.local_image_max_bytes;
        let too_large = |size: u64| RunnerError::Export {
            image: reference.to_string(),
            why: format!(
                "the image is {} MiB or more, over the limit of {} MiB (CSPM_DOCKER_LOCAL_IMAGE_MAX_MB)",
                size.div_ceil(1024 * 1024),
                max / (1024 * 1024)
            ),
        };
        if local.size > max {
            return Err(too_large(local.size));
        }
        let written = self.write_export(reference, local, archive, max).await;
        match written {
            Ok(n) if n > max => Err(too_large(n)),
            Ok(n) => Ok(n),
            Err(e) => Err(e),
        }
        .inspect_err(|_| {
            let _ = std::fs::remove_file(archive);
        })
    }

    /// Writes the export, stopping as soon as it passes `max` bytes (the returned count then says so).
    async fn write_export(
        &self,
        reference: &str,
        local: &LocalImage,
        archive: &Path,
        max: u64,
    ) -> Result<u64, RunnerError> {
        use tokio::io::AsyncWriteExt;
        let failed = |why: String| RunnerError::Export { image: reference.to_string(), why };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(archive)
            .await
            .map_err(|e| failed(format!("cannot create {}: {e}", archive.display())))?;
        let (uid, gid) = self.settings.user;
        if (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw()) != (uid, gid) {
            std::os::unix::fs::chown(archive, Some(uid), Some(gid)).map_err(|e| {
                failed(format!("cannot give {} to the scanner's user {uid}:{gid}: {e}", archive.display()))
            })?;
        }
        let mut stream = self.docker.export_image(&local.id);
        let mut written: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(describe(&e)))?;
            written += chunk.len() as u64;
            if written > max {
                return Ok(written);
            }
            file.write_all(&chunk).await.map_err(|e| failed(format!("cannot write {}: {e}", archive.display())))?;
        }
        file.flush().await.map_err(|e| failed(format!("cannot write {}: {e}", archive.display())))?;
        if written == 0 {
            return Err(failed("the daemon sent an empty archive".into()));
        }
        Ok(written)
    }

    async fn run_container(
        &self,
        job: &ContainerJob<'_>,
        timeout: Duration,
        mut stop: StopSignal,
    ) -> Result<RunReport, RunnerError> {
        let image = self.scanner_image(job.tool).await?;
        let name = container_name(job.subjob_id);
        let body = self.container_body(job, &image)?;
        self.prepare_output(&job.spec.workdir)?;

        let started = Instant::now();
        self.create(&name, body).await?;
        // From here on the container exists: every path below removes it.
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.remove(&name).await;
            return Err(docker_error(e));
        }
        let start_latency = started.elapsed();
        let start_seconds = start_latency.as_secs_f64();
        self.metrics.container_started(job.tool.as_str(), start_seconds);
        tracing::info!(container = %name, image, start_seconds, "scanner container started");
        self.metrics.containers_running.inc();

        let mut wait = self.docker.wait_container(&name, None::<WaitContainerOptions>);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        // `None`: the container ended by itself. Otherwise how it was interrupted.
        let interrupted = tokio::select! {
            // Ok on exit 0, Err(DockerContainerWaitError) on any other code; either way it ended.
            // The code itself is read from the container's state below.
            ended = wait.next() => match ended {
                Some(Err(e @ DockerError::DockerResponseServerError { .. })) => {
                    tracing::warn!(error = %describe(&e), "waiting for the scanner container failed");
                    Some(Exit::Exited(None))
                }
                _ => None,
            },
            _ = &mut deadline => Some(Exit::TimedOut),
            reason = stopped(&mut stop) => Some(Exit::Stopped(reason)),
        };
        drop(wait);
        let (exit, note) = match interrupted {
            Some(exit) => {
                self.stop(&name).await;
                (exit, None)
            }
            // The wait ended: normally because the container exited; if the daemon's answer was cut off
            // instead, the container still runs and must be stopped, and its result is unknown.
            None => match self.exit_code(&name).await {
                Some((exit, oom)) => {
                    let note = oom.then(|| {
                        format!(
                            "\nthe scanner ran out of memory (limit {} MiB: CSPM_DOCKER_MEMORY_MB)",
                            self.settings.memory_bytes / (1024 * 1024)
                        )
                    });
                    (exit, note)
                }
                None => {
                    tracing::warn!(container = %name, "lost track of the scanner container; stopping it");
                    self.stop(&name).await;
                    (Exit::Exited(None), None)
                }
            },
        };
        let mut output_tail = self.log_tail(&name).await;
        output_tail.push_str(note.as_deref().unwrap_or_default());
        self.remove(&name).await;
        self.metrics.containers_running.dec();
        Ok(RunReport { exit, duration: started.elapsed(), output_tail, start_latency: Some(start_latency) })
    }

    /// The tool's image, allowed and present (pulled by policy).
    async fn scanner_image(&self, tool: Tool) -> Result<String, RunnerError> {
        let image = self
            .settings
            .image_for(tool)
            .ok_or_else(|| RunnerError::Setup(self.settings.check_available(tool).err().unwrap_or_default()))?
            .to_string();
        if !is_allowed(&self.settings.allowed, &image) {
            return Err(RunnerError::NotAllowed(image));
        }
        self.ensure_image(&image).await?;
        Ok(image)
    }

    /// SIGTERM, then SIGKILL after the grace period (`docker stop`).
    async fn stop(&self, name: &str) {
        let grace = i32::try_from(self.settings.stop_grace.as_secs()).unwrap_or(10);
        let options = StopContainerOptionsBuilder::new().t(grace).build();
        if let Err(e) = self.docker.stop_container(name, Some(options)).await
            && !is_status(&e, 304)
        {
            tracing::warn!(error = %describe(&e), container = %name, "could not stop the scanner container");
        }
    }

    fn container_body(&self, job: &ContainerJob<'_>, image: &str) -> Result<ContainerCreateBody, RunnerError> {
        let spec = job.spec;
        let s = &self.settings;
        let workdir = spec.workdir.display().to_string();
        let host_dir = s.host_path_of(&spec.workdir).map_err(RunnerError::Setup)?;
        let mut mounts = vec![Mount {
            target: Some(workdir.clone()),
            source: Some(host_dir.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        }];
        for m in &spec.mounts {
            mounts.push(Mount {
                target: Some(m.path.display().to_string()),
                source: Some(m.path.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(!m.writable),
                ..Default::default()
            });
        }
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !spec.env.iter().any(|(k, _)| k == "HOME") {
            env.push("HOME=/tmp".into());
        }
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_RUN.to_string(), job.run_id.to_string()),
            (LABEL_SUBJOB.to_string(), job.subjob_id.to_string()),
            (LABEL_WORKER.to_string(), self.worker.clone()),
            (LABEL_TOOL.to_string(), job.tool.as_str().to_string()),
            (LABEL_FLEET.to_string(), self.fleet.clone()),
        ]);
        let host_config = HostConfig {
            mounts: Some(mounts),
            network_mode: Some(s.network.clone()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            privileged: Some(false),
            readonly_rootfs: Some(s.read_only_rootfs),
            tmpfs: Some(HashMap::from([("/tmp".to_string(), "rw,nosuid,nodev,size=512m".to_string())])),
            nano_cpus: Some(s.nano_cpus),
            memory: Some(s.memory_bytes),
            memory_swap: Some(s.memory_bytes),
            pids_limit: Some(s.pids_limit),
            // Reaps the scanner's children and forwards SIGTERM to it.
            init: Some(true),
            auto_remove: Some(false),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec![job.program.to_string()]),
            cmd: Some(spec.args.clone()),
            env: Some(env),
            user: Some(format!("{}:{}", s.user.0, s.user.1)),
            working_dir: Some(workdir),
            labels: Some(labels),
            attach_stdin: Some(false),
            tty: Some(false),
            network_disabled: Some(s.network == "none"),
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    /// Gives the SubJob's directory (made by the pipeline, through the worker's mount) to the scanner's
    /// user, so that it can write there and nothing else can.
    fn prepare_output(&self, dir: &Path) -> Result<(), RunnerError> {
        use std::os::unix::fs::PermissionsExt;
        let (uid, gid) = self.settings.user;
        let own = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        if own != (uid, gid) {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
                RunnerError::Setup(format!(
                    "cannot give the output directory {} to the scanner's user {uid}:{gid}: {e} \
                     (run the worker as that user, or set CSPM_DOCKER_USER to the worker's uid:gid)",
                    dir.display()
                ))
            })?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| RunnerError::Setup(format!("cannot restrict the output directory {}: {e}", dir.display())))
    }

    /// Creates the SubJob's container. A container of the same name is an earlier attempt's (the claim
    /// guarantees this worker owns the SubJob now): it is removed and replaced, never run beside.
    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<(), RunnerError> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        match self.docker.create_container(Some(options.clone()), body.clone()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => {
                let owner = self
                    .docker
                    .inspect_container(name, None::<InspectContainerOptions>)
                    .await
                    .ok()
                    .and_then(|c| c.config.and_then(|c| c.labels).and_then(|l| l.get(LABEL_WORKER).cloned()));
                tracing::warn!(container = %name, previous_worker = ?owner, "replacing the container of an earlier attempt");
                self.metrics.container_replaced();
                self.force_remove(name).await.map_err(docker_error)?;
                self.docker.create_container(Some(options), body).await.map(|_| ()).map_err(docker_error)
            }
            Err(e) => Err(docker_error(e)),
        }
    }

    /// How the container ended, and whether it was killed for memory; `None` while it still runs.
    async fn exit_code(&self, name: &str) -> Option<(Exit, bool)> {
        match self.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                if state.running == Some(true) {
                    return None;
                }
                let oom = state.oom_killed == Some(true);
                Some((Exit::Exited(state.exit_code.and_then(|c| i32::try_from(c).ok())), oom))
            }
            Err(e) => {
                tracing::warn!(error = %describe(&e), container = %name, "could not read the scanner's exit code");
                Some((Exit::Exited(None), false))
            }
        }
    }

    async fn log_tail(&self, name: &str) -> String {
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(TAIL_LINES).build();
        let mut logs = self.docker.logs(name, Some(options));
        let mut kept: Vec<u8> = Vec::new();
        while let Some(chunk) = logs.next().await {
            match chunk {
                Ok(out) => {
                    kept.extend_from_slice(&out.into_bytes());
                    if kept.len() > 2 * TAIL_BYTES {
                        kept.drain(..kept.len() - TAIL_BYTES);
                    }
                }
                Err(_) => break,
            }
        }
        if kept.len() > TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
        }
        String::from_utf8_lossy(&kept).into_owned()
    }

    async fn remove(&self, name: &str) {
        if let Err(e) = self.force_remove(name).await {
            tracing::warn!(error = %describe(&e), container = %name, "could not remove the scanner container");
        }
    }

    async fn force_remove(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match self.docker.remove_container(name, Some(options)).await {
            Err(e) if is_status(&e, 404) => Ok(()),
            // Already being removed by another call.
            Err(e) if is_status(&e, 409) => Ok(()),
            other => other,
        }
    }

    /// Makes sure the image is here, pulling it by policy (progress in the logs, outcome in metrics).
    async fn ensure_image(&self, image: &str) -> Result<(), RunnerError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if is_status(&e, 404) => false,
            Err(e) => return Err(docker_error(e)),
        };
        match (self.settings.pull, present) {
            (PullPolicy::Never, false) => Err(RunnerError::Missing(image.to_string())),
            (PullPolicy::Never | PullPolicy::IfMissing, true) => Ok(()),
            (PullPolicy::Always, _) | (PullPolicy::IfMissing, false) => {
                let started = Instant::now();
                let result = self.pull(image).await;
                let outcome = match (&result, present) {
                    (Ok(()), _) => "pulled",
                    // A refresh that failed still leaves an image to run.
                    (Err(_), true) => "failed_kept_local",
                    (Err(_), false) => "failed",
                };
                self.metrics.image_pulled(outcome, started.elapsed().as_secs_f64());
                match result {
                    Err(e) if present => {
                        tracing::warn!(error = %e, image, "image refresh failed; using the local copy");
                        Ok(())
                    }
                    other => other,
                }
            }
        }
    }

    async fn pull(&self, image: &str) -> Result<(), RunnerError> {
        tracing::info!(image, "pulling image");
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut progress = self.docker.create_image(Some(options), None, None);
        let mut last_status = String::new();
        while let Some(step) = progress.next().await {
            match step {
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        return Err(RunnerError::Pull { image: image.to_string(), why: err });
                    }
                    if let Some(status) = info.status
                        && status != last_status
                    {
                        tracing::debug!(image, layer = info.id.as_deref().unwrap_or(""), %status, "pull progress");
                        last_status = status;
                    }
                }
                Err(e) => return Err(RunnerError::Pull { image: image.to_string(), why: describe(&e) }),
            }
        }
        tracing::info!(image, "image pulled");
        Ok(())
    }

    /// Removes the containers this fleet started whose SubJob no longer runs under their worker: the
    /// leftovers of workers that died (their SubJob was taken over, or ended), and of SubJobs that no
    /// longer exist. `is_orphan(subjob, worker)` tells whether that worker no longer holds that SubJob.
    pub async fn reap_orphans<F, Fut>(&self, mut is_orphan: F) -> Result<usize, String>
    where
        F: FnMut(SubJobId, String) -> Fut,
        Fut: std::future::Future<Output = Result<bool, String>>,
    {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_FLEET}={}", self.fleet)],
        )]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let containers = self.docker.list_containers(Some(options)).await.map_err(|e| describe(&e))?;
        let mut removed = 0;
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let (Some(subjob), Some(worker)) = (labels.get(LABEL_SUBJOB), labels.get(LABEL_WORKER)) else { continue };
            let Some(name) = c.names.and_then(|n| n.into_iter().next()).map(|n| n.trim_start_matches('/').to_string())
            else {
                continue;
            };
            if worker == &self.worker {
                continue; // ours: the pipeline removes it
            }
            let Ok(id) = subjob.parse::<SubJobId>() else { continue };
            if !is_orphan(id, worker.clone()).await? {
                continue; // its worker still holds the SubJob
            }
            tracing::warn!(container = %name, %worker, "removing the container of a worker that is gone");
            if self.force_remove(&name).await.is_ok() {
                removed += 1;
                self.metrics.containers_reaped.inc();
            }
        }
        Ok(removed)
    }
}

/// The container of a SubJob: one name per SubJob, so that a second attempt meets the first's.
pub fn container_name(subjob: &SubJobId) -> String {
    format!("cspm-{}", subjob.as_str().to_ascii_lowercase())
}

/// Who holds a SubJob now, from its document: its lease owner while the lease is live and the SubJob
/// runs; nobody otherwise.
pub fn holder(status: SubJobStatus, lease_owner: Option<String>, lease_live: bool) -> Option<String> {
    (status == SubJobStatus::Running && lease_live).then_some(lease_owner).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<RunnerSettings, cspm_shared::config::ConfigError> {
        let env = Env::from_map(vars.iter().copied());
        let s = RunnerSettings::load(&env, Path::new("/out"), Some(Path::new("/host/out")));
        env.finish(s)
    }

    #[test]
    fn the_allow_list_matches_exact_references_and_prefixes() {
        let allowed = vec!["cspm-nmap:local".to_string(), "prowlercloud/prowler:*".to_string(), "alpine".to_string()];
        assert!(is_allowed(&allowed, "cspm-nmap:local"));
        assert!(!is_allowed(&allowed, "cspm-nmap:other"));
        assert!(is_allowed(&allowed, "prowlercloud/prowler:5.14.1"));
        assert!(!is_allowed(&allowed, "prowlercloud/prowler-evil:1"));
        assert!(is_allowed(&allowed, "alpine:latest"), "no tag means latest");
        assert!(!is_allowed(&allowed, "alpine:3.20"));
        assert!(!is_allowed(&allowed, "evil/nmap:local"));
    }

    #[test]
    fn image_references_are_checked() {
        assert!(check_reference("registry.example:5000/org/trivy:0.67@sha256:abc").is_ok());
        for bad in ["", "--privileged", "a b", "img;rm", "/abs"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_needs_the_host_output_dir_and_allowed_images() {
        let env = Env::from_map([("CSPM_SCANNER_RUNNER", "docker"), ("CSPM_DOCKER_IMAGE_NMAP", "cspm-nmap:local")]);
        let _ = RunnerSettings::load(&env, Path::new("/out"), None);
        let err = env.finish(()).expect_err("refused").to_string();
        assert!(err.contains("PROWLER_HOST_OUTPUT_DIR"), "{err}");

        let err = settings(&[
            ("CSPM_SCANNER_RUNNER", "docker"),
            ("CSPM_DOCKER_IMAGE_NMAP", "cspm-nmap:local"),
            ("CSPM_DOCKER_ALLOWED_IMAGES", "prowlercloud/*"),
        ])
        .expect_err("refused")
        .to_string();
        assert!(err.contains("CSPM_DOCKER_IMAGE_NMAP") && err.contains("not in CSPM_DOCKER_ALLOWED_IMAGES"), "{err}");

        let err = settings(&[("CSPM_SCANNER_RUNNER", "docker"), ("CSPM_DOCKER_LOCAL_IMAGE_MAX_MB", "0")])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("CSPM_DOCKER_LOCAL_IMAGE_MAX_MB"), "{err}");

        let err = settings(&[("CSPM_SCANNER_RUNNER", "podman")]).expect_err("refused").to_string();
        assert!(err.contains("CSPM_SCANNER_RUNNER"), "{err}");
        let err = settings(&[("CSPM_SCANNER_RUNNER", "docker"), ("CSPM_DOCKER_USER", "0:0")])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("never run as root"), "{err}");
    }

    #[test]
    fn docker_settings_have_safe_defaults() {
        let Ok(RunnerSettings::Docker(s)) =
            settings(&[("CSPM_SCANNER_RUNNER", "docker"), ("CSPM_DOCKER_IMAGE_NMAP", "cspm-nmap:local")])
        else {
            panic!("docker settings expected");
        };
        assert_eq!(s.image_for(Tool::Nmap), Some("cspm-nmap:local"));
        assert!(s.check_available(Tool::Trivy).expect_err("no image").contains("CSPM_DOCKER_IMAGE_TRIVY"));
        assert_eq!(s.pull, PullPolicy::IfMissing);
        assert_eq!(s.nano_cpus, 1_000_000_000);
        assert_eq!(s.memory_bytes, 2048 * 1024 * 1024);
        assert!(s.read_only_rootfs);
        assert!(s.local_images);
        assert_eq!(s.local_image_max_bytes, 4096 * 1024 * 1024);
        assert_ne!(s.user.0, 0);
        assert_eq!(s.host_path_of(Path::new("/out/run/sub")).expect("under"), PathBuf::from("/host/out/run/sub"));
        assert!(s.host_path_of(Path::new("/elsewhere/x")).is_err());
    }

    #[test]
    fn only_a_live_lease_of_a_running_subjob_holds_it() {
        assert_eq!(holder(SubJobStatus::Running, Some("w1".into()), true), Some("w1".into()));
        assert_eq!(holder(SubJobStatus::Running, Some("w1".into()), false), None);
        assert_eq!(holder(SubJobStatus::Completed, Some("w1".into()), true), None);
    }
}
