//! API-key scopes and their presets (the seed's vocabulary). A key's call is allowed only when the key
//! holds the route's scope AND its owner's role holds the route's permission; a signed-in session
//! implicitly holds every scope.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    ScansTrigger,
    ScansRead,
    ScansManage,
    VulnerabilitiesRead,
    VulnerabilitiesManage,
    AssessmentsRead,
    AssessmentsManage,
    CloudRead,
    CloudManage,
    RisksRead,
    RisksManage,
    ReportsRead,
    ReportsGenerate,
    AdminKeys,
    AdminAudit,
}

impl Scope {
    pub const ALL: [Scope; 15] = [
        Scope::ScansTrigger,
        Scope::ScansRead,
        Scope::ScansManage,
        Scope::VulnerabilitiesRead,
        Scope::VulnerabilitiesManage,
        Scope::AssessmentsRead,
        Scope::AssessmentsManage,
        Scope::CloudRead,
        Scope::CloudManage,
        Scope::RisksRead,
        Scope::RisksManage,
        Scope::ReportsRead,
        Scope::ReportsGenerate,
        Scope::AdminKeys,
        Scope::AdminAudit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ScansTrigger => "scans:trigger",
            Scope::ScansRead => "scans:read",
            Scope::ScansManage => "scans:manage",
            Scope::VulnerabilitiesRead => "vulnerabilities:read",
            Scope::VulnerabilitiesManage => "vulnerabilities:manage",
            Scope::AssessmentsRead => "assessments:read",
            Scope::AssessmentsManage => "assessments:manage",
            Scope::CloudRead => "cloud:read",
            Scope::CloudManage => "cloud:manage",
            Scope::RisksRead => "risks:read",
            Scope::RisksManage => "risks:manage",
            Scope::ReportsRead => "reports:read",
            Scope::ReportsGenerate => "reports:generate",
            Scope::AdminKeys => "admin:keys",
            Scope::AdminAudit => "admin:audit",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scope::ScansTrigger => "start cloud and native scans",
            Scope::ScansRead => "read scans, their status, results, findings and schedules",
            Scope::ScansManage => "cancel scans and manage schedules",
            Scope::VulnerabilitiesRead => "read vulnerability occurrences and threat intelligence",
            Scope::VulnerabilitiesManage => "decide on vulnerability occurrences; import threat intelligence",
            Scope::AssessmentsRead => "read the compliance catalog, control states and scores",
            Scope::AssessmentsManage => "run compliance syncs, set thresholds, manage control states",
            Scope::CloudRead => "read cloud accounts",
            Scope::CloudManage => "connect, change and remove cloud accounts",
            Scope::RisksRead => "read findings",
            Scope::RisksManage => "resolve and suppress findings",
            Scope::ReportsRead => "read reports and exports",
            Scope::ReportsGenerate => "generate reports",
            Scope::AdminKeys => "administer the team's API keys",
            Scope::AdminAudit => "read the audit trail",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| format!("unknown scope `{s}`"))
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A string, one of the scopes' names.
impl schemars::JsonSchema for Scope {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scope".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Named sets of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    CiCdBasic,
    CiCdFull,
    ReadOnly,
    SecurityAutomation,
    FullAccess,
}

impl Preset {
    pub const ALL: [Preset; 5] =
        [Preset::CiCdBasic, Preset::CiCdFull, Preset::ReadOnly, Preset::SecurityAutomation, Preset::FullAccess];

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::CiCdBasic => "ci_cd_basic",
            Preset::CiCdFull => "ci_cd_full",
            Preset::ReadOnly => "read_only",
            Preset::SecurityAutomation => "security_automation",
            Preset::FullAccess => "full_access",
        }
    }

    pub fn scopes(self) -> Vec<Scope> {
        use Scope::*;
        match self {
            Preset::CiCdBasic => vec![ScansTrigger, ScansRead],
            Preset::CiCdFull => vec![ScansTrigger, ScansRead, ScansManage, VulnerabilitiesRead],
            Preset::ReadOnly => {
                vec![ScansRead, VulnerabilitiesRead, AssessmentsRead, CloudRead, RisksRead, ReportsRead]
            }
            Preset::SecurityAutomation => vec![
                ScansTrigger,
                ScansRead,
                ScansManage,
                VulnerabilitiesRead,
                VulnerabilitiesManage,
                CloudRead,
                ReportsRead,
                ReportsGenerate,
            ],
            Preset::FullAccess => Scope::ALL.to_vec(),
        }
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown scope preset `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_presets_round_trip() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
            assert_eq!(serde_json::to_value(s).expect("json"), serde_json::json!(s.as_str()));
        }
        for p in Preset::ALL {
            assert_eq!(p.as_str().parse::<Preset>(), Ok(p));
        }
        assert!("scans:everything".parse::<Scope>().is_err());
    }

    #[test]
    fn presets_are_the_seeds() {
        use Scope::*;
        assert_eq!(Preset::CiCdBasic.scopes(), vec![ScansTrigger, ScansRead]);
        assert!(Preset::CiCdFull.scopes().contains(&ScansManage));
        assert!(Preset::ReadOnly.scopes().iter().all(|s| s.as_str().ends_with(":read")));
        assert_eq!(Preset::ReadOnly.scopes().len(), 6);
        assert!(!Preset::SecurityAutomation.scopes().contains(&CloudManage));
        assert_eq!(Preset::FullAccess.scopes().len(), Scope::ALL.len());
    }
}
