//! ScanRun and SubJob states, their transitions, and the roll-up rule.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a cloud scan was asked to be. All types run the complete check set; the type only sets the
/// default region footprint and the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScanType {
    Quick,
    Full,
    Comprehensive,
    Incremental,
}

impl ScanType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanType::Quick => "quick",
            ScanType::Full => "full",
            ScanType::Comprehensive => "comprehensive",
            ScanType::Incremental => "incremental",
        }
    }
}

impl FromStr for ScanType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quick" => Ok(ScanType::Quick),
            "full" => Ok(ScanType::Full),
            "comprehensive" => Ok(ScanType::Comprehensive),
            "incremental" => Ok(ScanType::Incremental),
            _ => Err(format!("unknown scan type `{s}` (expected quick, full, comprehensive or incremental)")),
        }
    }
}

/// The state of a ScanRun. `queued → running → completed | partial | failed | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Partial,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ACTIVE: [RunStatus; 2] = [RunStatus::Queued, RunStatus::Running];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" => Ok(RunStatus::Queued),
            "running" => Ok(RunStatus::Running),
            "completed" => Ok(RunStatus::Completed),
            "partial" => Ok(RunStatus::Partial),
            "failed" => Ok(RunStatus::Failed),
            "cancelled" => Ok(RunStatus::Cancelled),
            _ => {
                Err(format!("unknown status `{s}` (expected queued, running, completed, partial, failed or cancelled)"))
            }
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a SubJob.
///
/// ```text
/// queued ──claim──▶ running ──▶ completed | failed | timed_out | cancelled
///   │  ▲               │
///   │  └──hand back────┘   (graceful shutdown, or lease expired with attempts left)
///   └──cancel──▶ cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubJobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

impl SubJobStatus {
    pub const ALL: [SubJobStatus; 6] = [
        SubJobStatus::Queued,
        SubJobStatus::Running,
        SubJobStatus::Completed,
        SubJobStatus::Failed,
        SubJobStatus::TimedOut,
        SubJobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubJobStatus::Queued => "queued",
            SubJobStatus::Running => "running",
            SubJobStatus::Completed => "completed",
            SubJobStatus::Failed => "failed",
            SubJobStatus::TimedOut => "timed_out",
            SubJobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, SubJobStatus::Queued | SubJobStatus::Running)
    }

    /// Whether `self → next` is a legal transition. The stores only ever write legal ones, each
    /// guarded by a compare-and-set on the current state, so a transition happens at most once.
    pub fn can_become(self, next: SubJobStatus) -> bool {
        use SubJobStatus::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Queued)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, TimedOut)
                | (Running, Cancelled)
        )
    }
}

impl fmt::Display for SubJobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many SubJobs of a run are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubJobCounts {
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub cancelled: u64,
}

impl SubJobCounts {
    pub fn add(&mut self, status: SubJobStatus, n: u64) {
        match status {
            SubJobStatus::Queued => self.queued += n,
            SubJobStatus::Running => self.running += n,
            SubJobStatus::Completed => self.completed += n,
            SubJobStatus::Failed => self.failed += n,
            SubJobStatus::TimedOut => self.timed_out += n,
            SubJobStatus::Cancelled => self.cancelled += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.queued + self.running + self.terminal()
    }

    pub fn terminal(&self) -> u64 {
        self.completed + self.failed + self.timed_out + self.cancelled
    }

    /// Share of SubJobs that reached a terminal state, 0–100.
    pub fn progress_percent(&self) -> f64 {
        let total = self.total();
        if total == 0 { 0.0 } else { (self.terminal() as f64 * 1000.0 / total as f64).round() / 10.0 }
    }
}

/// The roll-up rule: the final state of a run whose SubJobs are all terminal, or `None` while some are not.
///
/// All succeeded → completed; some → partial; none → failed; a cancelled run is cancelled whatever its
/// SubJobs reached (the user asked for it to stop).
pub fn roll_up(counts: &SubJobCounts, cancel_requested: bool) -> Option<RunStatus> {
    if counts.queued + counts.running > 0 {
        return None;
    }
    if cancel_requested {
        return Some(RunStatus::Cancelled);
    }
    let total = counts.total();
    Some(if total > 0 && counts.completed == total {
        RunStatus::Completed
    } else if counts.completed > 0 {
        RunStatus::Partial
    } else if counts.cancelled == total && total > 0 {
        RunStatus::Cancelled
    } else {
        RunStatus::Failed
    })
}

/// The scanners the fleet knows. Which of them a given worker can run is decided at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    /// Cloud posture (Prowler `json-ocsf`).
    Prowler,
    /// Network discovery (Nmap XML).
    Nmap,
    /// Images, filesystems, IaC and Kubernetes (Trivy JSON): vulnerabilities, misconfigurations, secrets.
    Trivy,
    /// Web applications (ZAP traditional JSON).
    Zap,
    /// Web applications (Wapiti JSON).
    Wapiti,
    /// A no-op scanner that passes through every stage of the pipeline, for fleet checks and load tests.
    Canary,
}

