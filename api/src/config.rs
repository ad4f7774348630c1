//! The API's configuration, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use cspm_shared::artifacts::{ARTIFACT_KEYS, ArtifactSettings};
use cspm_shared::auth::crypto::CredentialCipher;
use cspm_shared::compliance::{COMPLIANCE_KEYS, ComplianceSettings};
use cspm_shared::config::{ConfigError, Env, KeySpec};
use cspm_shared::domain::native::TargetPolicy;
use cspm_shared::domain::scan::Tool;
use cspm_shared::kev::{KEV_KEYS, KevSettings};
use cspm_shared::orchestrate::{RunLimits, SCAN_KEYS};
use cspm_shared::settings::{COMMON_KEYS, CommonSettings};
use secrecy::SecretString;

pub const API_KEYS: &[KeySpec] = &[
    KeySpec::optional("CSPM_API_BIND", "127.0.0.1:8080", "address the API listens on"),
    KeySpec::required("SECRET_KEY", "signing key of bearer tokens (at least 32 characters; keep it secret)"),
    KeySpec::required(
        "CLOUD_ENCRYPTION_KEY",
        "key that encrypts cloud credentials at rest: 32 bytes as 64 hex characters or base64",
    ),
    KeySpec::optional(
        "CSPM_SESSION_TTL_SECS",
        "86400",
        "fixed lifetime of a signed-in session and its bearer token (never extended; at most 86400)",
    ),
    KeySpec::optional("CSPM_MAX_SESSIONS_PER_USER", "5", "sessions a user may hold at once (the oldest ends first)"),
    KeySpec::optional("CSPM_LOGIN_MAX_FAILURES", "5", "failed sign-ins in a row that lock an account"),
    KeySpec::optional("CSPM_LOGIN_LOCKOUT_SECS", "900", "how long a locked account stays locked (it unlocks itself)"),
    KeySpec::optional(
        "CSPM_LOGIN_RATE_PER_MINUTE",
        "30",
        "sign-in attempts one client address may make per minute (all replicas together)",
    ),
    KeySpec::optional("DEFAULT_ADMIN_EMAIL", "admin@cspm.local", "email of the bootstrap administrator"),
    KeySpec::unset(
        "DEFAULT_ADMIN_PASSWORD",
        "password of the bootstrap administrator; if empty one is generated and printed once on first start",
    ),
    KeySpec::optional(
        "CSPM_AUTO_SCHEDULE_ON_ACCOUNT_ADD",
        "true",
        "give every new cloud account a daily incremental scan (02:00 UTC) and a weekly full scan (Sunday 03:00 UTC)",
    ),
    KeySpec::optional("CSPM_MAX_BODY_BYTES", "1048576", "largest accepted request body"),
    KeySpec::optional(
        "CSPM_WEB_SCANNER",
        "wapiti",
        "the tool of web-vulnerability scans when the request names none: wapiti or zap",
    ),
    KeySpec::unset(
        "CSPM_SCAN_PATH_ROOTS",
        "comma-separated directories under which filesystem and IaC scans may read (unset: such scans are refused); the workers check it again",
    ),
    KeySpec::optional("CSPM_REQUEST_TIMEOUT_SECS", "30", "time limit of one request"),
];

/// Every key the API reads, for `--help` and the docs.
pub fn all_keys() -> Vec<KeySpec> {
    COMMON_KEYS
        .iter()
        .chain(ARTIFACT_KEYS)
        .chain(SCAN_KEYS)
        .chain(KEV_KEYS)
        .chain(API_KEYS)
        .chain(COMPLIANCE_KEYS)
        .copied()
        .collect()
}

#[derive(Clone)]
pub struct ApiConfig {
    pub common: CommonSettings,
    pub bind: SocketAddr,
    pub secret_key: SecretString,
    pub cipher: CredentialCipher,
    /// Fixed lifetime of a session and of its token.
    pub session_ttl: Duration,
    pub max_sessions_per_user: u32,
    pub login_max_failures: u32,
    pub login_lockout: Duration,
    pub login_rate_per_minute: u32,
    pub admin_email: String,
    pub admin_password: Option<SecretString>,
    pub target_policy: TargetPolicy,
    pub limits: RunLimits,
    /// Whether a new cloud account gets its two default schedules.
    pub auto_schedule: bool,
    pub max_body_bytes: usize,
    pub web_scanner: Tool,
    pub scan_path_roots: Vec<std::path::PathBuf>,
    pub request_timeout: Duration,
    pub artifacts: ArtifactSettings,
    /// The KEV catalog: import limits and the source the status shows.
    pub kev: KevSettings,
    /// The compliance engine (thresholds, the catalog upload's limit).
    pub compliance: ComplianceSettings,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig").field("bind", &self.bind).field("common", &self.common).finish_non_exhaustive()
    }
}

