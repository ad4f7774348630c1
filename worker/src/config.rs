//! The worker's configuration, read once from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cspm_shared::artifacts::{ARTIFACT_KEYS, ArtifactSettings};
use cspm_shared::auth::crypto::CredentialCipher;
use cspm_shared::config::{ConfigError, Env, KeySpec};
use cspm_shared::domain::native::TargetPolicy;
use cspm_shared::kev::{KEV_KEYS, KevSettings};
use cspm_shared::settings::{COMMON_KEYS, CommonSettings};
use secrecy::SecretString;

use crate::runner::docker::{DOCKER_KEYS, RunnerSettings};

pub const WORKER_KEYS: &[KeySpec] = &[
    KeySpec::optional(
        "CSPM_WORKER_BIND",
        "127.0.0.1:9091",
        "address of the worker's /healthz, /readyz and /metrics (port 0: any free port)",
    ),
    KeySpec::unset(
        "CSPM_WORKER_NAME",
        "name prefix of this worker (default: the host name); a random suffix keeps every process unique",
    ),
    KeySpec::optional(
        "CSPM_WORKER_CLOUD_CONCURRENCY",
        "4",
        "cloud sub-jobs this worker runs at once (0: do not consume the cloud queue)",
    ),
    KeySpec::optional(
        "CSPM_WORKER_NATIVE_CONCURRENCY",
        "2",
        "native scans this worker runs at once (0: do not consume the native queue)",
    ),
    KeySpec::optional(
        "CSPM_WORKER_OUTPUT_DIR",
        "/tmp/cspm-output",
        "where scanners write their output, as this worker sees it (one directory per run and sub-job)",
    ),
    KeySpec::unset(
        "PROWLER_HOST_OUTPUT_DIR",
        "the output directory as the Docker host sees it (required by the Docker runner: scanner containers mount their sub-job's directory from there)",
    ),
    KeySpec::optional(
        "CSPM_WORKER_LEASE_SECS",
        "15",
        "lease of a running sub-job; renewed every third of it, taken over by others when it lapses",
    ),
    KeySpec::optional("CSPM_WORKER_POLL_MS", "250", "fallback poll of the queue when no wake-up arrives"),
    KeySpec::optional(
        "CSPM_WORKER_SHUTDOWN_GRACE_SECS",
        "30",
        "on SIGTERM, how long running sub-jobs may finish before they are handed back",
    ),
    KeySpec::optional(
        "CSPM_WORKER_FEED_INTERVAL_MS",
        "1000",
        "how often the worker feeds waiting sub-jobs from MongoDB into Redis",
    ),
    KeySpec::optional("CSPM_WORKER_MAX_OUTPUT_BYTES", "536870912", "largest scanner output the worker will parse"),
    KeySpec::optional("CSPM_KEEP_FAILED_OUTPUT", "false", "keep the output directory of failed sub-jobs for diagnosis"),
    KeySpec::optional("CSPM_NMAP_PATH", "nmap", "the nmap executable"),
    KeySpec::optional("CSPM_PROWLER_PATH", "prowler", "the prowler executable"),
    KeySpec::optional("CSPM_TRIVY_PATH", "trivy", "the trivy executable"),
    KeySpec::unset("CSPM_TRIVY_CACHE_DIR", "Trivy's cache (vulnerability database, checks); unset: Trivy's default"),
    KeySpec::optional(
        "CSPM_TRIVY_OFFLINE",
        "false",
        "run Trivy without network access to its databases (use the cached database; no update checks)",
    ),
    KeySpec::optional("CSPM_WAPITI_PATH", "wapiti", "the wapiti executable (web scans)"),
    KeySpec::optional("CSPM_ZAP_PATH", "zap.sh", "the ZAP launcher (web scans)"),
    KeySpec::unset(
        "CSPM_SCAN_PATH_ROOTS",
        "comma-separated directories under which filesystem and IaC scans may read (unset: such scans are refused)",
    ),
    KeySpec::unset(
        "CLOUD_ENCRYPTION_KEY",
        "key that decrypts cloud credentials (the API's key); needed for cloud scanners",
    ),
    KeySpec::optional(
        "ALLOW_PRIVATE_SCAN_TARGETS",
        "false",
        "allow native scans of private addresses (checked again before every scan)",
    ),
    KeySpec::optional(
        "CSPM_ALLOW_LOOPBACK_SCAN_TARGETS",
        "false",
        "allow native scans of loopback addresses (development and tests only)",
    ),
];

