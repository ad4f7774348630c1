//! Settings every binary of the fleet reads (database, queue, logging), and the fleet-wide list of
//! `CSPM_*` keys used to refuse misspelt ones.

use std::time::Duration;

use crate::config::{Env, KeySpec};
use crate::db::Mongo;
use crate::error::StoreResult;
use crate::queue::{QueueSettings, Queues};
use crate::telemetry::LogFormat;

pub const COMMON_KEYS: &[KeySpec] = &[
    KeySpec::optional(
        "MONGODB_URI",
        "mongodb://127.0.0.1:27017",
        "MongoDB connection string (mongodb://; SRV URIs are not supported)",
    ),
    KeySpec::optional(
        "CSPM_DB_PREFIX",
        "",
        "prefix of every database name (lets several fleets or tests share one server)",
    ),
    KeySpec::optional("REDIS_URL", "redis://127.0.0.1:6379", "Redis connection URL (the job queue)"),
    KeySpec::optional("CSPM_QUEUE_NAMESPACE", "", "prefix of every queue name in Redis"),
    KeySpec::optional(
        "CSPM_QUEUE_HIGH_WATER_MARK",
        "2000",
        "messages allowed to wait in Redis per queue; further SubJobs wait in MongoDB (must stay well under 8000)",
    ),
    KeySpec::optional("CSPM_QUEUE_HEARTBEAT_SECS", "5", "worker heartbeat interval of the queue"),
    KeySpec::optional(
        "CSPM_QUEUE_MISSED_HEARTBEATS",
        "2",
        "missed heartbeats after which a worker's queue messages go to another worker",
    ),
    KeySpec::optional(
        "CSPM_DEPENDENCY_TIMEOUT_MS",
        "2000",
        "how long a MongoDB or Redis call may wait for the server before failing (then HTTP 503)",
    ),
    KeySpec::optional("CSPM_LOG_FORMAT", "json", "log format: json or text"),
    KeySpec::optional("RUST_LOG", "info", "log filter (e.g. info,cspm_worker=debug)"),
];

/// Every `CSPM_*` key any binary of the fleet reads. A key outside this list is refused at start-up.
pub const FLEET_CSPM_KEYS: &[&str] = &[
    "CSPM_DB_PREFIX",
    "CSPM_QUEUE_NAMESPACE",
    "CSPM_QUEUE_HIGH_WATER_MARK",
    "CSPM_QUEUE_HEARTBEAT_SECS",
    "CSPM_QUEUE_MISSED_HEARTBEATS",
    "CSPM_DEPENDENCY_TIMEOUT_MS",
    "CSPM_LOG_FORMAT",
    // artifact storage (every binary: `artifacts::ARTIFACT_KEYS`)
    "CSPM_ARTIFACT_STORE",
    "CSPM_ARTIFACT_DIR",
    "CSPM_S3_BUCKET",
    "CSPM_S3_ENDPOINT",
    "CSPM_S3_REGION",
    "CSPM_S3_ACCESS_KEY_ID",
    "CSPM_S3_SECRET_ACCESS_KEY",
    "CSPM_S3_PATH_STYLE",
    "CSPM_S3_ALLOW_HTTP",
    // the KEV catalog (api, worker, scheduler: `kev::KEV_KEYS`)
    "CSPM_KEV_URL",
    "CSPM_KEV_REFRESH_HOURS",
    "CSPM_KEV_RELOAD_SECS",
    "CSPM_KEV_MAX_BYTES",
    "CSPM_KEV_FETCH_TIMEOUT_SECS",
    // scans started by the api and the scheduler (`orchestrate::SCAN_KEYS`)
    "CSPM_ALLOW_LOOPBACK_SCAN_TARGETS",
    "CSPM_MAX_SUBJOBS_PER_RUN",
    "CSPM_SUBJOB_MAX_ATTEMPTS",
    "CSPM_CLOUD_SUBJOB_TIMEOUT_SECS",
    "CSPM_NATIVE_SUBJOB_TIMEOUT_SECS",
    // api
    "CSPM_API_BIND",
    "CSPM_AUTO_SCHEDULE_ON_ACCOUNT_ADD",
    "CSPM_SESSION_TTL_SECS",
    "CSPM_MAX_SESSIONS_PER_USER",
    "CSPM_LOGIN_MAX_FAILURES",
    "CSPM_LOGIN_LOCKOUT_SECS",
    "CSPM_LOGIN_RATE_PER_MINUTE",
    "CSPM_MAX_BODY_BYTES",
    "CSPM_REQUEST_TIMEOUT_SECS",
    "CSPM_WEB_SCANNER",
    // worker
    "CSPM_WORKER_BIND",
    "CSPM_WORKER_NAME",
    "CSPM_WORKER_CLOUD_CONCURRENCY",
    "CSPM_WORKER_NATIVE_CONCURRENCY",
    "CSPM_WORKER_OUTPUT_DIR",
    "CSPM_WORKER_LEASE_SECS",
    "CSPM_WORKER_POLL_MS",
    "CSPM_WORKER_SHUTDOWN_GRACE_SECS",
    "CSPM_WORKER_FEED_INTERVAL_MS",
    "CSPM_WORKER_MAX_OUTPUT_BYTES",
    "CSPM_SCANNER_RUNNER",
    "CSPM_DOCKER_IMAGE_PROWLER",
    "CSPM_DOCKER_IMAGE_TRIVY",
    "CSPM_DOCKER_IMAGE_NMAP",
    "CSPM_DOCKER_IMAGE_WAPITI",
    "CSPM_DOCKER_IMAGE_ZAP",
    "CSPM_DOCKER_ALLOWED_IMAGES",
    "CSPM_DOCKER_PULL",
    "CSPM_DOCKER_NETWORK",
    "CSPM_DOCKER_CPUS",
    "CSPM_DOCKER_MEMORY_MB",
    "CSPM_DOCKER_PIDS_LIMIT",
    "CSPM_DOCKER_USER",
    "CSPM_DOCKER_STOP_GRACE_SECS",
    "CSPM_DOCKER_READ_ONLY_ROOTFS",
    "CSPM_DOCKER_LOCAL_IMAGES",
    "CSPM_DOCKER_LOCAL_IMAGE_MAX_MB",
    "CSPM_NMAP_PATH",
    "CSPM_PROWLER_PATH",
    "CSPM_TRIVY_PATH",
    "CSPM_TRIVY_CACHE_DIR",
    "CSPM_TRIVY_OFFLINE",
    "CSPM_WAPITI_PATH",
    "CSPM_ZAP_PATH",
    "CSPM_SCAN_PATH_ROOTS",
    "CSPM_KEEP_FAILED_OUTPUT",
    // compliance engine (api and scheduler: `compliance::COMPLIANCE_KEYS`)
    "CSPM_COMPLIANCE_SYNC_HOURS",
    "CSPM_COMPLIANCE_DEFAULT_THRESHOLD",
    "CSPM_SCF_IMPORT_MAX_BYTES",
    // scheduler
    "CSPM_SCHEDULER_BIND",
    "CSPM_REAPER_INTERVAL_SECS",
    "CSPM_FEED_INTERVAL_MS",
    "CSPM_LOST_MESSAGE_AFTER_SECS",
    "CSPM_ROLLUP_SWEEP_SECS",
    "CSPM_SCHEDULE_TICK_SECS",
    "CSPM_SCHEDULE_CATCH_UP_HOURS",
    "CSPM_SCHEDULE_FIRE_LEASE_SECS",
    "CSPM_QUEUE_HOUSEKEEPING_SECS",
    "CSPM_QUEUE_KEEP_DEAD",
    "CSPM_RETENTION_SCAN_DAYS",
    "CSPM_RETENTION_FINDINGS_DAYS",
    "CSPM_RETENTION_AUDIT_DAYS",
    "CSPM_RETENTION_INTERVAL_HOURS",
    "CSPM_RETENTION_BATCH",
    "CSPM_STUCK_RUN_HOURS",
];

