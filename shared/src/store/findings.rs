//! Findings: one document per stable identity (`dedup_key`), moved through its lifecycle by scans and
//! by people.
//!
//! Ingestion reads the current state of a batch of findings, decides each one's next state with the
//! lifecycle of [`FindingStatus`] (a pure, tested function) and writes the whole batch in one `update`
//! command; every statement for an existing finding is guarded by the state it was decided from, so a
//! person's concurrent resolve or suppress is never overwritten (the batch is decided again instead).
//! Deciding twice from the same observation gives the same state, so a SubJob ingested twice writes
//! identical documents: the times come from the SubJob, not the clock.
//!
//! Auto-resolution is separate: when a SubJob completes, the active findings of its scope (team, account
//! or target, region, tool) that it did not see are resolved, recording the closing run, unless the
//! zero-findings guard applies (the pipeline decides).

use std::collections::{BTreeMap, HashMap};

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::Mongo;
use crate::domain::finding::FindingStatus;
use crate::domain::provider::Provider;
use crate::error::{StoreError, StoreResult};
use crate::ids::{AccountId, RunId, SubJobId, TeamId, UserId};
use crate::ocsf::event::{CloudContext, EventContext};
use crate::store::subjobs::number;
use crate::store::update_statements;
use crate::time::Timestamp;

pub use crate::domain::finding::NewFinding;

/// Where findings come from: the SubJob that reported them.
#[derive(Debug, Clone)]
pub struct FindingScope {
    pub team_id: TeamId,
    /// The tool as the SubJob names it (`canary:a` keeps labelled canaries apart).
    pub tool: String,
    pub account_id: Option<AccountId>,
    pub target: Option<String>,
    pub region: String,
    pub run_id: RunId,
    pub subjob_id: SubJobId,
    /// When the scan observed the findings (the SubJob's start).
    pub seen_at: Timestamp,
    /// The provider and the provider's account id, for cloud findings.
    pub cloud: Option<(Provider, String)>,
}

impl FindingScope {
    /// The scope of what a SubJob reports, seen when it started.
    pub fn of_subjob(job: &crate::store::subjobs::SubJobDoc) -> Self {
        Self {
            team_id: job.team_id.clone(),
            tool: job.tool.to_string(),
            account_id: job.account_id.clone(),
            target: job.native.as_ref().map(|n| n.target.clone()),
            region: job.region.clone(),
            run_id: job.run_id.clone(),
            subjob_id: job.id.clone(),
            seen_at: job.started_at.unwrap_or_else(Timestamp::now),
            cloud: job.provider.zip(job.provider_account_id.clone()),
        }
    }

    /// The filter that selects every finding of this scope.
    pub fn filter(&self) -> Document {
        doc! {
            "team_id": &self.team_id,
            "tool": &self.tool,
            "account_id": self.account_id.as_ref().map(Bson::from).unwrap_or(Bson::Null),
            "target": self.target.clone().map(Bson::String).unwrap_or(Bson::Null),
            "region": &self.region,
        }
    }
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
        if part.contains('\u{1f}') {
            h.update(part.replace('\u{1f}', "\u{1f}\u{1f}").as_bytes());
        } else {
            h.update(part.as_bytes());
        }
    }
    // Hex by table into one allocation (`hex::encode` goes character by character).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in h.finalize() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// How a finding was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// `auto` (a scan) or `manual` (a person).
    pub kind: String,
    pub reason: String,
    #[serde(default)]
    pub run_id: Option<RunId>,
    #[serde(default)]
    pub subjob_id: Option<SubJobId>,
    #[serde(default)]
    pub by: Option<UserId>,
    #[serde(default)]
    pub note: Option<String>,
    pub at: Timestamp,
}

/// A suppression in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub reason: String,
    /// When it ends; `None`: permanent.
    #[serde(default)]
    pub until: Option<Timestamp>,
    pub by: UserId,
    pub at: Timestamp,
}

impl Suppression {
    pub fn expired(&self, now: Timestamp) -> bool {
        self.until.is_some_and(|u| u <= now)
    }
}

/// A stored finding.
#[derive(Debug, Clone, Deserialize)]
pub struct FindingDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub team_id: TeamId,
    pub tool: String,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub provider_account_id: Option<String>,
    #[serde(flatten)]
    pub finding: NewFinding,
    pub status: FindingStatus,
    #[serde(default)]
    pub status_changed_at: Option<Timestamp>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub first_run_id: RunId,
    pub last_run_id: RunId,
    #[serde(default)]
    pub resolution: Option<Resolution>,
    #[serde(default)]
    pub suppression: Option<Suppression>,
    #[serde(default)]
    pub reopen_count: i64,
}

