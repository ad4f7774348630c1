//! Vulnerability occurrences (`cspm_vulnerabilities.vulnerability_occurrences`): one specific CVE on one
//! specific asset and component, kept beside the findings that report it (dual ingestion).
//!
//! Scans move an occurrence between `open`, `resolved` (the scope's last complete scan no longer
//! reports it) and `reopened` (reported again after it was resolved). A person's decision —
//! `false_positive`, `accepted_risk` — is theirs: no scan changes it, however often the occurrence is
//! seen again. Writes are idempotent, like the findings': times come from the SubJob.

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::db::Mongo;
use crate::domain::finding::{NewFinding, VulnId};
use crate::domain::severity::Severity;
use crate::error::StoreResult;
use crate::ids::{AccountId, RunId, SubJobId, TeamId, UserId};
use crate::kev::KevMark;
use crate::store::findings::{FindingScope, dedup_key};
use crate::store::{lenient_bool, update_statements};
use crate::time::Timestamp;

/// Where an occurrence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OccurrenceStatus {
    Open,
    Reopened,
    Resolved,
    /// A person decided the scanner is wrong: kept whatever scans say.
    FalsePositive,
    /// A person accepted the risk: kept whatever scans say.
    AcceptedRisk,
}

impl OccurrenceStatus {
    pub const ALL: [OccurrenceStatus; 5] = [
        OccurrenceStatus::Open,
        OccurrenceStatus::Reopened,
        OccurrenceStatus::Resolved,
        OccurrenceStatus::FalsePositive,
        OccurrenceStatus::AcceptedRisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OccurrenceStatus::Open => "open",
            OccurrenceStatus::Reopened => "reopened",
            OccurrenceStatus::Resolved => "resolved",
            OccurrenceStatus::FalsePositive => "false_positive",
            OccurrenceStatus::AcceptedRisk => "accepted_risk",
        }
    }

    /// Whether the status is a person's decision that scans must not change.
    pub fn is_decision(self) -> bool {
        matches!(self, OccurrenceStatus::FalsePositive | OccurrenceStatus::AcceptedRisk)
    }
}

impl std::str::FromStr for OccurrenceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OccurrenceStatus::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            format!("unknown status `{s}` (expected open, reopened, resolved, false_positive or accepted_risk)")
        })
    }
}

/// A stored occurrence.
#[derive(Debug, Clone, Deserialize)]
pub struct OccurrenceDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub team_id: TeamId,
    /// The tool that reported it last (`trivy`, `trivy:fs`).
    pub tool: String,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub region: String,
    /// `cspm`, `container`, `application` or `network` (from the tool).
    pub source: String,
    /// The CVE.
    pub vulnerability_id: String,
    #[serde(default)]
    pub title: String,
    pub severity: Severity,
    /// The resource the CVE was found on (an image, a host, an ARN).
    pub asset_id: String,
    #[serde(default)]
    pub asset_type: String,
    #[serde(default)]
    pub component: Component,
    /// The highest CVSS base score published for the CVE.
    #[serde(default)]
    pub base_cvss: Option<f64>,
    /// The base score × 10, 0 without one: the list's order.
    #[serde(default)]
    pub risk_score: i64,
    /// `P0` (act now) … `P4`, from the base score.
    pub priority_rank: String,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub fix_available: bool,
    #[serde(default)]
    pub remediation: Option<String>,
    /// The finding that reported it last.
    pub finding_id: String,
    pub status: OccurrenceStatus,
    pub status_changed_at: Timestamp,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub first_run_id: RunId,
    pub last_run_id: RunId,
    #[serde(default)]
    pub last_subjob_id: Option<SubJobId>,
    /// The run that reported it again after a scan had resolved it.
    #[serde(default)]
    pub reopened_run_id: Option<RunId>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub cisa_kev: bool,
    #[serde(default)]
    pub kev: Option<KevMark>,
    /// How a scan resolved it (a scope's complete scan no longer reported it).
    #[serde(default)]
    pub resolution: Option<ScanResolution>,
    /// The last status a person set.
    #[serde(default)]
    pub decision: Option<Decision>,
    /// Every status a person set, oldest first.
    #[serde(default, deserialize_with = "decisions")]
    pub history: Vec<Decision>,
}