impl Tool {
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::Prowler => "prowler",
            Tool::Nmap => "nmap",
            Tool::Trivy => "trivy",
            Tool::Zap => "zap",
            Tool::Wapiti => "wapiti",
            Tool::Canary => "canary",
        }
    }

    /// Whether the tool can be part of a cloud-account scan.
    pub fn scans_cloud(self) -> bool {
        matches!(self, Tool::Prowler | Tool::Canary)
    }
}

impl FromStr for Tool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prowler" => Ok(Tool::Prowler),
            "nmap" => Ok(Tool::Nmap),
            "trivy" => Ok(Tool::Trivy),
            "zap" => Ok(Tool::Zap),
            "wapiti" => Ok(Tool::Wapiti),
            "canary" => Ok(Tool::Canary),
            _ => Err(format!("unknown tool `{s}` (known: prowler, nmap, trivy, zap, wapiti, canary)")),
        }
    }
}

/// A tool as a scan names it: the tool, optionally with a label (`canary:b`) so that one tool can appear
/// more than once in a scan (several canary SubJobs per region in load tests).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToolId {
    pub tool: Tool,
    pub label: Option<String>,
}

impl ToolId {
    pub fn plain(tool: Tool) -> Self {
        Self { tool, label: None }
    }
}

impl fmt::Display for ToolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(l) => write!(f, "{}:{l}", self.tool.as_str()),
            None => f.write_str(self.tool.as_str()),
        }
    }
}

impl FromStr for ToolId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tool, label) = match s.split_once(':') {
            Some((t, l)) => (t, Some(l)),
            None => (s, None),
        };
        let tool: Tool = tool.parse()?;
        if let Some(l) = label {
            let valid = !l.is_empty()
                && l.len() <= 32
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(format!("`{s}`: a tool label is 1-32 letters, digits, '-' or '_'"));
            }
            if tool != Tool::Canary {
                return Err(format!("`{s}`: only the canary tool takes a label"));
            }
        }
        Ok(Self { tool, label: label.map(str::to_string) })
    }
}

