//! A finding as a tool adapter reports it: the one normalised shape every parser produces, whatever the
//! scanner. The store places it in its scope (team, account or target, region, tool) and gives it its
//! identity; OCSF rendering (`crate::ocsf::event`) turns it into a Detection, Vulnerability or
//! Compliance Finding.

use std::collections::BTreeMap;

use bson::Document;
use serde::{Deserialize, Serialize};

use crate::domain::severity::Severity;

/// Which OCSF finding class a finding is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingClass {
    /// Posture checks, exposures (open ports), secrets: OCSF Detection Finding (2004).
    #[default]
    Detection,
    /// CVEs in packages, web vulnerabilities (CWE-classed): OCSF Vulnerability Finding (2002).
    Vulnerability,
    /// The result of a control check against a named standard: OCSF Compliance Finding (2003).
    Compliance,
}

impl FindingClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingClass::Detection => "detection",
            FindingClass::Vulnerability => "vulnerability",
            FindingClass::Compliance => "compliance",
        }
    }

    pub fn ocsf_class_uid(self) -> u32 {
        match self {
            FindingClass::Vulnerability => 2002,
            FindingClass::Compliance => 2003,
            FindingClass::Detection => 2004,
        }
    }

    pub fn ocsf_class_name(self) -> &'static str {
        match self {
            FindingClass::Vulnerability => "Vulnerability Finding",
            FindingClass::Compliance => "Compliance Finding",
            FindingClass::Detection => "Detection Finding",
        }
    }
}

/// The tool's verdict on what it examined. Tools that only report problems (Trivy vulnerabilities, ZAP
/// alerts, open ports) always say `Fail`; posture checkers also report what passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    #[default]
    Fail,
    Pass,
    /// The check cannot be decided automatically (Prowler `MANUAL`).
    Manual,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Fail => "fail",
            Verdict::Pass => "pass",
            Verdict::Manual => "manual",
        }
    }

    /// The OCSF `status_code` (as Prowler writes it).
    pub fn status_code(self) -> &'static str {
        match self {
            Verdict::Fail => "FAIL",
            Verdict::Pass => "PASS",
            Verdict::Manual => "MANUAL",
        }
    }

    /// Reads a tool's status word (`FAIL`, `pass`, `Manual`...).
    pub fn parse_loose(s: &str) -> Option<Verdict> {
        const WORDS: [(&str, Verdict); 9] = [
            ("FAIL", Verdict::Fail),
            ("FAILED", Verdict::Fail),
            ("FAILURE", Verdict::Fail),
            ("PASS", Verdict::Pass),
            ("PASSED", Verdict::Pass),
            ("SUCCESS", Verdict::Pass),
            ("MANUAL", Verdict::Manual),
            ("INFO", Verdict::Manual),
            ("UNKNOWN", Verdict::Manual),
        ];
        let s = s.trim();
        WORDS.iter().find(|(word, _)| word.eq_ignore_ascii_case(s)).map(|(_, verdict)| *verdict)
    }
}

/// What a vulnerability is, by its one primary identifier (OCSF allows exactly one of these per
/// vulnerability object).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum VulnId {
    /// `CVE-2022-22965`.
    Cve(String),
    /// `CWE-79` (web vulnerabilities are classed by weakness).
    Cwe(String),
    /// A vendor advisory without a CVE (`GHSA-…`, `RUSTSEC-…`, `ALAS-…`).
    Advisory(String),
}

impl VulnId {
    pub fn as_str(&self) -> &str {
        match self {
            VulnId::Cve(s) | VulnId::Cwe(s) | VulnId::Advisory(s) => s,
        }
    }

    /// Classifies an identifier by its shape: `CVE-…` is a CVE, `CWE-…` (or a bare number given as a
    /// CWE by the caller) a weakness, anything else an advisory.
    pub fn classify(id: &str) -> VulnId {
        let t = id.trim();
        let upper = t.to_ascii_uppercase();
        if upper.starts_with("CVE-") {
            VulnId::Cve(upper)
        } else if upper.starts_with("CWE-") {
            VulnId::Cwe(upper)
        } else {
            VulnId::Advisory(t.to_string())
        }
    }