/// The package a CVE is in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Component {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub fixed_version: Option<String>,
    #[serde(default)]
    pub purl: Option<String>,
    /// Where it was found (a lock file, a jar inside an image); empty when the tool does not say.
    #[serde(default)]
    pub path: String,
}

/// A scan's resolution of an occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ScanResolution {
    /// `auto`.
    pub kind: String,
    pub run_id: RunId,
    pub at: Timestamp,
}

/// A status a person set on an occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub status: OccurrenceStatus,
    pub by: UserId,
    pub at: Timestamp,
    #[serde(default)]
    pub note: Option<String>,
}

/// The decision history: subdocuments, as `$push` appends them. The Mongo-wire test server stores a
/// pushed subdocument as its JSON text instead; such an entry is read from that text.
fn decisions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Decision>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Document(Decision),
        Text(String),
    }
    let entries = Option::<Vec<Entry>>::deserialize(d)?.unwrap_or_default();
    entries
        .into_iter()
        .map(|e| match e {
            Entry::Document(d) => Ok(d),
            Entry::Text(t) => serde_json::from_str(&t).map_err(serde::de::Error::custom),
        })
        .collect()
}

fn occurrence(d: Document) -> StoreResult<OccurrenceDoc> {
    Ok(bson::deserialize_from_document(d)?)
}

/// The priority rank from a CVSS base score: P0 (act now) … P4.
pub fn priority_rank(cvss: Option<f64>) -> &'static str {
    match cvss {
        Some(s) if s >= 9.0 => "P0",
        Some(s) if s >= 7.0 => "P1",
        Some(s) if s >= 4.0 => "P2",
        Some(s) if s > 0.0 => "P3",
        _ => "P4",
    }
}

/// The stable id of an occurrence: team, CVE, asset and component.
pub fn occurrence_id(team: &TeamId, cve: &str, asset: &str, component: &str, path: &str) -> String {
    let mut h = Sha256::new();
    for part in [team.as_str(), cve, asset, component, path] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    format!("occur_{}", &hex::encode(h.finalize())[..32])
}

fn source_of(tool: &str) -> &'static str {
    match tool.split(':').next().unwrap_or(tool) {
        "trivy" => "container",
        "zap" | "wapiti" => "application",
        "nmap" => "network",
        _ => "cspm",
    }
}