impl FindingDoc {
    /// The finding as an OCSF event, with its current lifecycle status.
    pub fn to_ocsf(&self) -> serde_json::Value {
        let ctx = EventContext {
            tool: self.tool.split(':').next().unwrap_or(&self.tool),
            tool_version: None,
            dedup_key: &self.id,
            seen_at: self.last_seen,
            first_seen: Some(self.first_seen),
            status: self.status,
            cloud: self.provider.zip(self.provider_account_id.as_deref()).map(|(provider, account)| CloudContext {
                provider,
                account_uid: account,
                region: &self.region,
            }),
        };
        crate::ocsf::event::render(&self.finding, &ctx)
    }
}

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertStats {
    /// Findings seen for the first time.
    pub inserted: i64,
    /// Findings that already existed.
    pub matched: i64,
    /// Resolved findings that this batch saw failing again.
    pub reopened: i64,
    /// Active findings this batch saw passing (resolved).
    pub resolved: i64,
}

/// Attempts at a batch whose guarded statements keep losing races with people's changes.
const MAX_DECISION_ROUNDS: usize = 5;

/// Stores a batch of findings in one decision round (one read, one write); see the module comment.
pub async fn upsert_batch(db: &Mongo, scope: &FindingScope, batch: &[NewFinding]) -> StoreResult<UpsertStats> {
    if batch.is_empty() {
        return Ok(UpsertStats::default());
    }
    // A report may name the same finding twice: the last sighting wins, once.
    let mut by_key: BTreeMap<String, &NewFinding> = BTreeMap::new();
    for f in batch {
        by_key.insert(dedup_key(&scope.team_id, &scope.tool, &f.identity), f);
    }
    let mut last_error = None;
    for _ in 0..MAX_DECISION_ROUNDS {
        match decide_and_write(db, scope, &by_key).await? {
            Ok(stats) => return Ok(stats),
            Err(lost) => last_error = Some(lost),
        }
    }
    Err(StoreError::Database(format!(
        "findings kept changing while they were being stored ({} statement(s) lost their guard)",
        last_error.unwrap_or(0)
    )))
}

/// The observation fields: what a sighting sets, whatever the finding's state.
fn observed_fields(scope: &FindingScope, f: &NewFinding) -> StoreResult<Document> {
    let mut set = bson::serialize_to_document(f)?;
    set.insert("team_id", &scope.team_id);
    set.insert("tool", &scope.tool);
    set.insert("account_id", scope.account_id.as_ref().map(Bson::from).unwrap_or(Bson::Null));
    set.insert("target", scope.target.clone().map(Bson::String).unwrap_or(Bson::Null));
    set.insert("region", &scope.region);
    set.insert("provider", scope.cloud.as_ref().map(|(p, _)| Bson::String(p.as_str().into())).unwrap_or(Bson::Null));
    set.insert("provider_account_id", scope.cloud.as_ref().map(|(_, a)| Bson::String(a.clone())).unwrap_or(Bson::Null));
    set.insert("severity_id", i32::from(f.severity.ocsf_id()));
    set.insert("cves", f.cves());
    set.insert("last_seen", scope.seen_at);
    set.insert("last_run_id", &scope.run_id);
    set.insert("last_subjob_id", &scope.subjob_id);
    Ok(set)
}

