//! Vulnerability occurrences (`cspm_vulnerabilities.vulnerability_occurrences`): one specific CVE on one
//! specific asset and component, kept beside the findings that report it (dual ingestion).
//!
//! Scans move an occurrence between `open`, `resolved` (the scope's last complete scan no longer
//! reports it) and `reopened` (reported again after it was resolved). A person's decision —
//! `false_positive`, `accepted_risk` — is theirs: no scan changes it, however often the occurrence is
//! seen again. Writes are idempotent, like the findings': times come from the SubJob.

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::Mongo;
use crate::domain::finding::{NewFinding, VulnId};
use crate::error::{StoreError, StoreResult};
use crate::ids::{TeamId, UserId};
use crate::store::findings::{FindingScope, dedup_key};
use crate::time::Timestamp;

/// Where an occurrence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    let reply = db
        .vulnerabilities_db()
        .run_command(doc! { "update": db.occurrences.name(), "updates": updates, "ordered": true })
        .await?;
    if let Ok(errors) = reply.get_array("writeErrors")
        && !errors.is_empty()
    {
        return Err(StoreError::Database(format!(
            "{} occurrence(s) were not written: {:?}",
            errors.len(),
            errors.first()
        )));
    }
    Ok(named)
}

/// Resolves the open occurrences of the scope that a complete SubJob did not see. Decisions stay.
pub async fn resolve_unseen(db: &Mongo, scope: &FindingScope) -> StoreResult<i64> {
    let mut filter = scope.filter();
    filter.insert("status", doc! { "$in": ["open", "reopened"] });
    filter.insert("last_seen", doc! { "$lt": scope.seen_at });
    let r = db
        .occurrences
        .update_many(
            filter,
            doc! { "$set": {
                "status": "resolved",
                "status_changed_at": scope.seen_at,
                "resolution": { "kind": "auto", "run_id": &scope.run_id, "at": scope.seen_at },
            } },
        )
        .await?;
    Ok(r.modified_count as i64)
}

/// A person sets an occurrence's status (a decision, or back to open). Returns the updated document.
pub async fn set_status(
    db: &Mongo,
    team: &TeamId,
    id: &str,
    status: OccurrenceStatus,
    by: &UserId,
    note: Option<&str>,
) -> StoreResult<Option<Document>> {
    let now = Timestamp::now();
    let entry = doc! { "status": status.as_str(), "by": by, "at": now, "note": note };
    Ok(db
        .occurrences
        .find_one_and_update(
            doc! { "_id": id, "team_id": team },
            doc! {
                "$set": { "status": status.as_str(), "status_changed_at": now, "decision": entry.clone() },
                "$push": { "history": entry },
            },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await?)
}

pub async fn get(db: &Mongo, team: &TeamId, id: &str) -> StoreResult<Option<Document>> {
    Ok(db.occurrences.find_one(doc! { "_id": id, "team_id": team }).await?)
}

/// A page of the team's occurrences, riskiest first, and the total.
pub async fn list(
    db: &Mongo,
    team: &TeamId,
    mut filter: Document,
    skip: u64,
    limit: i64,
) -> StoreResult<(Vec<Document>, u64)> {
    filter.insert("team_id", team);
    let total = db.occurrences.count_documents(filter.clone()).await?;
    let rows = db
        .occurrences
        .find(filter)
        .sort(doc! { "risk_score": -1, "_id": 1 })
        .skip(skip)
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    Ok((rows, total))
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