/// The occurrence statements of a batch: one upsert per CVE × asset × component of the batch's CVE
/// findings, then one statement that reopens those a scan had resolved. Returns how many occurrences
/// the batch names.
pub async fn sync_batch(db: &Mongo, scope: &FindingScope, batch: &[NewFinding]) -> StoreResult<usize> {
    let mut updates = Vec::new();
    let mut ids = Vec::new();
    for f in batch {
        let finding_id = dedup_key(&scope.team_id, &scope.tool, &f.identity);
        for v in &f.vulnerabilities {
            let VulnId::Cve(cve) = &v.id else { continue };
            let (component, version, fixed, purl, path) = match &v.package {
                Some(p) => (
                    p.name.clone(),
                    p.version.clone(),
                    p.fixed_in_version.clone(),
                    p.purl.clone(),
                    p.path.clone().unwrap_or_default(),
                ),
                None => (String::new(), String::new(), None, None, String::new()),
            };
            let id = occurrence_id(&scope.team_id, cve, &f.resource_uid, &component, &path);
            if ids.contains(&id) {
                continue;
            }
            let base = v.max_base_score();
            let mut set = doc! {
                        "team_id": &scope.team_id,
                        "tool": &scope.tool,
                        "account_id": scope.account_id.as_ref().map(Bson::from).unwrap_or(Bson::Null),
                        "target": scope.target.clone().map(Bson::String).unwrap_or(Bson::Null),
                        "region": &scope.region,
                        "source": source_of(&scope.tool),
                        "vulnerability_id": cve,
                        "title": &v.title,
                        "severity": v.severity.as_str(),
                        "asset_id": &f.resource_uid,
                        "asset_type": &f.resource_type,
                        "component": {
                            "name": &component,
                            "version": &version,
                            "fixed_version": fixed.clone(),
                            "purl": purl,
                            "path": &path,
                        },
                        "base_cvss": base,
                        "risk_score": base.map(|s| (s * 10.0).round() as i64).unwrap_or(0),
                        "priority_rank": priority_rank(base),
                        "fix_available": v.fix_available.unwrap_or(fixed.is_some()),
                        "remediation": f.remediation.clone(),
                        "finding_id": &finding_id,
                        "last_seen": scope.seen_at,
                        "last_run_id": &scope.run_id,
                        "last_subjob_id": &scope.subjob_id,
            };
            let mut on_insert = doc! {
                        "occurrence_id": &id,
                        "status": OccurrenceStatus::Open.as_str(),
                        "status_changed_at": scope.seen_at,
                        "first_seen": scope.seen_at,
                        "first_run_id": &scope.run_id,
            };
            // The finding's KEV mark (the worker's enrichment stage), if it speaks of this CVE: listed
            // as this CVE, or none of the finding's CVEs listed. Without one (no catalog yet; or a
            // finding of several CVEs whose mark is another's) a sighting leaves the stored flag alone
            // and a new occurrence starts unflagged (re-enrichment, per CVE, corrects it).
            let mark = f.kev.as_ref().filter(|m| !m.known_exploited || m.cve.as_deref() == Some(cve.as_str()));
            match mark {
                Some(mark) => {
                    set.insert("cisa_kev", mark.known_exploited);
                    set.insert("kev", bson::serialize_to_bson(mark)?);
                }
                None => {
                    on_insert.insert("cisa_kev", false);
                }
            }
            updates.push(Bson::Document(doc! {
                "q": { "_id": &id },
                "u": { "$set": set, "$setOnInsert": on_insert },
                "upsert": true,
            }));
            ids.push(id);
        }
    }
    if updates.is_empty() {
        return Ok(0);
    }
    let named = ids.len();
    updates.push(Bson::Document(doc! {
        "q": { "_id": { "$in": &ids }, "status": "resolved" },
        "u": { "$set": {
            "status": "reopened",
            "status_changed_at": scope.seen_at,
            "reopened_run_id": &scope.run_id,
        } },
        "multi": true,
    }));
    update_statements(db.vulnerabilities_db(), db.occurrences.name(), updates, true, "occurrence(s)").await?;
    Ok(named)
}

/// Resolves the open occurrences of the scope that a complete SubJob did not see. Decisions stay.
pub async fn resolve_unseen(db: &Mongo, scope: &FindingScope) -> StoreResult<i64> {
    let (filter, update) = unseen_resolution(scope);
    Ok(db.occurrences.update_many(filter, update).await?.modified_count as i64)
}

/// [`resolve_unseen`] for the scopes of many SubJobs in one round trip (one `update` command, a
/// statement each).
pub async fn resolve_unseen_many(db: &Mongo, scopes: &[FindingScope]) -> StoreResult<()> {
    if scopes.is_empty() {
        return Ok(());
    }
    let updates: Vec<Bson> = scopes
        .iter()
        .map(|scope| {
            let (q, u) = unseen_resolution(scope);
            Bson::Document(doc! { "q": q, "u": u, "multi": true })
        })
        .collect();
    update_statements(db.vulnerabilities_db(), db.occurrences.name(), updates, false, "occurrence resolution(s)")
        .await?;
    Ok(())
}

/// The filter and the update that resolve the open occurrences a scope's SubJob did not see.
fn unseen_resolution(scope: &FindingScope) -> (Document, Document) {
    let mut filter = scope.filter();
    filter.insert("status", doc! { "$in": ["open", "reopened"] });
    filter.insert("last_seen", doc! { "$lt": scope.seen_at });
    let update = doc! { "$set": {
        "status": "resolved",
        "status_changed_at": scope.seen_at,
        "resolution": { "kind": "auto", "run_id": &scope.run_id, "at": scope.seen_at },
    } };
    (filter, update)
}