/// One decision round. `Ok(Err(n))`: `n` guarded statements found their finding changed meanwhile.
async fn decide_and_write(
    db: &Mongo,
    scope: &FindingScope,
    by_key: &BTreeMap<String, &NewFinding>,
) -> StoreResult<Result<UpsertStats, i64>> {
    let keys: Vec<&str> = by_key.keys().map(String::as_str).collect();
    let current: Vec<Document> = db
        .findings
        .find(doc! { "_id": { "$in": &keys } })
        // The whole sub-document: a dotted projection comes back flat on the Mongo-wire test server.
        .projection(doc! { "status": 1, "suppression": 1 })
        // One reply for the whole batch (the default first batch is 101 documents, then `getMore`s).
        .batch_size(u32::try_from(keys.len()).unwrap_or(u32::MAX))
        .await?
        .try_collect()
        .await?;
    let mut states: HashMap<String, (FindingStatus, Option<i64>)> = HashMap::with_capacity(current.len());
    for d in current {
        let (Ok(id), Ok(status)) = (d.get_str("_id"), d.get_str("status")) else { continue };
        let Ok(status) = status.parse::<FindingStatus>() else {
            return Err(StoreError::Corrupt(format!("finding {id} has an unknown status `{status}`")));
        };
        // Any numeric type: a server may hand small integers back as int32.
        let until = d.get_document("suppression").ok().and_then(|s| match s.get("until") {
            Some(Bson::Int64(n)) => Some(*n),
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            Some(Bson::Double(f)) => Some(*f as i64),
            _ => None,
        });
        states.insert(id.to_string(), (status, until));
    }
    let at = scope.seen_at;
    let mut stats = UpsertStats::default();
    let mut updates = Vec::with_capacity(by_key.len());
    for (key, f) in by_key {
        let mut set = observed_fields(scope, f)?;
        match states.get(key) {
            None => {
                let status = FindingStatus::first(f.verdict);
                updates.push(Bson::Document(doc! {
                    "q": { "_id": key },
                    "u": {
                        "$set": set,
                        "$setOnInsert": {
                            "dedup_key": key,
                            "status": status.as_str(),
                            "status_changed_at": at,
                            "first_seen": at,
                            "first_run_id": &scope.run_id,
                            "first_subjob_id": &scope.subjob_id,
                            "reopen_count": 0_i64,
                        },
                    },
                    "upsert": true,
                }));
            }
            Some((old, until)) => {
                stats.matched += 1;
                let expired = *old == FindingStatus::Suppressed && until.is_some_and(|u| u <= at.millis());
                let next = old.on_seen(f.verdict, expired);
                let mut update = Document::new();
                if next != *old {
                    set.insert("status", next.as_str());
                    set.insert("status_changed_at", at);
                    match next {
                        FindingStatus::Reopened => {
                            stats.reopened += 1;
                            set.insert("reopened_at", at);
                            set.insert("reopened_run_id", &scope.run_id);
                            set.insert("reopened_subjob_id", &scope.subjob_id);
                            update.insert("$inc", doc! { "reopen_count": 1_i64 });
                        }
                        FindingStatus::Resolved => {
                            stats.resolved += 1;
                            set.insert(
                                "resolution",
                                auto_resolution(scope, &format!("{} reported the check passing", scope.tool))?,
                            );
                        }
                        _ => {}
                    }
                    if expired {
                        update.insert("$unset", doc! { "suppression": "" });
                    }
                }
                update.insert("$set", set);
                let mut q = doc! { "_id": key, "status": old.as_str() };
                if *old == FindingStatus::Suppressed {
                    q.insert("suppression.until", until.map(Bson::Int64).unwrap_or(Bson::Null));
                }
                updates.push(Bson::Document(doc! { "q": q, "u": update }));
            }
        }
    }
    let expected = updates.len() as i64;
    let reply = db
        .cloud_security_db()
        .run_command(doc! { "update": db.findings.name(), "updates": updates, "ordered": false })
        .await?;
    if let Ok(errors) = reply.get_array("writeErrors")
        && !errors.is_empty()
    {
        // Two writers inserted the same new finding at once: decide again (it exists now).
        let all_duplicates = errors
            .iter()
            .all(|e| e.as_document().and_then(|d| d.get("code")).and_then(Bson::as_i32).is_some_and(|c| c == 11000));
        if all_duplicates {
            return Ok(Err(errors.len() as i64));
        }
        return Err(StoreError::Database(format!(
            "{} finding(s) were not written: {:?}",
            errors.len(),
            errors.first()
        )));
    }
    let n = number(&reply, "n");
    stats.inserted = reply.get_array("upserted").map(|a| a.len() as i64).unwrap_or(0);
    if n < expected {
        return Ok(Err(expected - n));
    }
    Ok(Ok(stats))
}

fn auto_resolution(scope: &FindingScope, reason: &str) -> StoreResult<Bson> {
    Ok(bson::serialize_to_bson(&Resolution {
        kind: "auto".into(),
        reason: reason.to_string(),
        run_id: Some(scope.run_id.clone()),
        subjob_id: Some(scope.subjob_id.clone()),
        by: None,
        note: None,
        at: scope.seen_at,
    })?)
}

/// Resolves the active findings of the scope that a complete, successful SubJob did not report (their
/// last sighting is older than this SubJob's). Returns how many it resolved. Repeating it resolves
/// nothing more.
pub async fn resolve_unseen(db: &Mongo, scope: &FindingScope) -> StoreResult<i64> {
    let (filter, update) = unseen_resolution(scope)?;
    Ok(db.findings.update_many(filter, update).await?.modified_count as i64)
}

