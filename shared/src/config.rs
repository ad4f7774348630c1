//! Typed configuration from the environment, loaded once at start-up.
//!
//! Each binary declares the keys it reads ([`KeySpec`]), reads them through an [`Env`] built from a map
//! (so tests pass their own map), and gets every problem at once: a missing required key, a value that
//! does not parse, and any `CSPM_*` key that no binary knows (a typo would otherwise be silently ignored).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::SecretString;

/// One configuration key, for `--help`, the docs and unknown-key detection.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    /// The default as text, or `None` when the key is required (or optional without a default).
    pub default: Option<&'static str>,
    pub required: bool,
    pub help: &'static str,
}

impl KeySpec {
    pub const fn required(name: &'static str, help: &'static str) -> Self {
        Self { name, default: None, required: true, help }
    }
    pub const fn optional(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self { name, default: Some(default), required: false, help }
    }
    pub const fn unset(name: &'static str, help: &'static str) -> Self {
        Self { name, default: None, required: false, help }
    }
}

/// Renders the keys of a binary as the environment section of its `--help`.
pub fn render_help(keys: &[KeySpec]) -> String {
    let mut out = String::from("Environment (read once at start-up):\n");
    for k in keys {
        let default = match (k.required, k.default) {
            (true, _) => " [required]".to_string(),
            (false, Some("")) | (false, None) => String::new(),
            (false, Some(d)) => format!(" [default: {d}]"),
        };
        out.push_str(&format!("  {}{}\n      {}\n", k.name, default, k.help));
    }
    out
}

/// Every problem found in the configuration, reported together so that one restart fixes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A view of the environment that records problems instead of failing on the first one.
pub struct Env {
    vars: BTreeMap<String, String>,
    problems: Mutex<Vec<String>>,
}

impl Env {
    pub fn from_map<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self { vars: vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), problems: Mutex::new(Vec::new()) }
    }

    /// The process environment (non-UTF-8 values are reported as problems, not dropped).
    pub fn from_process() -> Self {
        let mut vars = HashMap::new();
        let mut problems = Vec::new();
        for (k, v) in std::env::vars_os() {
            match (k.into_string(), v.into_string()) {
                (Ok(k), Ok(v)) => {
                    vars.insert(k, v);
                }
                (Ok(k), Err(_)) => problems.push(format!("{k}: value is not valid UTF-8")),
                _ => {}
            }
        }
        let env = Self::from_map(vars);
        if let Ok(mut p) = env.problems.lock() {
            p.extend(problems);
        }
        env
    }

    fn problem(&self, msg: String) {
        if let Ok(mut p) = self.problems.lock() {
            p.push(msg);
        }
    }

    /// The raw value, with empty strings treated as unset.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    pub fn required_string(&self, key: &str) -> String {
        match self.raw(key) {
            Some(v) => v.trim().to_string(),
            None => {
                self.problem(format!("{key}: required but not set"));
                String::new()
            }
        }
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.raw(key).map(|v| v.trim().to_string()).unwrap_or_else(|| default.to_string())
    }

    pub fn optional_string(&self, key: &str) -> Option<String> {
        self.raw(key).map(|v| v.trim().to_string())
    }

    pub fn required_secret(&self, key: &str, min_len: usize) -> SecretString {
        match self.raw(key) {
            Some(v) if v.len() >= min_len => SecretString::from(v.to_string()),
            Some(_) => {
                self.problem(format!("{key}: must be at least {min_len} characters long"));
                SecretString::from(String::new())
            }
            None => {
                self.problem(format!("{key}: required but not set"));
                SecretString::from(String::new())
            }
        }
    }

    pub fn optional_secret(&self, key: &str) -> Option<SecretString> {
        self.raw(key).map(|v| SecretString::from(v.to_string()))
    }

    /// Any `FromStr` value with a default; a value that does not parse is a problem naming the key.
    pub fn parse<T>(&self, key: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(key) {
            None => default,
            Some(v) => match v.trim().parse::<T>() {
                Ok(t) => t,
                Err(e) => {
                    self.problem(format!("{key}: `{v}` is not valid: {e}"));
                    default
                }
            },
        }
    }

    /// A number that must lie in `min..=max`.
    pub fn bounded<T>(&self, key: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let v = self.parse(key, default);
        if v < min || v > max {
            self.problem(format!("{key}: {v} is out of range ({min}..={max})"));
            default
        } else {
            v
        }
    }

    pub fn seconds(&self, key: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.bounded(key, default, min, max))
    }

    pub fn millis(&self, key: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.bounded(key, default, min, max))
    }

    pub fn flag(&self, key: &str, default: bool) -> bool {
        match self.raw(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    self.problem(format!("{key}: `{v}` is not a boolean (use true or false)"));
                    default
                }
            },
        }
    }

    /// A comma-separated list of existing absolute directories, canonicalised (symbolic links resolved,
    /// so that a later prefix check cannot be fooled by them).
    pub fn dir_list(&self, key: &str) -> Vec<std::path::PathBuf> {
        let Some(raw) = self.raw(key) else { return Vec::new() };
        let mut out = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let path = std::path::Path::new(part);
            if !path.is_absolute() {
                self.problem(format!("{key}: `{part}` is not an absolute path"));
                continue;
            }
            match std::fs::canonicalize(path) {
                Ok(p) if p.is_dir() => out.push(p),
                Ok(_) => self.problem(format!("{key}: `{part}` is not a directory")),
                Err(e) => self.problem(format!("{key}: `{part}` cannot be read: {e}")),
            }
        }
        out
    }

    /// Records a problem with a key that was read (a value valid on its own but wrong in context).
    pub fn refuse(&self, key: &str, why: &str) {
        self.problem(format!("{key}: {why}"));
    }

    /// Refuses `CSPM_*` keys that no binary of the fleet reads: almost always a typo.
    pub fn refuse_unknown_prefixed(&self, prefix: &str, known: &[&str]) {
        for key in self.vars.keys() {
            if key.starts_with(prefix) && !known.contains(&key.as_str()) {
                self.problem(format!("{key}: unknown setting (is it misspelt? see --help for the list)"));
            }
        }
    }

    /// Ends loading: the value if there was no problem, otherwise every problem at once.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        let problems = self.problems.into_inner().unwrap_or_default();
        if problems.is_empty() { Ok(value) } else { Err(ConfigError { problems }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once_and_names_its_key() {
        let env = Env::from_map([("CSPM_A", "notanumber"), ("CSPM_TYPO", "1"), ("FLAG", "maybe")]);
        let _: u32 = env.parse("CSPM_A", 3);
        let _ = env.required_string("SECRET_KEY");
        let _ = env.flag("FLAG", false);
        env.refuse_unknown_prefixed("CSPM_", &["CSPM_A"]);
        let err = env.finish(()).expect_err("has problems");
        assert_eq!(err.problems.len(), 4, "{err}");
        let text = err.to_string();
        for key in ["CSPM_A", "SECRET_KEY", "FLAG", "CSPM_TYPO"] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn defaults_apply_to_unset_and_empty_values() {
        let env = Env::from_map([("EMPTY", "  ")]);
        assert_eq!(env.parse::<u32>("EMPTY", 7), 7);
        assert_eq!(env.string("MISSING", "x"), "x");
        assert!(env.finish(()).is_ok());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let env = Env::from_map([("N", "0")]);
        let _ = env.bounded::<u32>("N", 5, 1, 10);
        assert!(env.finish(()).is_err());
    }
}
