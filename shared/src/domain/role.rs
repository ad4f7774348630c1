//! Roles and the permission matrix, kept as data in one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::scope::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    SecurityManager,
    SecurityAnalyst,
    ComplianceOfficer,
    Auditor,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::SecurityManager,
        Role::SecurityAnalyst,
        Role::ComplianceOfficer,
        Role::Auditor,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::SecurityManager => "security_manager",
            Role::SecurityAnalyst => "security_analyst",
            Role::ComplianceOfficer => "compliance_officer",
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }

    pub fn can(self, permission: Permission) -> bool {
        self == Role::Admin || permission.granted_to().contains(&self)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| format!("unknown role `{s}`"))
    }
}

/// What a route needs. Admin holds every permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ViewScans,
    RunScans,
    ManageScans,
    ViewCloudAccounts,
    ManageCloudAccounts,
    /// Resolve and suppress findings, decide on vulnerability occurrences ("Create and manage risks").
    ManageRisks,
    /// Import threat-intelligence catalogs (CISA KEV): they change every team's findings, so only
    /// administrators may.
    ManageThreatIntel,
    /// Read the compliance engine: catalog, control states, scores, syncs ("View assessments").
    ViewAssessments,
    /// Run compliance syncs and set framework thresholds ("Manage assessments").
    ManageAssessments,
    /// Import the SCF catalog and override control states (admin only in the seed's matrix).
    AdministerCompliance,
    /// Add, change and remove the members of the active team, end their sessions ("Manage team · manage
    /// users"). Making someone an administrator needs [`Role::Admin`] besides.
    ManageTeam,
    /// Create teams (the creator becomes the new team's administrator).
    CreateTeams,
    /// List and revoke every API key of the team (admin only; anyone manages their own keys).
    ManageTeamKeys,
    /// Read the whole team's audit trail (admin only; members read their own events).
    ViewTeamAudit,
}

impl Permission {
    /// The non-admin roles that hold the permission (the seed's matrix).
    pub fn granted_to(self) -> &'static [Role] {
        use Role::*;
        match self {
            Permission::ViewScans | Permission::ViewCloudAccounts | Permission::ViewAssessments => {
                &[SecurityManager, SecurityAnalyst, ComplianceOfficer, Auditor, Viewer]
            }
            Permission::ManageAssessments => &[SecurityManager, SecurityAnalyst, ComplianceOfficer],
            Permission::AdministerCompliance => &[],
            Permission::RunScans | Permission::ManageRisks => &[SecurityManager, SecurityAnalyst],
            Permission::ManageScans | Permission::ManageCloudAccounts => &[SecurityManager],
            Permission::ManageThreatIntel => &[],
            Permission::ManageTeam => &[SecurityManager],
            Permission::CreateTeams | Permission::ManageTeamKeys | Permission::ViewTeamAudit => &[],
        }
    }

    pub const ALL: [Permission; 14] = [
        Permission::ViewScans,
        Permission::RunScans,
        Permission::ManageScans,
        Permission::ViewCloudAccounts,
        Permission::ManageCloudAccounts,
        Permission::ManageRisks,
        Permission::ManageThreatIntel,
        Permission::ViewAssessments,
        Permission::ManageAssessments,
        Permission::AdministerCompliance,
        Permission::ManageTeam,
        Permission::CreateTeams,
        Permission::ManageTeamKeys,
        Permission::ViewTeamAudit,
    ];

    /// The API-key scope that stands for the permission, or `None` when no key may act on it (team and
    /// membership administration is for people signed in).
    pub fn key_scope(self) -> Option<Scope> {
        Some(match self {
            Permission::ViewScans => Scope::ScansRead,
            Permission::RunScans => Scope::ScansTrigger,
            Permission::ManageScans => Scope::ScansManage,
            Permission::ViewCloudAccounts => Scope::CloudRead,
            Permission::ManageCloudAccounts => Scope::CloudManage,
            Permission::ManageRisks => Scope::RisksManage,
            Permission::ManageThreatIntel => Scope::VulnerabilitiesManage,
            Permission::ViewAssessments => Scope::AssessmentsRead,
            Permission::ManageAssessments | Permission::AdministerCompliance => Scope::AssessmentsManage,
            Permission::ManageTeamKeys => Scope::AdminKeys,
            Permission::ViewTeamAudit => Scope::AdminAudit,
            Permission::ManageTeam | Permission::CreateTeams => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ViewScans => "view_scans",
            Permission::RunScans => "run_scans",
            Permission::ManageScans => "manage_scans",
            Permission::ViewCloudAccounts => "view_cloud_accounts",
            Permission::ManageCloudAccounts => "manage_cloud_accounts",
            Permission::ManageRisks => "manage_risks",
            Permission::ManageThreatIntel => "manage_threat_intel",
            Permission::ViewAssessments => "view_assessments",
            Permission::ManageAssessments => "manage_assessments",
            Permission::AdministerCompliance => "administer_compliance",
            Permission::ManageTeam => "manage_team",
            Permission::CreateTeams => "create_teams",
            Permission::ManageTeamKeys => "manage_team_keys",
            Permission::ViewTeamAudit => "view_team_audit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_matches_the_design() {
        use Permission::*;
        use Role::*;
        let run: Vec<Role> = Role::ALL.into_iter().filter(|r| r.can(RunScans)).collect();
        assert_eq!(run, vec![Admin, SecurityManager, SecurityAnalyst]);
        let cancel: Vec<Role> = Role::ALL.into_iter().filter(|r| r.can(ManageScans)).collect();
        assert_eq!(cancel, vec![Admin, SecurityManager]);
        assert!(Role::ALL.into_iter().all(|r| r.can(ViewScans)));
        let risks: Vec<Role> = Role::ALL.into_iter().filter(|r| r.can(ManageRisks)).collect();
        assert_eq!(risks, vec![Admin, SecurityManager, SecurityAnalyst]);
        let intel: Vec<Role> = Role::ALL.into_iter().filter(|r| r.can(ManageThreatIntel)).collect();
        assert_eq!(intel, vec![Admin]);
        assert!(Role::ALL.into_iter().all(|r| r.can(ViewAssessments)));
        let assess: Vec<Role> = Role::ALL.into_iter().filter(|r| r.can(ManageAssessments)).collect();
        assert_eq!(assess, vec![Admin, SecurityManager, SecurityAnalyst, ComplianceOfficer]);
        let admin: Vec<Role> = Role::ALL.into_iter().filter(|r| r.can(AdministerCompliance)).collect();
        assert_eq!(admin, vec![Admin], "SCF import and overrides are admin-only");
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