    /// A CWE from its number (`79` → `CWE-79`).
    pub fn cwe(number: impl std::fmt::Display) -> VulnId {
        VulnId::Cwe(format!("CWE-{number}"))
    }
}

/// One CVSS score as a source published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cvss {
    /// `2.0`, `3.0`, `3.1`, `4.0`.
    pub version: String,
    pub base_score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
    /// Who scored it (`nvd`, `redhat`, `ghsa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The installed software a vulnerability is in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AffectedPackage {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_in_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    /// The ecosystem or package manager (`npm`, `debian`, `gomod`, `jar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_manager: Option<String>,
    /// Where it was found (a lock file, a jar inside an image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One vulnerability a finding reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Vulnerability {
    pub id: VulnId,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub cvss: Vec<Cvss>,
    /// Weaknesses beyond the primary id (`CWE-94` of a CVE).
    #[serde(default)]
    pub cwes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<AffectedPackage>,
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_available: Option<bool>,
    /// When the vulnerability was published, epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_ms: Option<i64>,
}

impl Vulnerability {
    pub fn new(id: VulnId, title: impl Into<String>, severity: Severity) -> Self {
        Self {
            id,
            title: title.into(),
            description: String::new(),
            severity,
            cvss: Vec::new(),
            cwes: Vec::new(),
            package: None,
            references: Vec::new(),
            fix_available: None,
            published_ms: None,
        }
    }

    /// The highest base score among the published CVSS scores.
    pub fn max_base_score(&self) -> Option<f64> {
        self.cvss.iter().map(|c| c.base_score).fold(None, |m, s| Some(m.map_or(s, |m: f64| m.max(s))))
    }
}

/// Lines of a file a finding points at (a secret, a misconfigured resource in IaC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CodeLocation {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
}

/// A network place a finding is about (an open port, a web page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Endpoint {
    /// An IP address, when the tool reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `tcp`, `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The service name (`http`, `ssh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The full URL of a web finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The HTTP method of the request that showed the problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
}

/// A finding as a tool adapter reports it, before it is placed in its scope.
///
/// Build one with struct update syntax over `NewFinding::default()`; `rule_id`, `title`, `resource_uid`
/// and `identity` must always be set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewFinding {
    pub class: FindingClass,
    /// The tool's rule or check (`nmap.open_port`, a Prowler check id, a Trivy `AVD-…` id, a CVE).
    pub rule_id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub verdict: Verdict,
    /// The tool itself was told to mute it (Prowler mutelist).
    #[serde(deserialize_with = "crate::store::lenient_bool")]
    pub muted: bool,
    /// The resource the finding is about (`127.0.0.1:8080/tcp`, an ARN, an image, a file).
    pub resource_uid: String,
    pub resource_type: String,
    pub resource_name: Option<String>,
    /// The cloud service or the scanned component (`s3`, `iam`, `http`, `npm`).
    pub service: Option<String>,
    /// What makes this finding itself across runs, beyond team and tool (e.g. host, port, protocol,
    /// service). Hashed into the `dedup_key`.
    pub identity: Vec<String>,
    pub remediation: Option<String>,
    pub references: Vec<String>,
    pub vulnerabilities: Vec<Vulnerability>,
    /// Framework → requirement ids the check evidences (Prowler's `unmapped.compliance`: `CIS-5.0` →
    /// `["1.1", "1.2"]`); the compliance engine joins them with the SCF crosswalks.
    pub compliance: BTreeMap<String, Vec<String>>,
    pub location: Option<CodeLocation>,
    pub endpoint: Option<Endpoint>,
    /// Tool-specific detail kept as the tool gave it (ports, services, CPEs, evidence...): OCSF
    /// `unmapped`.
    pub details: Document,
    /// Set by the worker's KEV enrichment stage on findings that name a CVE (`crate::kev`); `None`:
    /// not enriched (no CVE, or no catalog imported yet), and then a sighting leaves the stored mark alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kev: Option<crate::kev::KevMark>,
}