pub fn all_keys() -> Vec<KeySpec> {
    COMMON_KEYS.iter().chain(ARTIFACT_KEYS).chain(KEV_KEYS).chain(WORKER_KEYS).chain(DOCKER_KEYS).copied().collect()
}

#[derive(Clone)]
pub struct WorkerConfig {
    pub common: CommonSettings,
    pub bind: SocketAddr,
    pub name: String,
    pub cloud_concurrency: usize,
    pub native_concurrency: usize,
    pub output_dir: PathBuf,
    pub host_output_dir: Option<PathBuf>,
    /// Where scanners run: child processes, or sibling containers.
    pub runner: RunnerSettings,
    pub lease: Duration,
    pub poll: Duration,
    pub shutdown_grace: Duration,
    pub feed_interval: Duration,
    pub max_output_bytes: u64,
    pub keep_failed_output: bool,
    pub nmap_path: String,
    pub prowler_path: String,
    pub trivy_path: String,
    pub trivy_cache_dir: Option<PathBuf>,
    pub trivy_offline: bool,
    pub wapiti_path: String,
    pub zap_path: String,
    /// Directories filesystem scans may read (canonical, absolute); empty: none.
    pub scan_path_roots: Vec<PathBuf>,
    pub cipher: Option<CredentialCipher>,
    pub target_policy: TargetPolicy,
    /// Where the raw output of every SubJob is kept.
    pub artifacts: ArtifactSettings,
    /// The KEV catalog's reload interval (the enrichment stage).
    pub kev: KevSettings,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig").field("name", &self.name).field("bind", &self.bind).finish_non_exhaustive()
    }
}

