//! The scheduler's configuration, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use cspm_shared::artifacts::{ARTIFACT_KEYS, ArtifactSettings};
use cspm_shared::compliance::{COMPLIANCE_KEYS, ComplianceSettings};
use cspm_shared::config::{ConfigError, Env, KeySpec};
use cspm_shared::domain::native::TargetPolicy;
use cspm_shared::kev::{KEV_KEYS, KevSettings};
use cspm_shared::orchestrate::{RunLimits, SCAN_KEYS};
use cspm_shared::retention::{RETENTION_KEYS, RetentionSettings};
use cspm_shared::scheduling::{SCHEDULE_KEYS, ScheduleSettings};
use cspm_shared::settings::{COMMON_KEYS, CommonSettings};

pub const SCHEDULER_KEYS: &[KeySpec] = &[
    KeySpec::optional(
        "CSPM_SCHEDULER_BIND",
        "127.0.0.1:9092",
        "address of the scheduler's /healthz, /readyz and /metrics",
    ),
    KeySpec::optional(
        "CSPM_REAPER_INTERVAL_SECS",
        "5",
        "how often sub-jobs whose worker stopped renewing its lease are re-queued or failed",
    ),
    KeySpec::optional("CSPM_FEED_INTERVAL_MS", "1000", "how often waiting sub-jobs are fed from MongoDB into Redis"),
    KeySpec::optional(
        "CSPM_LOST_MESSAGE_AFTER_SECS",
        "120",
        "a queued sub-job whose queue message is gone for this long is dispatched again",
    ),
    KeySpec::optional(
        "CSPM_QUEUE_HOUSEKEEPING_SECS",
        "60",
        "how often finished queue messages are removed from Redis and the dead-letter set trimmed",
    ),
    KeySpec::optional(
        "CSPM_QUEUE_KEEP_DEAD",
        "1000",
        "dead-lettered queue messages kept for inspection per queue (every SubJob's outcome is in MongoDB)",
    ),
    KeySpec::optional(
        "CSPM_ROLLUP_SWEEP_SECS",
        "30",
        "how often active runs are checked for a roll-up that did not happen (a worker died at the end)",
    ),
];

pub fn all_keys() -> Vec<KeySpec> {
    COMMON_KEYS
        .iter()
        .chain(ARTIFACT_KEYS)
        .chain(SCAN_KEYS)
        .chain(KEV_KEYS)
        .chain(COMPLIANCE_KEYS)
        .chain(SCHEDULE_KEYS)
        .chain(RETENTION_KEYS)
        .chain(SCHEDULER_KEYS)
        .copied()
        .collect()
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub common: CommonSettings,
    pub bind: SocketAddr,
    pub reaper_interval: Duration,
    pub feed_interval: Duration,
    pub lost_message_after: Duration,
    pub rollup_sweep: Duration,
    /// The artifact store (for retention of runs' raw artifacts).
    pub artifacts: ArtifactSettings,
    /// The rules of the scans schedules start (the API's own).
    pub limits: RunLimits,
    pub target_policy: TargetPolicy,
    pub schedules: ScheduleSettings,
    pub retention: RetentionSettings,
    /// The scheduled refresh of the KEV catalog.
    pub kev: KevSettings,
    /// The compliance engine's syncs (every `CSPM_COMPLIANCE_SYNC_HOURS`, and after completed runs).
    pub compliance: ComplianceSettings,
    pub housekeeping: Duration,
    pub keep_dead: u64,
    /// This replica's name (owner of the fires it handles).
    pub name: String,
}

impl SchedulerConfig {
    pub fn from_env(env: Env) -> Result<Self, ConfigError> {
        let config = Self {
            common: CommonSettings::load(&env),
            bind: env.parse("CSPM_SCHEDULER_BIND", SocketAddr::from(([127, 0, 0, 1], 9092))),
            reaper_interval: env.seconds("CSPM_REAPER_INTERVAL_SECS", 5, 1, 3600),
            feed_interval: env.millis("CSPM_FEED_INTERVAL_MS", 1000, 50, 600_000),
            lost_message_after: env.seconds("CSPM_LOST_MESSAGE_AFTER_SECS", 120, 10, 86_400),
            rollup_sweep: env.seconds("CSPM_ROLLUP_SWEEP_SECS", 30, 1, 3600),
            artifacts: ArtifactSettings::load(&env),
            limits: RunLimits::load(&env),
            target_policy: TargetPolicy::load(&env),
            schedules: ScheduleSettings::load(&env),
            retention: RetentionSettings::load(&env),
            kev: KevSettings::load(&env),
            compliance: ComplianceSettings::load(&env),
            housekeeping: env.seconds("CSPM_QUEUE_HOUSEKEEPING_SECS", 60, 1, 86_400),
            keep_dead: env.bounded("CSPM_QUEUE_KEEP_DEAD", 1000, 0, 1_000_000),
            name: format!("scheduler-{}-{}", std::process::id(), ulid::Ulid::generate()),
        };
        env.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_bad_values_are_named() {
        assert!(SchedulerConfig::from_env(Env::from_map(Vec::<(String, String)>::new())).is_ok());
        let err = SchedulerConfig::from_env(Env::from_map([("CSPM_REAPER_INTERVAL_SECS", "0")])).expect_err("refused");
        assert!(err.to_string().contains("CSPM_REAPER_INTERVAL_SECS"));
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