/// The settings shared by every binary.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub mongodb_uri: String,
    pub db_prefix: String,
    pub queue: QueueSettings,
    pub dependency_timeout: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl CommonSettings {
    pub fn load(env: &Env) -> Self {
        let mongodb_uri = env.string("MONGODB_URI", "mongodb://127.0.0.1:27017");
        if !mongodb_uri.starts_with("mongodb://") {
            env.refuse("MONGODB_URI", "must start with mongodb:// (SRV URIs are not supported)");
        }
        let redis_url = env.string("REDIS_URL", "redis://127.0.0.1:6379");
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            env.refuse("REDIS_URL", "must start with redis:// or rediss://");
        }
        let db_prefix = env.string("CSPM_DB_PREFIX", "");
        if !db_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') || db_prefix.len() > 24 {
            env.refuse("CSPM_DB_PREFIX", "at most 24 letters, digits, '_' or '-'");
        }
        let dependency_timeout = env.millis("CSPM_DEPENDENCY_TIMEOUT_MS", 2000, 100, 60_000);
        let queue = QueueSettings {
            redis_url,
            namespace: env.string("CSPM_QUEUE_NAMESPACE", ""),
            response_timeout: dependency_timeout.max(Duration::from_secs(2)),
            heartbeat: env.seconds("CSPM_QUEUE_HEARTBEAT_SECS", 5, 1, 300),
            missed_heartbeats: env.bounded("CSPM_QUEUE_MISSED_HEARTBEATS", 2, 1, 100),
            high_water_mark: env.bounded("CSPM_QUEUE_HIGH_WATER_MARK", 2000, 1, 6000),
        };
        env.refuse_unknown_prefixed("CSPM_", FLEET_CSPM_KEYS);
        Self {
            mongodb_uri,
            db_prefix,
            queue,
            dependency_timeout,
            log_format: env.parse("CSPM_LOG_FORMAT", LogFormat::Json),
            log_filter: env.string("RUST_LOG", "info"),
        }
    }

    pub async fn mongo(&self, app: &str) -> StoreResult<Mongo> {
        Mongo::connect(&self.mongodb_uri, &self.db_prefix, app, self.dependency_timeout).await
    }

    pub fn queues(&self) -> StoreResult<Queues> {
        Queues::new(self.queue.clone())
    }
}