impl NewFinding {
    /// The CVE ids the finding carries (deduplicated, in order).
    pub fn cves(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in &self.vulnerabilities {
            if let VulnId::Cve(id) = &v.id
                && !out.contains(id)
            {
                out.push(id.clone());
            }
        }
        out
    }

    /// Whether the finding states a problem (what the lifecycle tracks as open); passes and manual
    /// checks are evidence, not problems.
    pub fn is_problem(&self) -> bool {
        self.verdict == Verdict::Fail
    }
}

/// Where a finding is in its lifecycle.
///
/// ```text
///            ┌────────── seen failing ──────────┐
///  new ──▶ open ── not seen / seen passing ──▶ resolved ── seen failing ──▶ reopened
///   │        │  └── manual resolve ──────────▶    ▲                            │
///   │        └──────────── suppress ──▶ suppressed (until expiry: then as new)  │
///   └──▶ passed / manual (the tool's check did not fail)     └──────────────────┘
/// ```
/// `open` and `reopened` are the active states: what a team has to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingStatus {
    Open,
    Reopened,
    Resolved,
    Suppressed,
    /// The tool checked and it passed (evidence for the compliance engine, nothing to do).
    Passed,
    /// The tool's check needs a person to decide (Prowler `MANUAL`).
    Manual,
}

impl FindingStatus {
    pub const ALL: [FindingStatus; 6] = [
        FindingStatus::Open,
        FindingStatus::Reopened,
        FindingStatus::Resolved,
        FindingStatus::Suppressed,
        FindingStatus::Passed,
        FindingStatus::Manual,
    ];
    pub const ACTIVE: [FindingStatus; 2] = [FindingStatus::Open, FindingStatus::Reopened];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Open => "open",
            FindingStatus::Reopened => "reopened",
            FindingStatus::Resolved => "resolved",
            FindingStatus::Suppressed => "suppressed",
            FindingStatus::Passed => "passed",
            FindingStatus::Manual => "manual",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, FindingStatus::Open | FindingStatus::Reopened)
    }

    /// The OCSF `status_id` and `status` caption (see docs/findings.md for the table).
    pub fn ocsf_status(self) -> (u8, &'static str) {
        match self {
            FindingStatus::Open | FindingStatus::Passed | FindingStatus::Manual => (1, "New"),
            FindingStatus::Reopened => (99, "Reopened"),
            FindingStatus::Suppressed => (3, "Suppressed"),
            FindingStatus::Resolved => (4, "Resolved"),
        }
    }

    /// The state of a finding first seen with this verdict.
    pub fn first(verdict: Verdict) -> FindingStatus {
        match verdict {
            Verdict::Fail => FindingStatus::Open,
            Verdict::Pass => FindingStatus::Passed,
            Verdict::Manual => FindingStatus::Manual,
        }
    }

    /// The state after a scan saw the finding again with `verdict`. A suppression still in force wins;
    /// an expired one is forgotten, as if the finding were new.
    pub fn on_seen(self, verdict: Verdict, suppression_expired: bool) -> FindingStatus {
        use FindingStatus::*;
        match (self, verdict) {
            (Suppressed, v) if suppression_expired => FindingStatus::first(v),
            (Suppressed, _) => Suppressed,
            (Open | Reopened, Verdict::Fail) => self,
            (Open | Reopened, _) => Resolved,
            (Resolved, Verdict::Fail) => Reopened,
            (Resolved, _) => Resolved,
            (Passed | Manual, v) => FindingStatus::first(v),
        }
    }

    /// The state after a complete, successful scan of the finding's scope did not report it.
    pub fn on_not_seen(self) -> FindingStatus {
        if self.is_active() { FindingStatus::Resolved } else { self }
    }
}