impl WorkerConfig {
    pub fn from_env(env: Env) -> Result<Self, ConfigError> {
        let common = CommonSettings::load(&env);
        let prefix = env.optional_string("CSPM_WORKER_NAME").unwrap_or_else(host_name);
        if prefix.len() > 64
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            env.refuse("CSPM_WORKER_NAME", "at most 64 letters, digits, '-', '_' or '.'");
        }
        // apalis refuses a worker name that was alive within one heartbeat (and after a graceful stop), so
        // every process gets a fresh name.
        let name = format!("{prefix}-{}", ulid::Ulid::generate().to_string().to_ascii_lowercase());
        let output_dir = PathBuf::from(env.string("CSPM_WORKER_OUTPUT_DIR", "/tmp/cspm-output"));
        if !output_dir.is_absolute() {
            env.refuse("CSPM_WORKER_OUTPUT_DIR", "must be an absolute path");
        }
        let host_output_dir = env.optional_string("PROWLER_HOST_OUTPUT_DIR").map(PathBuf::from);
        if host_output_dir.as_ref().is_some_and(|p| !p.is_absolute()) {
            env.refuse("PROWLER_HOST_OUTPUT_DIR", "must be an absolute path on the Docker host");
        }
        let cipher = env.raw("CLOUD_ENCRYPTION_KEY").and_then(|k| {
            CredentialCipher::from_key_text(&SecretString::from(k.to_string()))
                .map_err(|e| env.refuse("CLOUD_ENCRYPTION_KEY", &e.to_string()))
                .ok()
        });
        let lease = env.seconds("CSPM_WORKER_LEASE_SECS", 15, 3, 3600);
        let runner = RunnerSettings::load(&env, &output_dir, host_output_dir.as_deref());
        let config = Self {
            bind: env.parse("CSPM_WORKER_BIND", SocketAddr::from(([127, 0, 0, 1], 9091))),
            name,
            cloud_concurrency: env.bounded("CSPM_WORKER_CLOUD_CONCURRENCY", 4, 0, 256),
            native_concurrency: env.bounded("CSPM_WORKER_NATIVE_CONCURRENCY", 2, 0, 256),
            output_dir,
            host_output_dir,
            runner,
            lease,
            poll: env.millis("CSPM_WORKER_POLL_MS", 250, 5, 60_000),
            shutdown_grace: env.seconds("CSPM_WORKER_SHUTDOWN_GRACE_SECS", 30, 0, 3600),
            feed_interval: env.millis("CSPM_WORKER_FEED_INTERVAL_MS", 1000, 50, 600_000),
            max_output_bytes: env.bounded("CSPM_WORKER_MAX_OUTPUT_BYTES", 512 * 1024 * 1024, 1024, 1 << 40),
            keep_failed_output: env.flag("CSPM_KEEP_FAILED_OUTPUT", false),
            nmap_path: env.string("CSPM_NMAP_PATH", "nmap"),
            prowler_path: env.string("CSPM_PROWLER_PATH", "prowler"),
            trivy_path: env.string("CSPM_TRIVY_PATH", "trivy"),
            trivy_cache_dir: env.optional_string("CSPM_TRIVY_CACHE_DIR").map(PathBuf::from),
            trivy_offline: env.flag("CSPM_TRIVY_OFFLINE", false),
            wapiti_path: env.string("CSPM_WAPITI_PATH", "wapiti"),
            zap_path: env.string("CSPM_ZAP_PATH", "zap.sh"),
            scan_path_roots: env.dir_list("CSPM_SCAN_PATH_ROOTS"),
            cipher,
            target_policy: TargetPolicy {
                allow_private: env.flag("ALLOW_PRIVATE_SCAN_TARGETS", false),
                allow_loopback: env.flag("CSPM_ALLOW_LOOPBACK_SCAN_TARGETS", false),
            },
            artifacts: ArtifactSettings::load(&env),
            kev: KevSettings::load(&env),
            common,
        };
        if config.cloud_concurrency + config.native_concurrency == 0 {
            env.refuse(
                "CSPM_WORKER_CLOUD_CONCURRENCY",
                "and CSPM_WORKER_NATIVE_CONCURRENCY are both 0: the worker would do nothing",
            );
        }
        let orphan = config.common.queue.orphan_after();
        if config.lease > orphan * 3 {
            env.refuse(
                "CSPM_WORKER_LEASE_SECS",
                "is much longer than the queue's orphan time (heartbeat × missed): re-delivered jobs would wait for the lease",
            );
        }
        env.finish(config)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(48).collect())
        .ok()
        .filter(|s: &String| !s.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_process_gets_a_unique_name() {
        let a = WorkerConfig::from_env(Env::from_map([("CSPM_WORKER_NAME", "w1")])).expect("loads");
        let b = WorkerConfig::from_env(Env::from_map([("CSPM_WORKER_NAME", "w1")])).expect("loads");
        assert!(a.name.starts_with("w1-"));
        assert_ne!(a.name, b.name);
    }

    #[test]
    fn bad_values_name_their_variables() {
        let err = WorkerConfig::from_env(Env::from_map([
            ("CSPM_WORKER_OUTPUT_DIR", "relative/dir"),
            ("CSPM_WORKER_CLOUD_CONCURRENCY", "many"),
            ("CLOUD_ENCRYPTION_KEY", "short"),
        ]))
        .expect_err("refused");
        let text = err.to_string();
        for key in ["CSPM_WORKER_OUTPUT_DIR", "CSPM_WORKER_CLOUD_CONCURRENCY", "CLOUD_ENCRYPTION_KEY"] {
            assert!(text.contains(key), "{key} missing: {text}");
        }
    }

    #[test]
    fn every_cspm_key_is_known_to_the_fleet() {
        for k in all_keys() {
            if k.name.starts_with("CSPM_") {
                assert!(cspm_shared::settings::FLEET_CSPM_KEYS.contains(&k.name), "{} missing", k.name);
            }
        }
    }
}
