//! Finding severities and per-severity counts.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Severities, in the OCSF order (`severity_id` 1–5).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The OCSF `severity_id`.
    pub fn ocsf_id(self) -> u8 {
        match self {
            Severity::Informational => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Compared without allocating: every finding of every report is read through here.
        const NAMES: [(&str, Severity); 6] = [
            ("informational", Severity::Informational),
            ("info", Severity::Informational),
            ("low", Severity::Low),
            ("medium", Severity::Medium),
            ("high", Severity::High),
            ("critical", Severity::Critical),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, severity)| *severity)
            .ok_or_else(|| format!("unknown severity `{s}`"))
    }
}

/// Findings counted by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SeverityCounts {
    #[serde(default)]
    pub critical: i64,
    #[serde(default)]
    pub high: i64,
    #[serde(default)]
    pub medium: i64,
    #[serde(default)]
    pub low: i64,
    #[serde(default)]
    pub informational: i64,
}

impl SeverityCounts {
    pub fn add(&mut self, s: Severity, n: i64) {
        match s {
            Severity::Critical => self.critical += n,
            Severity::High => self.high += n,
            Severity::Medium => self.medium += n,
            Severity::Low => self.low += n,
            Severity::Informational => self.informational += n,
        }
    }

    pub fn merge(&mut self, other: &SeverityCounts) {
        self.critical += other.critical;
        self.high += other.high;
        self.medium += other.medium;
        self.low += other.low;
        self.informational += other.informational;
    }

    pub fn total(&self) -> i64 {
        self.critical + self.high + self.medium + self.low + self.informational
    }
}