impl std::str::FromStr for FindingStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FindingStatus::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            format!("unknown finding status `{s}` (expected open, reopened, resolved, suppressed, passed or manual)")
        })
    }
}

impl std::fmt::Display for FindingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The suppression windows a user may choose, in days (`None`: permanent).
pub const SUPPRESSION_WINDOWS_DAYS: [u32; 7] = [7, 14, 30, 60, 90, 180, 365];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vulnerability_ids_are_classified_by_shape() {
        assert_eq!(VulnId::classify("cve-2021-44228"), VulnId::Cve("CVE-2021-44228".into()));
        assert_eq!(VulnId::classify("CWE-79"), VulnId::Cwe("CWE-79".into()));
        assert_eq!(VulnId::classify("GHSA-xxxx-yyyy"), VulnId::Advisory("GHSA-xxxx-yyyy".into()));
        assert_eq!(VulnId::cwe(89).as_str(), "CWE-89");
    }

    #[test]
    fn loose_verdicts_read_every_tool_spelling() {
        assert_eq!(Verdict::parse_loose("FAIL"), Some(Verdict::Fail));
        assert_eq!(Verdict::parse_loose(" pass "), Some(Verdict::Pass));
        assert_eq!(Verdict::parse_loose("Manual"), Some(Verdict::Manual));
        assert_eq!(Verdict::parse_loose("maybe"), None);
    }

    #[test]
    fn cves_are_listed_once_in_order() {
        let mut f = NewFinding::default();
        for id in ["CVE-2", "CWE-1", "CVE-1", "CVE-2"] {
            f.vulnerabilities.push(Vulnerability::new(VulnId::classify(id), "t", Severity::Low));
        }
        assert_eq!(f.cves(), vec!["CVE-2".to_string(), "CVE-1".to_string()]);
        let v = &mut f.vulnerabilities[0];
        v.cvss = vec![
            Cvss { version: "3.1".into(), base_score: 5.0, vector: None, source: None },
            Cvss { version: "2.0".into(), base_score: 7.5, vector: None, source: None },
        ];
        assert_eq!(v.max_base_score(), Some(7.5));
    }

    #[test]
    fn lifecycle_follows_the_documented_transitions() {
        use FindingStatus::*;
        assert_eq!(FindingStatus::first(Verdict::Fail), Open);
        assert_eq!(FindingStatus::first(Verdict::Pass), Passed);
        assert_eq!(Open.on_seen(Verdict::Fail, false), Open);
        assert_eq!(Open.on_seen(Verdict::Pass, false), Resolved);
        assert_eq!(Reopened.on_seen(Verdict::Manual, false), Resolved);
        assert_eq!(Resolved.on_seen(Verdict::Fail, false), Reopened);
        assert_eq!(Resolved.on_seen(Verdict::Pass, false), Resolved);
        assert_eq!(Reopened.on_seen(Verdict::Fail, false), Reopened);
        assert_eq!(Passed.on_seen(Verdict::Fail, false), Open);
        assert_eq!(Manual.on_seen(Verdict::Pass, false), Passed);
        assert_eq!(Suppressed.on_seen(Verdict::Fail, false), Suppressed);
        assert_eq!(Suppressed.on_seen(Verdict::Fail, true), Open);
        assert_eq!(Suppressed.on_seen(Verdict::Pass, true), Passed);
        assert_eq!(Open.on_not_seen(), Resolved);
        assert_eq!(Reopened.on_not_seen(), Resolved);
        for s in [Resolved, Suppressed, Passed, Manual] {
            assert_eq!(s.on_not_seen(), s, "{s}");
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in FindingStatus::ALL {
            assert_eq!(s.as_str().parse::<FindingStatus>(), Ok(s));
        }
        assert!("closed".parse::<FindingStatus>().is_err());
    }
}
