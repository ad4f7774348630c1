//! Cloud providers, their account identifiers and their default scan regions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Aws,
    Gcp,
    Azure,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Aws, Provider::Gcp, Provider::Azure];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
        }
    }

    /// Whether scans split by region. GCP projects and Azure subscriptions are scanned whole (`global`).
    pub fn is_regional(self) -> bool {
        matches!(self, Provider::Aws)
    }

    /// The regions a scan covers when neither the request nor the account names any.
    ///
    /// AWS: a quick scan covers `us-east-1` only; other types cover the 13 major commercial regions.
    pub fn default_regions(self, scan_type: super::scan::ScanType) -> Vec<String> {
        use super::scan::ScanType;
        match self {
            Provider::Aws => match scan_type {
                ScanType::Quick => vec!["us-east-1".into()],
                _ => AWS_MAJOR_REGIONS.iter().map(|r| r.to_string()).collect(),
            },
            Provider::Gcp | Provider::Azure => vec![GLOBAL_REGION.into()],
        }
    }
}

/// The pseudo-region of account-wide SubJobs.
pub const GLOBAL_REGION: &str = "global";

/// The curated set of major commercial AWS regions a full scan covers by default.
pub const AWS_MAJOR_REGIONS: [&str; 13] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
];

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "aws" => Ok(Provider::Aws),
            "gcp" => Ok(Provider::Gcp),
            "azure" => Ok(Provider::Azure),
            _ => Err(format!("unknown provider `{s}` (expected aws, gcp or azure)")),
        }
    }
}

/// The provider's own identifier of an account, validated for its provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ProviderAccountId(String);

impl ProviderAccountId {
    /// AWS: a 12-digit account id. GCP: a project id (6–30 chars, lowercase letters, digits and hyphens,
    /// starting with a letter, not ending with a hyphen). Azure: a subscription id (a GUID).
    pub fn parse(provider: Provider, raw: &str) -> Result<Self, String> {
        let v = raw.trim();
        let ok = match provider {
            Provider::Aws => v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()),
            Provider::Gcp => {
                let b = v.as_bytes();
                (6..=30).contains(&b.len())
                    && b[0].is_ascii_lowercase()
                    && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                    && b[b.len() - 1] != b'-'
            }
            Provider::Azure => is_guid(v),
        };
        if ok {
            Ok(Self(if provider == Provider::Azure { v.to_ascii_lowercase() } else { v.to_string() }))
        } else {
            Err(match provider {
                Provider::Aws => "an AWS account id is exactly 12 digits".to_string(),
                Provider::Gcp => {
                    "a GCP project id is 6-30 lowercase letters, digits or hyphens, starting with a letter".to_string()
                }
                Provider::Azure => {
                    "an Azure subscription id is a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)".to_string()
                }
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_guid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A region name as the provider spells it (`eu-west-1`, `global`); custom region ids are allowed.
pub fn validate_region(region: &str) -> Result<String, String> {
    let r = region.trim();
    let ok = r.len() <= 64
        && r.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(r.to_string())
    } else {
        Err(format!("`{region}` is not a region name (lowercase letters, digits and '-', starting with a letter)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scan::ScanType;

    #[test]
    fn aws_account_ids_are_exactly_twelve_digits() {
        assert!(ProviderAccountId::parse(Provider::Aws, "123456789012").is_ok());
        for bad in ["12345678901", "1234567890123", "12345678901a", "", "1234 5678901"] {
            assert!(ProviderAccountId::parse(Provider::Aws, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gcp_and_azure_ids_follow_their_formats() {
        assert!(ProviderAccountId::parse(Provider::Gcp, "my-project-123").is_ok());
        assert!(ProviderAccountId::parse(Provider::Gcp, "1project").is_err());
        assert!(ProviderAccountId::parse(Provider::Gcp, "proj-").is_err());
        let guid = "0B6F3C1E-1111-4A2B-9C3D-1234567890AB";
        assert_eq!(ProviderAccountId::parse(Provider::Azure, guid).map(|p| p.0), Ok(guid.to_ascii_lowercase()));
        assert!(ProviderAccountId::parse(Provider::Azure, "not-a-guid").is_err());
    }

    #[test]
    fn default_regions_depend_on_provider_and_scan_type() {
        assert_eq!(Provider::Aws.default_regions(ScanType::Quick), vec!["us-east-1"]);
        assert_eq!(Provider::Aws.default_regions(ScanType::Full).len(), 13);
        assert_eq!(Provider::Gcp.default_regions(ScanType::Full), vec!["global"]);
    }

    #[test]
    fn regions_are_validated() {
        assert!(validate_region("eu-west-1").is_ok());
        assert!(validate_region("EU West").is_err());
        assert!(validate_region("").is_err());
        assert!(validate_region("-rf").is_err(), "a region must not look like an option");
    }
}
