//! The catalog as CISA publishes it, parsed and checked: against CISA's JSON Schema first, then against
//! the rules the schema cannot say (the declared `count` is the number of entries, no CVE twice, a
//! known value for ransomware use, a version usable as an id). A catalog that fails any of them is
//! refused whole, with a message naming what is wrong and where.

use std::collections::HashSet;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::schema::{Schema, Violation};

/// CISA's schema, as published beside the catalog (kept in step with the fixture by a test).
pub const SCHEMA_TEXT: &str = include_str!("catalog_schema.json");

static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(SCHEMA_TEXT).map_err(|e| format!("the KEV schema is not JSON: {e}"))?;
    Schema::compile(&doc)
});

/// Violations quoted in a refusal (the rest are counted).
const QUOTED_VIOLATIONS: usize = 5;

/// Values of `knownRansomwareCampaignUse` CISA uses (its schema describes them without enumerating).
pub const RANSOMWARE_VALUES: [&str; 2] = ["Known", "Unknown"];

/// The catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    #[serde(default)]
    pub title: Option<String>,
    pub catalog_version: String,
    pub date_released: String,
    pub count: u64,
    pub vulnerabilities: Vec<KevEntry>,
}

/// One known exploited vulnerability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KevEntry {
    #[serde(rename = "cveID")]
    pub cve_id: String,
    pub vendor_project: String,
    pub product: String,
    pub vulnerability_name: String,
    pub date_added: String,
    pub short_description: String,
    pub required_action: String,
    pub due_date: String,
    #[serde(default)]
    pub known_ransomware_campaign_use: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub cwes: Vec<String>,
}

/// A catalog that passed every check, with the SHA-256 of the bytes it came from.
#[derive(Debug, Clone)]
pub struct ValidCatalog {
    pub catalog: Catalog,
    pub sha256: String,
}

impl ValidCatalog {
    /// The id the catalog is stored under: its version and the start of its digest, so that two
    /// different files that claim the same version are never mixed up.
    pub fn id(&self) -> String {
        format!("{}-{}", self.catalog.catalog_version, &self.sha256[..12])
    }
}

/// Why a catalog was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog is larger than the limit of {max} bytes")]
    TooLarge { max: usize },
    #[error("the catalog is not valid JSON (truncated or malformed): {0}")]
    NotJson(String),
    #[error("the catalog does not follow the KEV schema ({total} problem(s)): {}", quote(.violations))]
    Schema { violations: Vec<String>, total: usize },
    #[error("the catalog declares count {declared} but holds {found} vulnerabilities (partial or corrupt)")]
    CountMismatch { declared: u64, found: usize },
    #[error("the catalog holds no vulnerabilities")]
    Empty,
    #[error("{cve} appears more than once (at /vulnerabilities/{first} and /vulnerabilities/{second})")]
    Duplicate { cve: String, first: usize, second: usize },
    #[error("/vulnerabilities/{index}/knownRansomwareCampaignUse: `{value}` is neither Known nor Unknown")]
    Ransomware { index: usize, value: String },
    #[error("/catalogVersion: `{0}` is not a version (1 to 64 letters, digits, '.', '-' or '_')")]
    Version(String),
    #[error(
        "the catalog holds {new} vulnerabilities, fewer than half of the current catalog's {current}: refused as partial"
    )]
    Shrunk { current: u64, new: u64 },
    #[error("the KEV schema cannot be used: {0}")]
    BadSchema(String),
}

fn quote(v: &[String]) -> String {
    v.join("; ")
}

/// Parses and checks catalog bytes.
pub fn parse(bytes: &[u8], max_bytes: usize) -> Result<ValidCatalog, CatalogError> {
    if bytes.len() > max_bytes {
        return Err(CatalogError::TooLarge { max: max_bytes });
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| CatalogError::NotJson(e.to_string()))?;
    from_value(value, &hex::encode(Sha256::digest(bytes)))
}

/// Checks an already parsed catalog; `sha256` is the digest of the bytes it was parsed from.
pub fn from_value(value: Value, sha256: &str) -> Result<ValidCatalog, CatalogError> {
    let schema = SCHEMA.as_ref().map_err(|e| CatalogError::BadSchema(e.clone()))?;
    let (violations, total) = schema.validate(&value, QUOTED_VIOLATIONS);
    if total > 0 {
        return Err(CatalogError::Schema { violations: violations.iter().map(Violation::to_string).collect(), total });
    }
    let catalog: Catalog = serde_json::from_value(value)
        .map_err(|e| CatalogError::Schema { violations: vec![format!("the catalog: {e}")], total: 1 })?;
    check_rules(&catalog)?;
    Ok(ValidCatalog { catalog, sha256: sha256.to_string() })
}

