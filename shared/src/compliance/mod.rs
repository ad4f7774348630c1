//! The compliance engine: the operator's SCF catalog (imported at run time: nothing of it is in this
//! repository), the mapping of findings to SCF controls (crosswalks, keywords, domains), each team's
//! control states with manual overrides, and per-framework scores.
//!
//! - [`catalog`]: parsing and validating the uploaded files into one catalog version;
//! - [`normalize`]: the spellings of frameworks and requirement ids, joined;
//! - [`keywords`]: terms computed from the catalog's text, and the keyword matcher;
//! - [`mapping`]: a finding → its controls, with the path and an explanation;
//! - [`state`]: control states, evidence and scores (pure functions);
//! - [`store`]: the documents in `cspm_compliance`;
//! - [`sync`]: one sync per team at a time, and the scheduler's entry point [`sync::sync_due_teams`].

pub mod catalog;
pub mod keywords;
pub mod mapping;
pub mod normalize;
pub mod state;
pub mod store;
pub mod sync;

use std::time::Duration;

use crate::config::{Env, KeySpec};

/// The compliance engine's settings (the API reads them; the scheduler passes them to
/// [`sync::sync_due_teams`]).
pub const COMPLIANCE_KEYS: &[KeySpec] = &[
    KeySpec::optional(
        "CSPM_COMPLIANCE_SYNC_HOURS",
        "4",
        "a team's controls are synced from its findings at least this often (and after each completed scan run)",
    ),
    KeySpec::optional(
        "CSPM_COMPLIANCE_DEFAULT_THRESHOLD",
        "70",
        "score (percent) a framework must reach when the team has set no threshold of its own",
    ),
    KeySpec::optional(
        "CSPM_SCF_IMPORT_MAX_BYTES",
        "67108864",
        "largest SCF catalog upload (all its files together) that POST /api/common-controls/import-scf accepts",
    ),
];

#[derive(Debug, Clone)]
pub struct ComplianceSettings {
    pub sync_interval: Duration,
    pub default_threshold: f64,
    pub import_max_bytes: usize,
}

impl Default for ComplianceSettings {
    fn default() -> Self {
        Self { sync_interval: Duration::from_secs(4 * 3600), default_threshold: 70.0, import_max_bytes: 64 << 20 }
    }
}

impl ComplianceSettings {
    /// Reads [`COMPLIANCE_KEYS`]; every problem is recorded in `env`, naming its key.
    pub fn load(env: &Env) -> Self {
        let hours: u64 = env.bounded("CSPM_COMPLIANCE_SYNC_HOURS", 4, 1, 24 * 7);
        let threshold: f64 = env.bounded("CSPM_COMPLIANCE_DEFAULT_THRESHOLD", 70.0, 0.0, 100.0);
        Self {
            sync_interval: Duration::from_secs(hours * 3600),
            default_threshold: threshold,
            import_max_bytes: env.bounded("CSPM_SCF_IMPORT_MAX_BYTES", 64 << 20, 1 << 20, 512 << 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_load_with_defaults_and_refuse_bad_values() {
        let env = Env::from_map(Vec::<(String, String)>::new());
        let s = ComplianceSettings::load(&env);
        assert_eq!(s.sync_interval, Duration::from_secs(4 * 3600));
        assert_eq!(s.default_threshold, 70.0);
        assert!(env.finish(()).is_ok());
        let env = Env::from_map([("CSPM_COMPLIANCE_SYNC_HOURS", "0"), ("CSPM_COMPLIANCE_DEFAULT_THRESHOLD", "101")]);
        let _ = ComplianceSettings::load(&env);
        let err = env.finish(()).expect_err("refused").to_string();
        assert!(
            err.contains("CSPM_COMPLIANCE_SYNC_HOURS") && err.contains("CSPM_COMPLIANCE_DEFAULT_THRESHOLD"),
            "{err}"
        );
        for k in COMPLIANCE_KEYS {
            assert!(crate::settings::FLEET_CSPM_KEYS.contains(&k.name), "{} missing from FLEET_CSPM_KEYS", k.name);
        }
    }
}