/// [`resolve_unseen`] for the scopes of many SubJobs in one round trip (one `update` command, a
/// statement each), then, in one more, how many findings each of those SubJobs has resolved in all
/// (unreported, or reported passing; by whichever attempt), counted from the documents. Returns the
/// counts in the order of `scopes`.
pub async fn resolve_unseen_many(db: &Mongo, scopes: &[FindingScope]) -> StoreResult<Vec<i64>> {
    if scopes.is_empty() {
        return Ok(Vec::new());
    }
    let mut updates = Vec::with_capacity(scopes.len());
    for scope in scopes {
        let (q, u) = unseen_resolution(scope)?;
        updates.push(Bson::Document(doc! { "q": q, "u": u, "multi": true }));
    }
    update_statements(db.cloud_security_db(), db.findings.name(), updates, false, "finding resolution(s)").await?;
    let ids: Vec<Bson> = scopes.iter().map(|s| Bson::from(&s.subjob_id)).collect();
    let rows: Vec<Document> = db
        .findings
        .aggregate(vec![
            doc! { "$match": { "status": "resolved", "resolution.subjob_id": { "$in": ids } } },
            doc! { "$group": { "_id": "$resolution.subjob_id", "n": { "$sum": 1 } } },
        ])
        .await?
        .try_collect()
        .await?;
    let counted: HashMap<&str, i64> =
        rows.iter().filter_map(|r| Some((r.get_str("_id").ok()?, number(r, "n")))).collect();
    Ok(scopes.iter().map(|s| counted.get(s.subjob_id.as_str()).copied().unwrap_or(0)).collect())
}

/// The filter and the update that resolve what a scope holds active and its SubJob did not report.
fn unseen_resolution(scope: &FindingScope) -> StoreResult<(Document, Document)> {
    let mut filter = scope.filter();
    filter.insert("status", doc! { "$in": ["open", "reopened"] });
    filter.insert("last_seen", doc! { "$lt": scope.seen_at });
    let reason = format!("no longer reported by {} in run {}", scope.tool, scope.run_id);
    let update = doc! { "$set": {
        "status": "resolved",
        "status_changed_at": scope.seen_at,
        "resolution": auto_resolution(scope, &reason)?,
    } };
    Ok((filter, update))
}

/// What a SubJob did to the lifecycle, counted from the documents (exact whatever attempt wrote them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleCounts {
    pub new: i64,
    pub resolved: i64,
    pub reopened: i64,
}

pub async fn lifecycle_counts(db: &Mongo, subjob: &SubJobId) -> StoreResult<LifecycleCounts> {
    Ok(LifecycleCounts {
        new: db.findings.count_documents(doc! { "first_subjob_id": subjob }).await? as i64,
        resolved: db.findings.count_documents(doc! { "status": "resolved", "resolution.subjob_id": subjob }).await?
            as i64,
        reopened: db.findings.count_documents(doc! { "reopened_subjob_id": subjob }).await? as i64,
    })
}

/// Whether the scope holds active findings (for the zero-findings guard's warning).
pub async fn scope_has_active(db: &Mongo, scope: &FindingScope) -> StoreResult<bool> {
    let mut filter = scope.filter();
    filter.insert("status", doc! { "$in": ["open", "reopened"] });
    Ok(db.findings.find_one(filter).projection(doc! { "_id": 1 }).await?.is_some())
}

/// Why a person's change to a finding was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    NotFound,
    /// The finding is not in a state the change applies to.
    Conflict(String),
}