fn check_rules(c: &Catalog) -> Result<(), CatalogError> {
    let v = &c.catalog_version;
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(CatalogError::Version(v.chars().take(80).collect()));
    }
    if c.count != c.vulnerabilities.len() as u64 {
        return Err(CatalogError::CountMismatch { declared: c.count, found: c.vulnerabilities.len() });
    }
    if c.vulnerabilities.is_empty() {
        return Err(CatalogError::Empty);
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(c.vulnerabilities.len());
    for (i, e) in c.vulnerabilities.iter().enumerate() {
        if !seen.insert(e.cve_id.as_str()) {
            let first = c.vulnerabilities.iter().position(|o| o.cve_id == e.cve_id).unwrap_or(0);
            return Err(CatalogError::Duplicate { cve: e.cve_id.clone(), first, second: i });
        }
        if let Some(r) = &e.known_ransomware_campaign_use
            && !RANSOMWARE_VALUES.contains(&r.as_str())
        {
            return Err(CatalogError::Ransomware { index: i, value: r.chars().take(40).collect() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024 * 1024;

    fn fixture_bytes() -> Vec<u8> {
        let path = crate::testing::fixtures_dir().join("kev/known_exploited_vulnerabilities.json");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn fixture_value() -> Value {
        serde_json::from_slice(&fixture_bytes()).expect("fixture is JSON")
    }

    fn refused(v: &Value) -> CatalogError {
        parse(&serde_json::to_vec(v).expect("json"), MAX).expect_err("refused")
    }

    #[test]
    fn the_embedded_schema_is_the_published_one() {
        let path = crate::testing::fixtures_dir().join("kev/known_exploited_vulnerabilities_schema.json");
        let published: Value = serde_json::from_slice(&std::fs::read(path).expect("schema fixture")).expect("json");
        let embedded: Value = serde_json::from_str(SCHEMA_TEXT).expect("json");
        assert_eq!(published, embedded);
        assert!(SCHEMA.is_ok(), "{:?}", SCHEMA.as_ref().err());
    }

    #[test]
    fn the_published_catalog_is_accepted() {
        let bytes = fixture_bytes();
        let c = parse(&bytes, MAX).expect("valid");
        assert_eq!(c.catalog.catalog_version, "2025.08.25");
        assert_eq!(c.catalog.count, 1404);
        assert_eq!(c.catalog.vulnerabilities.len(), 1404);
        assert!(c.id().starts_with("2025.08.25-") && c.id().len() == "2025.08.25-".len() + 12);
        let spring = c.catalog.vulnerabilities.iter().find(|e| e.cve_id == "CVE-2022-22965").expect("spring4shell");
        assert_eq!((spring.date_added.as_str(), spring.due_date.as_str()), ("2022-04-04", "2022-04-25"));
    }

    #[test]
    fn a_missing_required_field_is_refused_naming_it() {
        let mut v = fixture_value();
        v["vulnerabilities"][3].as_object_mut().expect("entry").remove("dueDate");
        let e = refused(&v);
        assert!(matches!(e, CatalogError::Schema { total: 1, .. }), "{e}");
        assert!(e.to_string().contains("/vulnerabilities/3: the required field `dueDate` is missing"), "{e}");
        let mut v = fixture_value();
        v.as_object_mut().expect("catalog").remove("catalogVersion");
        assert!(refused(&v).to_string().contains("`catalogVersion` is missing"));
    }

    #[test]
    fn a_bad_cve_id_or_date_is_refused_naming_it() {
        let mut v = fixture_value();
        v["vulnerabilities"][7]["cveID"] = "CVE-22-1".into();
        v["vulnerabilities"][9]["dateAdded"] = "2022-02-30".into();
        let e = refused(&v).to_string();
        assert!(e.contains("/vulnerabilities/7/cveID") && e.contains("pattern"), "{e}");
        assert!(e.contains("/vulnerabilities/9/dateAdded") && e.contains("not a date"), "{e}");
        assert!(e.contains("2 problem(s)"), "{e}");
        let mut v = fixture_value();
        v["dateReleased"] = "yesterday".into();
        assert!(refused(&v).to_string().contains("/dateReleased"));
    }

    #[test]
    fn a_count_that_does_not_match_the_entries_is_refused() {
        let mut v = fixture_value();
        v["vulnerabilities"].as_array_mut().expect("list").truncate(1000);
        assert_eq!(refused(&v), CatalogError::CountMismatch { declared: 1404, found: 1000 });
        let mut v = fixture_value();
        v["vulnerabilities"] = Value::Array(vec![]);
        assert_eq!(refused(&v), CatalogError::CountMismatch { declared: 1404, found: 0 });
        v["count"] = 0.into();
        assert_eq!(refused(&v), CatalogError::Empty);
    }

    #[test]
    fn truncated_json_is_refused_with_its_position() {
        let bytes = fixture_bytes();
        let e = parse(&bytes[..bytes.len() / 2], MAX).expect_err("refused");
        assert!(matches!(e, CatalogError::NotJson(_)), "{e}");
        assert!(e.to_string().contains("line"), "{e}");
        assert_eq!(parse(&bytes, 1000).expect_err("too large"), CatalogError::TooLarge { max: 1000 });
    }

    #[test]
    fn duplicates_and_unknown_ransomware_values_are_refused() {
        let mut v = fixture_value();
        let first = v["vulnerabilities"][0].clone();
        v["vulnerabilities"][5] = first;
        assert!(matches!(refused(&v), CatalogError::Duplicate { first: 0, second: 5, .. }));
        let mut v = fixture_value();
        v["vulnerabilities"][2]["knownRansomwareCampaignUse"] = "Maybe".into();
        assert_eq!(refused(&v), CatalogError::Ransomware { index: 2, value: "Maybe".into() });
        let mut v = fixture_value();
        v["catalogVersion"] = "../../etc".into();
        assert!(matches!(refused(&v), CatalogError::Version(_)));
    }
}