impl Serialize for ToolId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ToolId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(q: u64, r: u64, c: u64, f: u64, t: u64, x: u64) -> SubJobCounts {
        SubJobCounts { queued: q, running: r, completed: c, failed: f, timed_out: t, cancelled: x }
    }

    #[test]
    fn a_run_with_unfinished_subjobs_does_not_roll_up() {
        assert_eq!(roll_up(&counts(1, 0, 5, 0, 0, 0), false), None);
        assert_eq!(roll_up(&counts(0, 1, 5, 0, 0, 0), true), None);
    }

    #[test]
    fn roll_up_follows_the_documented_rule() {
        assert_eq!(roll_up(&counts(0, 0, 6, 0, 0, 0), false), Some(RunStatus::Completed));
        assert_eq!(roll_up(&counts(0, 0, 5, 1, 0, 0), false), Some(RunStatus::Partial));
        assert_eq!(roll_up(&counts(0, 0, 5, 0, 1, 0), false), Some(RunStatus::Partial));
        assert_eq!(roll_up(&counts(0, 0, 0, 4, 2, 0), false), Some(RunStatus::Failed));
        assert_eq!(roll_up(&counts(0, 0, 3, 0, 0, 3), true), Some(RunStatus::Cancelled));
        assert_eq!(roll_up(&counts(0, 0, 0, 0, 0, 2), false), Some(RunStatus::Cancelled));
        assert_eq!(roll_up(&counts(0, 0, 0, 0, 0, 0), false), Some(RunStatus::Failed));
    }

    #[test]
    fn only_legal_transitions_are_allowed() {
        use SubJobStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Queued));
        assert!(!Completed.can_become(Running));
        assert!(!Queued.can_become(Completed));
        for s in SubJobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for n in SubJobStatus::ALL {
                assert!(!s.can_become(n), "{s} must be final");
            }
        }
    }

    #[test]
    fn progress_is_the_terminal_share() {
        assert_eq!(counts(1, 1, 2, 0, 0, 0).progress_percent(), 50.0);
        assert_eq!(SubJobCounts::default().progress_percent(), 0.0);
    }

    #[test]
    fn tool_ids_parse_with_optional_labels() {
        assert_eq!("canary:b".parse::<ToolId>().map(|t| t.to_string()), Ok("canary:b".to_string()));
        assert_eq!("prowler".parse::<ToolId>().map(|t| t.tool), Ok(Tool::Prowler));
        assert!("prowler:x".parse::<ToolId>().is_err());
        assert!("canary:".parse::<ToolId>().is_err());
        assert!("nessus".parse::<ToolId>().is_err());
    }
}

/// How a canary SubJob behaves: it scans nothing but goes through every stage of the pipeline, so that
/// operators can check a fleet and tests can drive it (slow jobs, failures, crashes, hangs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryOptions {
    /// How long the "scan" takes.
    #[serde(default)]
    pub duration_ms: u64,
    /// What goes wrong, if anything.
    #[serde(default)]
    pub failure: CanaryFailure,
    /// Limit the failure to these regions (empty: every SubJob of the run fails that way).
    #[serde(default)]
    pub failure_regions: Vec<String>,
    /// How many synthetic findings (severity informational, stable identities) each SubJob reports.
    #[serde(default)]
    pub findings: u32,
    /// The report claims to have examined nothing (with no findings, the zero-findings guard holds).
    #[serde(default)]
    pub unverified: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CanaryFailure {
    #[default]
    None,
    /// The tool reports an error: the SubJob fails with a message.
    Error,
    /// The worker process dies (abort) in the middle of the SubJob, as an OOM kill would.
    Crash,
    /// The tool never finishes: the SubJob ends `timed_out`.
    Hang,
    /// The tool writes a report cut off half-way: the SubJob fails naming the file and the position, and
    /// stores none of the findings before the cut.
    Malformed,
}

impl CanaryOptions {
    pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;
    pub const MAX_FINDINGS: u32 = 10_000;

    pub fn validate(&self) -> Result<(), String> {
        if self.duration_ms > Self::MAX_DURATION_MS {
            return Err(format!("canary.duration_ms must be at most {}", Self::MAX_DURATION_MS));
        }
        if self.findings > Self::MAX_FINDINGS {
            return Err(format!("canary.findings must be at most {}", Self::MAX_FINDINGS));
        }
        Ok(())
    }

    /// The failure that applies to a SubJob in `region`.
    pub fn failure_for(&self, region: &str) -> CanaryFailure {
        if self.failure_regions.is_empty() || self.failure_regions.iter().any(|r| r == region) {
            self.failure
        } else {
            CanaryFailure::None
        }
    }
}