/// A person resolves an active finding, with a note. A later scan that still sees it failing reopens it.
pub async fn resolve_manually(
    db: &Mongo,
    team: &TeamId,
    id: &str,
    by: &UserId,
    note: &str,
) -> StoreResult<Result<FindingDoc, ChangeError>> {
    let now = Timestamp::now();
    let resolution = Resolution {
        kind: "manual".into(),
        reason: "resolved by a person".into(),
        run_id: None,
        subjob_id: None,
        by: Some(by.clone()),
        note: Some(note.to_string()),
        at: now,
    };
    let updated = db
        .findings
        .find_one_and_update(
            doc! { "_id": id, "team_id": team, "status": { "$in": ["open", "reopened"] } },
            doc! { "$set": {
                "status": "resolved",
                "status_changed_at": now,
                "resolution": bson::serialize_to_bson(&resolution)?,
            } },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await?;
    finish_change(db, team, id, updated, "only an open or reopened finding can be resolved").await
}

/// A person suppresses a finding for a window (or for good). Scans keep updating it but leave it
/// suppressed until the window ends; the next scan after that treats it as new.
pub async fn suppress(
    db: &Mongo,
    team: &TeamId,
    id: &str,
    by: &UserId,
    reason: &str,
    until: Option<Timestamp>,
) -> StoreResult<Result<FindingDoc, ChangeError>> {
    let now = Timestamp::now();
    let s = Suppression { reason: reason.to_string(), until, by: by.clone(), at: now };
    let updated = db
        .findings
        .find_one_and_update(
            doc! { "_id": id, "team_id": team },
            doc! { "$set": {
                "status": "suppressed",
                "status_changed_at": now,
                "suppression": bson::serialize_to_bson(&s)?,
            } },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await?;
    finish_change(db, team, id, updated, "").await
}

/// A person lifts a suppression early: the finding returns to what its last sighting says.
pub async fn unsuppress(db: &Mongo, team: &TeamId, id: &str) -> StoreResult<Result<FindingDoc, ChangeError>> {
    let now = Timestamp::now();
    let Some(current) = get(db, team, id).await? else { return Ok(Err(ChangeError::NotFound)) };
    if current.status != FindingStatus::Suppressed {
        return Ok(Err(ChangeError::Conflict("the finding is not suppressed".into())));
    }
    let next = FindingStatus::first(current.finding.verdict);
    let updated = db
        .findings
        .find_one_and_update(
            doc! { "_id": id, "team_id": team, "status": "suppressed" },
            doc! {
                "$set": { "status": next.as_str(), "status_changed_at": now },
                "$unset": { "suppression": "" },
            },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await?;
    finish_change(db, team, id, updated, "the finding is not suppressed").await
}

async fn finish_change(
    db: &Mongo,
    team: &TeamId,
    id: &str,
    updated: Option<Document>,
    conflict: &str,
) -> StoreResult<Result<FindingDoc, ChangeError>> {
    match updated {
        Some(d) => Ok(Ok(bson::deserialize_from_document(d)?)),
        None => match get(db, team, id).await? {
            None => Ok(Err(ChangeError::NotFound)),
            Some(f) => Ok(Err(ChangeError::Conflict(format!("{conflict} (it is {})", f.status)))),
        },
    }
}

/// One finding of the team.
pub async fn get(db: &Mongo, team: &TeamId, id: &str) -> StoreResult<Option<FindingDoc>> {
    match db.findings.find_one(doc! { "_id": id, "team_id": team }).await? {
        Some(d) => Ok(Some(bson::deserialize_from_document(d)?)),
        None => Ok(None),
    }
}

/// The findings a run last reported (for the native scan result record), bounded.
pub async fn last_reported_by_run(db: &Mongo, run: &RunId, limit: i64) -> StoreResult<Vec<Document>> {
    let cursor = db
        .findings
        .find(doc! { "last_run_id": run })
        .projection(doc! {
            "title": 1, "severity": 1, "description": 1, "remediation": 1, "resource_uid": 1,
            "resource_type": 1, "rule_id": 1, "details": 1, "status": 1, "cves": 1,
        })
        .sort(doc! { "severity_id": -1, "_id": 1 })
        .limit(limit)
        .await?;
    Ok(cursor.try_collect().await?)
}

/// How many findings match a filter (for tests and summaries).
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
        // The stored identities of every finding depend on this exact value: SHA-256 of team, tool and
        // parts joined by U+001F, in lowercase hex.
        let fixed: TeamId = "team_00000000000000000000000000".parse().expect("team id");
        assert_eq!(
            dedup_key(&fixed, "nmap", &["127.0.0.1".into(), "80".into(), "tcp".into()]),
            "e948e8f7817866f48aeb372e53c895a1c887787f63c3c93be3845ba1d23300f8"
        );
    }

    #[test]
    fn deciding_twice_from_one_sighting_changes_nothing_more() {
        use crate::domain::finding::Verdict;
        for s in FindingStatus::ALL {
            for v in [Verdict::Fail, Verdict::Pass, Verdict::Manual] {
                for expired in [false, true] {
                    let once = s.on_seen(v, expired);
                    // After the first decision an expired suppression is gone, so the second sees none.
                    assert_eq!(once.on_seen(v, false), once, "{s} {v:?} expired={expired}");
                }
            }
        }
    }
}