/// A person sets an occurrence's status (a decision, or back to open). Returns the updated document.
pub async fn set_status(
    db: &Mongo,
    team: &TeamId,
    id: &str,
    status: OccurrenceStatus,
    by: &UserId,
    note: Option<&str>,
) -> StoreResult<Option<OccurrenceDoc>> {
    let now = Timestamp::now();
    let entry = doc! { "status": status.as_str(), "by": by, "at": now, "note": note };
    db.occurrences
        .find_one_and_update(
            doc! { "_id": id, "team_id": team },
            doc! {
                "$set": { "status": status.as_str(), "status_changed_at": now, "decision": entry.clone() },
                "$push": { "history": entry },
            },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await?
        .map(occurrence)
        .transpose()
}

pub async fn get(db: &Mongo, team: &TeamId, id: &str) -> StoreResult<Option<OccurrenceDoc>> {
    db.occurrences.find_one(doc! { "_id": id, "team_id": team }).await?.map(occurrence).transpose()
}

/// A page of the team's occurrences, riskiest first, and the total.
pub async fn list(
    db: &Mongo,
    team: &TeamId,
    mut filter: Document,
    skip: u64,
    limit: i64,
) -> StoreResult<(Vec<OccurrenceDoc>, u64)> {
    filter.insert("team_id", team);
    let total = db.occurrences.count_documents(filter.clone()).await?;
    let rows: Vec<Document> = db
        .occurrences
        .find(filter)
        .sort(doc! { "risk_score": -1, "_id": 1 })
        .skip(skip)
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    Ok((rows.into_iter().map(occurrence).collect::<StoreResult<_>>()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_follows_the_cvss_bands() {
        assert_eq!(priority_rank(Some(9.8)), "P0");
        assert_eq!(priority_rank(Some(7.0)), "P1");
        assert_eq!(priority_rank(Some(5.0)), "P2");
        assert_eq!(priority_rank(Some(0.1)), "P3");
        assert_eq!(priority_rank(None), "P4");
    }

    #[test]
    fn decision_history_reads_subdocuments_and_their_json_text() {
        let by = UserId::new();
        let entry = doc! { "status": "false_positive", "by": &by, "at": 1_000_i64, "note": "not reachable" };
        let text = serde_json::json!({ "status": "open", "by": by.as_str(), "at": 2_000, "note": null }).to_string();
        let stored = |history: Vec<Bson>| {
            doc! {
                "_id": "occur_1", "team_id": TeamId::new(), "tool": "trivy", "source": "container",
                "vulnerability_id": "CVE-2022-22965", "severity": "critical", "asset_id": "img",
                "priority_rank": "P0", "finding_id": "f", "status": "open", "status_changed_at": 2_000_i64,
                "first_seen": 1_i64, "last_seen": 2_i64, "first_run_id": RunId::new(), "last_run_id": RunId::new(),
                "fix_available": 1, "cisa_kev": true, "history": history,
            }
        };
        let o = occurrence(stored(vec![Bson::Document(entry), Bson::String(text)])).expect("readable");
        let statuses: Vec<_> = o.history.iter().map(|h| (h.status, h.at.millis(), h.note.clone())).collect();
        assert_eq!(
            statuses,
            vec![
                (OccurrenceStatus::FalsePositive, 1_000, Some("not reachable".into())),
                (OccurrenceStatus::Open, 2_000, None)
            ]
        );
        assert!(o.history.iter().all(|h| h.by == by));
        assert!(o.fix_available && o.cisa_kev, "flags stored as 0/1 or booleans read the same");
        assert_eq!(o.component, Component::default());
        assert!(occurrence(stored(Vec::new())).expect("readable").history.is_empty());
        assert!(occurrence(stored(vec![Bson::String("{not json".into())])).is_err(), "an unreadable entry is an error");
    }

    #[test]
    fn occurrence_ids_are_stable_and_distinct() {
        let t = TeamId::new();
        let a = occurrence_id(&t, "CVE-1", "img", "openssl", "");
        assert_eq!(a, occurrence_id(&t, "CVE-1", "img", "openssl", ""));
        assert_ne!(a, occurrence_id(&t, "CVE-1", "img", "openssl", "/app/lib"));
        assert!(a.starts_with("occur_") && a.len() == 38);
        for s in OccurrenceStatus::ALL {
            assert_eq!(s.as_str().parse::<OccurrenceStatus>(), Ok(s));
        }
    }
}