impl ApiConfig {
    pub fn from_env(env: Env) -> Result<Self, ConfigError> {
        let common = CommonSettings::load(&env);
        let bind = env.parse("CSPM_API_BIND", SocketAddr::from(([127, 0, 0, 1], 8080)));
        let secret_key = env.required_secret("SECRET_KEY", 32);
        let cipher = match env.raw("CLOUD_ENCRYPTION_KEY") {
            None => {
                env.refuse("CLOUD_ENCRYPTION_KEY", "required but not set");
                None
            }
            Some(k) => match CredentialCipher::from_key_text(&SecretString::from(k.to_string())) {
                Ok(c) => Some(c),
                Err(e) => {
                    env.refuse("CLOUD_ENCRYPTION_KEY", &e.to_string());
                    None
                }
            },
        };
        let admin_email = env.string("DEFAULT_ADMIN_EMAIL", "admin@cspm.local");
        if !admin_email.contains('@') {
            env.refuse("DEFAULT_ADMIN_EMAIL", "is not an email address");
        }
        let admin_password = env.optional_secret("DEFAULT_ADMIN_PASSWORD");
        if let Some(p) = &admin_password
            && let Err(why) = cspm_shared::auth::password::check_policy(secrecy::ExposeSecret::expose_secret(p))
        {
            env.refuse("DEFAULT_ADMIN_PASSWORD", &why);
        }
        let config = Self {
            bind,
            secret_key,
            session_ttl: env.seconds("CSPM_SESSION_TTL_SECS", 86_400, 60, 86_400),
            max_sessions_per_user: env.bounded("CSPM_MAX_SESSIONS_PER_USER", 5, 1, 100),
            login_max_failures: env.bounded("CSPM_LOGIN_MAX_FAILURES", 5, 1, 100),
            login_lockout: env.seconds("CSPM_LOGIN_LOCKOUT_SECS", 900, 1, 86_400),
            login_rate_per_minute: env.bounded("CSPM_LOGIN_RATE_PER_MINUTE", 30, 1, 100_000),
            admin_email,
            admin_password,
            target_policy: TargetPolicy::load(&env),
            limits: RunLimits::load(&env),
            auto_schedule: env.flag("CSPM_AUTO_SCHEDULE_ON_ACCOUNT_ADD", true),
            max_body_bytes: env.bounded("CSPM_MAX_BODY_BYTES", 1_048_576, 1024, 64 * 1_048_576),
            web_scanner: match env.string("CSPM_WEB_SCANNER", "wapiti").as_str() {
                "wapiti" => Tool::Wapiti,
                "zap" => Tool::Zap,
                other => {
                    env.refuse("CSPM_WEB_SCANNER", &format!("`{other}` is not a web scanner (use wapiti or zap)"));
                    Tool::Wapiti
                }
            },
            scan_path_roots: env.dir_list("CSPM_SCAN_PATH_ROOTS"),
            request_timeout: env.seconds("CSPM_REQUEST_TIMEOUT_SECS", 30, 1, 3600),
            artifacts: ArtifactSettings::load(&env),
            kev: KevSettings::load(&env),
            compliance: ComplianceSettings::load(&env),
            common,
            cipher: cipher.unwrap_or_else(|| {
                // Only reached when a problem was recorded; `finish` refuses the configuration.
                CredentialCipher::from_key_text(&SecretString::from("00".repeat(32))).unwrap_or_else(|_| unreachable!())
            }),
        };
        env.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, String)> {
        vec![("SECRET_KEY", "x".repeat(40)), ("CLOUD_ENCRYPTION_KEY", "ab".repeat(32))]
    }

    #[test]
    fn a_minimal_environment_loads_with_defaults() {
        let c = ApiConfig::from_env(Env::from_map(base())).expect("loads");
        assert_eq!(c.bind.port(), 8080);
        assert!(!c.target_policy.allow_loopback);
        assert_eq!(c.limits.max_attempts, 3);
    }

    #[test]
    fn bad_values_are_refused_naming_each_variable() {
        let mut env = base();
        env[0].1 = "short".into();
        env.push(("CSPM_API_BIND", "nonsense".into()));
        env.push(("CSPM_SUBJOB_MAX_ATTEMPS", "3".into()));
        env.push(("MONGODB_URI", "postgres://x".into()));
        let err = ApiConfig::from_env(Env::from_map(env)).expect_err("refused");
        let text = err.to_string();
        for key in ["SECRET_KEY", "CSPM_API_BIND", "CSPM_SUBJOB_MAX_ATTEMPS", "MONGODB_URI"] {
            assert!(text.contains(key), "{key} not named in: {text}");
        }
    }

    #[test]
    fn the_artifact_store_is_configured_like_everything_else() {
        let c = ApiConfig::from_env(Env::from_map(base())).expect("loads");
        assert!(matches!(c.artifacts, ArtifactSettings::Local { .. }));
        let mut env = base();
        env.push(("CSPM_ARTIFACT_STORE", "s3".into()));
        let err = ApiConfig::from_env(Env::from_map(env)).expect_err("refused");
        assert!(err.to_string().contains("CSPM_S3_BUCKET"), "{err}");
    }

    #[test]
    fn a_missing_encryption_key_is_refused() {
        let err = ApiConfig::from_env(Env::from_map([("SECRET_KEY", "x".repeat(40))])).expect_err("refused");
        assert!(err.to_string().contains("CLOUD_ENCRYPTION_KEY"));
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
