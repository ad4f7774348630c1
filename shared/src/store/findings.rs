//! Findings: one document per stable identity (`dedup_key`), upserted in batches.
//!
//! A finding seen again updates `last_seen` and the last run, keeps `first_seen`; ingesting the same
//! SubJob twice writes identical documents (the times come from the SubJob, not the clock).

use crate::time::Timestamp;
use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::db::Mongo;
use crate::domain::provider::Provider;
use crate::domain::severity::Severity;
use crate::error::{StoreError, StoreResult};
use crate::ids::{AccountId, RunId, SubJobId, TeamId};
use crate::ocsf::event::{CloudContext, EventContext, detection_finding};
use crate::store::subjobs::number;

/// A finding as a tool adapter reports it, before it is placed in its scope.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFinding {
    /// The tool's rule or check (`nmap.open_port`, a Prowler check id).
    pub rule_id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    /// The resource the finding is about (`127.0.0.1:8080/tcp`, an ARN).
    pub resource_uid: String,
    pub resource_type: String,
    /// What makes this finding itself across runs, beyond team and tool (e.g. host, port, protocol,
    /// service). Hashed into the `dedup_key`.
    pub identity: Vec<String>,
    pub remediation: Option<String>,
    /// Tool-specific detail (ports, services, CPEs...).
    pub details: Document,
}

/// Where findings come from: the SubJob that reported them.
#[derive(Debug, Clone)]
pub struct FindingScope {
    pub team_id: TeamId,
    pub tool: String,
    pub account_id: Option<AccountId>,
    pub target: Option<String>,
    pub region: String,
    pub run_id: RunId,
    pub subjob_id: SubJobId,
    /// When the scan observed the findings.
    pub seen_at: Timestamp,
    /// The provider and the provider's account id, for cloud findings.
    pub cloud: Option<(Provider, String)>,
}

/// The stable identity of a finding: SHA-256 over team, tool and the adapter's identity fields, joined
/// with the unit separator (which no field may contain unescaped, so the join is unambiguous).
pub fn dedup_key(team: &TeamId, tool: &str, identity: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(team.as_str().as_bytes());
    h.update([0x1f]);
    h.update(tool.as_bytes());
    for part in identity {
        h.update([0x1f]);
        h.update(part.replace('\u{1f}', "\u{1f}\u{1f}").as_bytes());
    }
    hex::encode(h.finalize())
}

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertStats {
    /// Findings seen for the first time.
    pub inserted: i64,
    /// Findings that already existed.
    pub matched: i64,
}

/// Upserts a batch in one round trip (the `update` command with one statement per finding, unordered;
/// it works on MongoDB 7 and 8 and on the test server).
pub async fn upsert_batch(db: &Mongo, scope: &FindingScope, batch: &[NewFinding]) -> StoreResult<UpsertStats> {
    if batch.is_empty() {
        return Ok(UpsertStats::default());
    }
    let mut updates = Vec::with_capacity(batch.len());
    for f in batch {
        let key = dedup_key(&scope.team_id, &scope.tool, &f.identity);
        let ocsf = detection_finding(
            f,
            &EventContext {
                tool: &scope.tool,
                tool_version: None,
                dedup_key: &key,
                seen_at: scope.seen_at,
                cloud: scope.cloud.as_ref().map(|(p, account)| CloudContext {
                    provider: *p,
                    account_uid: account,
                    region: &scope.region,
                }),
            },
        );
        updates.push(Bson::Document(doc! {
            "q": { "_id": &key },
            "u": {
                "$set": {
                    "team_id": &scope.team_id,
                    "tool": &scope.tool,
                    "account_id": scope.account_id.clone(),
                    "target": scope.target.clone(),
                    "region": &scope.region,
                    "rule_id": &f.rule_id,
                    "title": &f.title,
                    "description": &f.description,
                    "severity": f.severity.as_str(),
                    "severity_id": i32::from(f.severity.ocsf_id()),
                    "resource": { "uid": &f.resource_uid, "type": &f.resource_type },
                    "remediation": f.remediation.clone(),
                    "details": f.details.clone(),
                    "last_seen": scope.seen_at,
                    "last_run_id": &scope.run_id,
                    "last_subjob_id": &scope.subjob_id,
                    "ocsf": bson::serialize_to_bson(&ocsf)?,
                },
                "$setOnInsert": {
                    "dedup_key": &key,
                    "status": "open",
                    "first_seen": scope.seen_at,
                    "first_run_id": &scope.run_id,
                    "first_subjob_id": &scope.subjob_id,
                },
            },
            "upsert": true,
        }));
    }
    let reply = db
        .cloud_security_db()
        .run_command(doc! { "update": db.findings.name(), "updates": updates, "ordered": false })
        .await?;
    if let Ok(errors) = reply.get_array("writeErrors")
        && !errors.is_empty()
    {
        return Err(StoreError::Database(format!(
            "{} finding(s) were not written: {:?}",
            errors.len(),
            errors.first()
        )));
    }
    let n = number(&reply, "n");
    let inserted = reply.get_array("upserted").map(|a| a.len() as i64).unwrap_or(0);
    Ok(UpsertStats { inserted, matched: n - inserted })
}

/// The findings a run last reported (for the native scan result record), bounded.
pub async fn last_reported_by_run(db: &Mongo, run: &RunId, limit: i64) -> StoreResult<Vec<Document>> {
    let cursor = db
        .findings
        .find(doc! { "last_run_id": run })
        .projection(doc! { "title": 1, "severity": 1, "description": 1, "remediation": 1, "resource": 1, "rule_id": 1, "details": 1 })
        .sort(doc! { "severity_id": -1, "_id": 1 })
        .limit(limit)
        .await?;
    Ok(cursor.try_collect().await?)
}

/// How many findings the team holds in a scope (for tests and summaries).
pub async fn count(db: &Mongo, filter: Document) -> StoreResult<u64> {
    Ok(db.findings.count_documents(filter).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedup_key_is_stable_and_separates_fields() {
        let team = TeamId::new();
        let a = dedup_key(&team, "nmap", &["127.0.0.1".into(), "80".into(), "tcp".into()]);
        assert_eq!(a, dedup_key(&team, "nmap", &["127.0.0.1".into(), "80".into(), "tcp".into()]));
        assert_ne!(a, dedup_key(&team, "nmap", &["127.0.0.1".into(), "8".into(), "0tcp".into()]));
        assert_ne!(a, dedup_key(&TeamId::new(), "nmap", &["127.0.0.1".into(), "80".into(), "tcp".into()]));
        assert_ne!(dedup_key(&team, "t", &["a\u{1f}b".into()]), dedup_key(&team, "t", &["a".into(), "b".into()]));
        assert_eq!(a.len(), 64);
    }
}
