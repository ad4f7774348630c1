//! SubJobs: the unit of work, and every state transition as a compare-and-set.
//!
//! A transition is one `update` whose filter names the state it leaves (and, for a running SubJob, the
//! lease token of its owner). Two workers, a worker and the reaper, or a worker and a cancel can race: the
//! database lets exactly one of them win, and the losers see that they lost.

use std::time::Duration;

use crate::time::Timestamp;
use bson::{Document, doc};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use crate::db::Mongo;
use crate::domain::native::{ArtifactKind, NetworkScanType, PortList, WebScanProfile};
use crate::domain::provider::Provider;
use crate::domain::scan::{CanaryOptions, SubJobCounts, SubJobStatus, ToolId};
use crate::domain::severity::SeverityCounts;
use crate::error::{StoreError, StoreResult};
use crate::ids::{AccountId, RunId, SubJobId, TeamId};
use crate::queue::QueueKind;

/// What a native SubJob scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeSpec {
    /// A host, address or block (nmap), a URL (web scanners), an image reference or a path (Trivy).
    pub target: String,
    #[serde(default)]
    pub ports: Option<PortList>,
    /// The nmap profile (other tools ignore it).
    #[serde(default = "default_network_scan_type")]
    pub scan_type: NetworkScanType,
    /// The web scan profile (ZAP, Wapiti).
    #[serde(default)]
    pub web_profile: Option<WebScanProfile>,
    /// What a Trivy target is.
    #[serde(default)]
    pub artifact: Option<ArtifactKind>,
    /// Which of the tool's scanners to run (Trivy: `vuln`, `secret`, `misconfig`); empty: the tool's
    /// default for the target.
    #[serde(default)]
    pub scanners: Vec<String>,
}

fn default_network_scan_type() -> NetworkScanType {
    NetworkScanType::PortScan
}

/// A SubJob document (`cspm_orchestration.sub_jobs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubJobDoc {
    #[serde(rename = "_id")]
    pub id: SubJobId,
    pub run_id: RunId,
    pub team_id: TeamId,
    pub queue: QueueKind,
    pub tool: ToolId,
    pub region: String,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    #[serde(default)]
    pub provider: Option<Provider>,
    /// The provider's own id of the account (AWS account id, GCP project, Azure subscription).
    #[serde(default)]
    pub provider_account_id: Option<String>,
    #[serde(default)]
    pub native: Option<NativeSpec>,
    #[serde(default)]
    pub canary: Option<CanaryOptions>,
    pub status: SubJobStatus,
    /// Claims so far (each start of execution counts, including ones a crash cut short).
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_secs: i64,
    #[serde(default)]
    pub lease_owner: Option<String>,
    #[serde(default)]
    pub lease_token: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "crate::store::lenient_bool")]
    pub cancel_requested: bool,
    #[serde(default)]
    pub dispatched_at: Option<Timestamp>,
    #[serde(default)]
    pub dispatch_token: Option<String>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub findings_count: i64,
    #[serde(default)]
    pub new_findings: i64,
    #[serde(default)]
    pub severity: SeverityCounts,
    /// Why the SubJob failed, timed out or was cancelled: a message a person can act on.
    #[serde(default)]
    pub error: Option<String>,
    /// The last interruption (a lost worker, a hand-back), kept for diagnosis while the SubJob goes on.
    #[serde(default)]
    pub last_interruption: Option<String>,
    /// How many SubJobs its run has (so that a worker can tell, from a counter, that its run is done).
    #[serde(default)]
    pub run_size: i64,
}

impl SubJobDoc {
    /// A new SubJob of a run: queued, never dispatched or claimed, created now, three attempts, a run of
    /// one; no account, target, canary options or time limit (`timeout_secs` 0): callers set what their
    /// kind needs with struct-update syntax.
    pub fn queued(run_id: RunId, team_id: TeamId, queue: QueueKind, tool: ToolId, region: String) -> Self {
        Self {
            id: SubJobId::new(),
            run_id,
            team_id,
            queue,
            tool,
            region,
            account_id: None,
            provider: None,
            provider_account_id: None,
            native: None,
            canary: None,
            status: SubJobStatus::Queued,
            attempts: 0,
            max_attempts: 3,
            timeout_secs: 0,
            lease_owner: None,
            lease_token: None,
            lease_expires_at: None,
            cancel_requested: false,
            dispatched_at: None,
            dispatch_token: None,
            created_at: Timestamp::now(),
            started_at: None,
            finished_at: None,
            findings_count: 0,
            new_findings: 0,
            severity: SeverityCounts::default(),
            error: None,
            last_interruption: None,
            run_size: 1,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1) as u64)
    }
}

pub async fn insert_many(db: &Mongo, jobs: &[SubJobDoc]) -> StoreResult<()> {
    // Large runs go in slices to stay well under the 16 MB command limit.
    for chunk in jobs.chunks(1_000) {
        let docs = chunk.iter().map(bson::serialize_to_document).collect::<Result<Vec<Document>, _>>()?;
        db.sub_jobs.insert_many(docs).ordered(false).await?;
    }
    Ok(())
}

pub async fn get(db: &Mongo, id: &SubJobId) -> StoreResult<Option<SubJobDoc>> {
    let found = db.sub_jobs.find_one(doc! { "_id": id }).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

/// Every SubJob of a run, in creation order.
pub async fn list_for_run(db: &Mongo, run_id: &RunId) -> StoreResult<Vec<SubJobDoc>> {
    let cursor = db.sub_jobs.find(doc! { "run_id": run_id }).sort(doc! { "_id": 1 }).await?;
    let docs: Vec<Document> = cursor.try_collect().await?;
    docs.into_iter().map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).collect()
}

/// The SubJob states of a run, counted.
pub async fn count_for_run(db: &Mongo, run_id: &RunId) -> StoreResult<SubJobCounts> {
    let pipeline =
        vec![doc! { "$match": { "run_id": run_id } }, doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } }];
    let rows: Vec<Document> = db.sub_jobs.aggregate(pipeline).await?.try_collect().await?;
    let mut counts = SubJobCounts::default();
    for row in rows {
        let status: SubJobStatus = bson::deserialize_from_bson(row.get("_id").cloned().unwrap_or(bson::Bson::Null))?;
        counts.add(status, number(&row, "n") as u64);
    }
    Ok(counts)
}

/// Whether any SubJob of the run is still queued or running (one indexed lookup).
pub async fn run_has_unfinished(db: &Mongo, run_id: &RunId) -> StoreResult<bool> {
    let found = db
        .sub_jobs
        .find_one(doc! { "run_id": run_id, "status": { "$in": ["queued", "running"] } })
        .projection(doc! { "_id": 1 })
        .await?;
    Ok(found.is_some())
}

/// A lease: who runs the SubJob, proven by a token only the owner knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub token: String,
}

/// The outcome of trying to start a SubJob.
#[derive(Debug)]
pub enum Claim {
    /// We own it now; run it.
    Claimed(Box<SubJobDoc>, Lease),
    /// Another worker holds a live lease (a duplicate delivery): do nothing.
    Busy { owner: String },
    /// It already reached a terminal state (a redelivery after completion): do nothing.
    Finished(SubJobStatus),
    /// It was queued with a cancel pending; this claim ended it as cancelled.
    CancelledNow,
    /// A crashed worker's lease expired and the attempts are used up; it has now been failed.
    Exhausted,
    /// No such SubJob (deleted by retention, or a message from another fleet): drop the message.
    Missing,
}

fn lease_fields(owner: &str, token: &str, now: Timestamp, lease: Duration) -> Document {
    doc! {
        "status": "running",
        "lease_owner": owner,
        "lease_token": token,
        "lease_expires_at": now.plus(lease),
        "started_at": now,
        "updated_at": now,
    }
}

/// The fast path of the claim, for many SubJobs at once: every one of `ids` that is queued (and not being
/// cancelled) becomes `running` under one lease token, with one more attempt. Returns those claimed;
/// the others need [`claim`]. One round trip for one SubJob, two for a batch (an `update_many` and the
/// `find` of what it claimed), whatever the batch size.
pub async fn claim_queued(
    db: &Mongo,
    ids: &[SubJobId],
    owner: &str,
    lease: Duration,
) -> StoreResult<Vec<(SubJobDoc, Lease)>> {
    let now = Timestamp::now();
    let token = ulid::Ulid::generate().to_string();
    let update = doc! { "$set": lease_fields(owner, &token, now, lease), "$inc": { "attempts": 1 } };
    let lease_of = || Lease { owner: owner.to_string(), token: token.clone() };
    let docs: Vec<Document> = match ids {
        [] => return Ok(Vec::new()),
        [id] => db
            .sub_jobs
            .find_one_and_update(doc! { "_id": id, "status": "queued", "cancel_requested": false }, update)
            .return_document(ReturnDocument::After)
            .await?
            .into_iter()
            .collect(),
        _ => {
            let list: Vec<bson::Bson> = ids.iter().map(bson::Bson::from).collect();
            db.sub_jobs
                .update_many(
                    doc! { "_id": { "$in": list.clone() }, "status": "queued", "cancel_requested": false },
                    update,
                )
                .await?;
            db.sub_jobs.find(doc! { "_id": { "$in": list }, "lease_token": &token }).await?.try_collect().await?
        }
    };
    docs.into_iter().map(|d| Ok((bson::deserialize_from_document::<SubJobDoc>(d)?, lease_of()))).collect()
}

/// Starts a SubJob: `queued → running` with a fresh lease and one more attempt; or, for a SubJob whose
/// owner stopped renewing its lease, takes it over (counting the attempt) or fails it when the attempts
/// are used up.
pub async fn claim(db: &Mongo, id: &SubJobId, owner: &str, lease: Duration) -> StoreResult<Claim> {
    if let Some((job, l)) = claim_queued(db, std::slice::from_ref(id), owner, lease).await?.pop() {
        return Ok(Claim::Claimed(Box::new(job), l));
    }
    claim_contended(db, id, owner, lease).await
}

/// The claim of a SubJob that was not simply queued: finished, cancelled, or running under a lease
/// (live: a duplicate delivery; lapsed: its worker died).
pub async fn claim_contended(db: &Mongo, id: &SubJobId, owner: &str, lease: Duration) -> StoreResult<Claim> {
    let now = Timestamp::now();
    let Some(current) = get(db, id).await? else {
        return Ok(Claim::Missing);
    };
    match current.status {
        s if s.is_terminal() => Ok(Claim::Finished(s)),
        SubJobStatus::Queued if current.cancel_requested => {
            // A cancel is pending on it: finish it as cancelled.
            Ok(if cancel_queued_one(db, id).await? {
                Claim::CancelledNow
            } else {
                Claim::Finished(SubJobStatus::Cancelled)
            })
        }
        // Queued again in between (handed back or re-queued): claim it normally.
        SubJobStatus::Queued => Box::pin(claim(db, id, owner, lease)).await,
        _ => {
            let expired = current.lease_expires_at.is_none_or(|t| t < now);
            if !expired {
                return Ok(Claim::Busy { owner: current.lease_owner.unwrap_or_default() });
            }
            let old_token = current.lease_token.clone().unwrap_or_default();
            if current.cancel_requested {
                // Its worker died while the run was being cancelled: end it as the user asked.
                let ended = end_abandoned(db, id, &old_token, SubJobStatus::Cancelled, CANCELLED_WORKER_LOST).await?;
                return Ok(if ended { Claim::CancelledNow } else { Claim::Busy { owner: String::new() } });
            }
            if current.attempts >= current.max_attempts {
                let reason = lost_worker_reason(&current);
                let failed = end_abandoned(db, id, &old_token, SubJobStatus::Failed, &reason).await?;
                return Ok(if failed { Claim::Exhausted } else { Claim::Busy { owner: String::new() } });
            }
            let token = ulid::Ulid::generate().to_string();
            let mut takeover = lease_fields(owner, &token, now, lease);
            takeover.insert("last_interruption", lost_worker_note(&current));
            let taken = db
                .sub_jobs
                .find_one_and_update(
                    doc! { "_id": id, "status": "running", "lease_token": &old_token, "cancel_requested": false },
                    doc! { "$set": takeover, "$inc": { "attempts": 1 } },
                )
                .return_document(ReturnDocument::After)
                .await?;
            match taken {
                Some(d) => {
                    let job: SubJobDoc = bson::deserialize_from_document(d)?;
                    Ok(Claim::Claimed(Box::new(job), Lease { owner: owner.to_string(), token }))
                }
                None => Ok(Claim::Busy { owner: String::new() }),
            }
        }
    }
}

fn lost_worker_note(job: &SubJobDoc) -> String {
    format!(
        "worker {} stopped renewing its lease during attempt {} of {}",
        job.lease_owner.as_deref().unwrap_or("?"),
        job.attempts,
        job.max_attempts
    )
}

fn lost_worker_reason(job: &SubJobDoc) -> String {
    format!(
        "the SubJob's worker was lost {} times (last: {}, which stopped renewing its lease); giving up after {} attempts. \
         A job that kills its worker repeatedly usually exhausts memory or crashes the scanner: check the worker's logs",
        job.attempts,
        job.lease_owner.as_deref().unwrap_or("?"),
        job.max_attempts
    )
}

/// The result of renewing a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours; `cancel` says whether someone asked for the SubJob to stop.
    Held { cancel: bool },
    /// No longer ours (reaped after a stall, or finished elsewhere): stop at once and write nothing more.
    Lost,
}

pub async fn renew(db: &Mongo, id: &SubJobId, lease: &Lease, duration: Duration) -> StoreResult<Renewal> {
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .find_one_and_update(
            doc! { "_id": id, "status": "running", "lease_token": &lease.token },
            doc! { "$set": { "lease_expires_at": now.plus(duration), "updated_at": now } },
        )
        .projection(doc! { "cancel_requested": 1 })
        .return_document(ReturnDocument::After)
        .await?;
    Ok(match r {
        Some(d) => Renewal::Held { cancel: crate::store::flag(&d, "cancel_requested") },
        None => Renewal::Lost,
    })
}

/// What a finished SubJob reports.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub findings_count: i64,
    pub new_findings: i64,
    /// Findings this SubJob resolved (not reported any more, or reported passing).
    pub resolved_findings: i64,
    /// Resolved findings this SubJob saw failing again.
    pub reopened_findings: i64,
    pub severity: SeverityCounts,
    pub error: Option<String>,
    /// Something a person should know about a SubJob that completed (the zero-findings guard held).
    pub warning: Option<String>,
}

/// One SubJob's end, as its owner reports it.
#[derive(Debug, Clone)]
pub struct Finishing {
    pub id: SubJobId,
    pub lease: Lease,
    pub status: SubJobStatus,
    pub outcome: Outcome,
}

/// `running → completed | failed | timed_out | cancelled`, once, by the lease owner. Returns whether this
/// call made the transition.
pub async fn finish(
    db: &Mongo,
    id: &SubJobId,
    lease: &Lease,
    status: SubJobStatus,
    outcome: &Outcome,
) -> StoreResult<bool> {
    let one = Finishing { id: id.clone(), lease: lease.clone(), status, outcome: outcome.clone() };
    Ok(finish_many(db, std::slice::from_ref(&one)).await?.first().copied().unwrap_or(false))
}

/// [`finish`] for many SubJobs in one round trip (one `update` command, a statement each, each guarded by
/// its own lease token). Returns, in order, whether each transition was made by this call: when the
/// server reports fewer changes than statements, the batch's own marker tells which ones.
pub async fn finish_many(db: &Mongo, items: &[Finishing]) -> StoreResult<Vec<bool>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let now = Timestamp::now();
    let marker = ulid::Ulid::generate().to_string();
    let mut updates = Vec::with_capacity(items.len());
    for f in items {
        debug_assert!(f.status.is_terminal());
        updates.push(bson::Bson::Document(doc! {
            "q": { "_id": &f.id, "status": "running", "lease_token": &f.lease.token },
            "u": { "$set": {
                "status": f.status.as_str(),
                "finished_at": now,
                "updated_at": now,
                "findings_count": f.outcome.findings_count,
                "new_findings": f.outcome.new_findings,
                "resolved_findings": f.outcome.resolved_findings,
                "reopened_findings": f.outcome.reopened_findings,
                "severity": bson::serialize_to_bson(&f.outcome.severity)?,
                "error": f.outcome.error.clone(),
                "warning": f.outcome.warning.clone(),
                "warnings_count": i64::from(f.outcome.warning.is_some()),
                "lease_token": bson::Bson::Null,
                "lease_expires_at": bson::Bson::Null,
                "finish_marker": &marker,
            } },
        }));
    }
    let reply =
        crate::store::update_statements(db.sub_jobs_db(), db.sub_jobs.name(), updates, false, "sub-job update(s)")
            .await?;
    if number(&reply, "nModified") == items.len() as i64 {
        return Ok(vec![true; items.len()]);
    }
    let list: Vec<bson::Bson> = items.iter().map(|f| bson::Bson::from(&f.id)).collect();
    let done: Vec<Document> = db
        .sub_jobs
        .find(doc! { "_id": { "$in": list }, "finish_marker": &marker })
        .projection(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?;
    let done: std::collections::HashSet<String> =
        done.iter().filter_map(|d| d.get_str("_id").ok().map(str::to_string)).collect();
    Ok(items.iter().map(|f| done.contains(f.id.as_str())).collect())
}

/// Fails a SubJob whose document cannot be read (a hand-edited document, or one written by a newer
/// version of the fleet), so that its message is not retried for ever. Returns whether it was still
/// active.
pub async fn fail_unreadable(db: &Mongo, id: &SubJobId, why: &str) -> StoreResult<bool> {
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .update_one(
            doc! { "_id": id, "status": { "$in": ["queued", "running"] } },
            doc! { "$set": {
                "status": "failed",
                "error": format!("the sub-job's stored document cannot be read ({why}); it was failed rather than retried"),
                "finished_at": now,
                "updated_at": now,
                "lease_token": bson::Bson::Null,
                "lease_expires_at": bson::Bson::Null,
            } },
        )
        .await?;
    Ok(r.modified_count > 0)
}

const CANCELLED_WORKER_LOST: &str = "cancelled (its worker stopped before it could stop the scan)";

/// What a hand-back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBack {
    /// Queued again for another worker.
    Requeued,
    /// A cancel was pending: it ended `cancelled` instead.
    Cancelled,
    /// It was no longer ours.
    Lost,
}

/// `running → queued` by the owner (graceful shutdown): the attempt is not counted against the SubJob,
/// and the dispatcher sends it to another worker. A SubJob whose run is being cancelled ends
/// `cancelled` instead (a queued SubJob with a cancel pending would never be dispatched again).
pub async fn hand_back(db: &Mongo, id: &SubJobId, lease: &Lease, why: &str) -> StoreResult<HandBack> {
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .update_one(
            doc! { "_id": id, "status": "running", "lease_token": &lease.token, "cancel_requested": false },
            doc! {
                "$set": {
                    "status": "queued",
                    "updated_at": now,
                    "last_interruption": why,
                    "lease_owner": bson::Bson::Null,
                    "lease_token": bson::Bson::Null,
                    "lease_expires_at": bson::Bson::Null,
                    "dispatched_at": bson::Bson::Null,
                    "dispatch_token": bson::Bson::Null,
                },
                "$inc": { "attempts": -1 },
            },
        )
        .await?;
    if r.modified_count == 1 {
        return Ok(HandBack::Requeued);
    }
    Ok(if end_abandoned(db, id, &lease.token, SubJobStatus::Cancelled, "cancelled while running").await? {
        HandBack::Cancelled
    } else {
        HandBack::Lost
    })
}

/// Ends a running SubJob whose owner vanished (or is handing it back) as `failed` or `cancelled`, guarded
/// by that owner's token.
async fn end_abandoned(
    db: &Mongo,
    id: &SubJobId,
    old_token: &str,
    status: SubJobStatus,
    reason: &str,
) -> StoreResult<bool> {
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .update_one(
            doc! { "_id": id, "status": "running", "lease_token": old_token },
            doc! {
                "$set": {
                    "status": status.as_str(),
                    "error": reason,
                    "finished_at": now,
                    "updated_at": now,
                    "lease_token": bson::Bson::Null,
                    "lease_expires_at": bson::Bson::Null,
                }
            },
        )
        .await?;
    Ok(r.modified_count == 1)
}

/// What the reaper did with one SubJob whose lease expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaped {
    /// Queued again (the attempt stays counted).
    Requeued(RunId),
    /// Ended: failed (attempts used up) or cancelled (a cancel was pending). Count it and roll up.
    Ended(RunId),
}

/// Finds running SubJobs whose owner stopped renewing its lease, and re-queues them (the attempt stays
/// counted) or fails them when their attempts are used up. Safe to run in every replica at once.
pub async fn reap_expired_leases(db: &Mongo, limit: i64) -> StoreResult<Vec<Reaped>> {
    let now = Timestamp::now();
    let cursor =
        db.sub_jobs.find(doc! { "status": "running", "lease_expires_at": { "$lt": now } }).limit(limit).await?;
    let docs: Vec<Document> = cursor.try_collect().await?;
    let mut out = Vec::new();
    for d in docs {
        let job: SubJobDoc = bson::deserialize_from_document(d)?;
        let token = job.lease_token.clone().unwrap_or_default();
        let ending = if job.cancel_requested {
            Some((SubJobStatus::Cancelled, CANCELLED_WORKER_LOST.to_string()))
        } else if job.attempts >= job.max_attempts {
            Some((SubJobStatus::Failed, lost_worker_reason(&job)))
        } else {
            None
        };
        if let Some((status, reason)) = ending {
            if end_abandoned(db, &job.id, &token, status, &reason).await? {
                out.push(Reaped::Ended(job.run_id.clone()));
            }
            continue;
        }
        let r = db
            .sub_jobs
            .update_one(
                doc! { "_id": &job.id, "status": "running", "lease_token": &token },
                doc! {
                    "$set": {
                        "status": "queued",
                        "updated_at": now,
                        "last_interruption": lost_worker_note(&job),
                        "lease_owner": bson::Bson::Null,
                        "lease_token": bson::Bson::Null,
                        "lease_expires_at": bson::Bson::Null,
                        "dispatched_at": bson::Bson::Null,
                        "dispatch_token": bson::Bson::Null,
                    }
                },
            )
            .await?;
        if r.modified_count == 1 {
            out.push(Reaped::Requeued(job.run_id.clone()));
        }
    }
    Ok(out)
}

/// Cancels a run's SubJobs: queued ones become `cancelled` at once (they never start); running ones are
/// flagged, and their workers stop them at the next lease renewal. Returns (cancelled, flagged).
pub async fn cancel_run(db: &Mongo, run_id: &RunId) -> StoreResult<(u64, u64)> {
    let now = Timestamp::now();
    // Flag first, so that a SubJob claimed between the two updates is not missed.
    let flagged = db
        .sub_jobs
        .update_many(
            doc! { "run_id": run_id, "status": { "$in": ["queued", "running"] } },
            doc! { "$set": { "cancel_requested": true, "updated_at": now } },
        )
        .await?;
    let cancelled = db
        .sub_jobs
        .update_many(
            doc! { "run_id": run_id, "status": "queued" },
            doc! { "$set": {
                "status": "cancelled",
                "error": "cancelled before it started",
                "finished_at": now,
                "updated_at": now,
            } },
        )
        .await?;
    Ok((cancelled.modified_count, flagged.modified_count.saturating_sub(cancelled.modified_count)))
}

/// Fails the run's SubJobs that are still waiting to start (a stuck run), with `reason`. A worker that
/// later receives one of their messages finds it no longer queued and drops it.
pub async fn fail_waiting(db: &Mongo, run_id: &RunId, reason: &str) -> StoreResult<u64> {
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .update_many(
            doc! { "run_id": run_id, "status": "queued" },
            doc! { "$set": { "status": "failed", "error": reason, "finished_at": now, "updated_at": now } },
        )
        .await?;
    Ok(r.modified_count)
}

async fn cancel_queued_one(db: &Mongo, id: &SubJobId) -> StoreResult<bool> {
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .update_one(
            doc! { "_id": id, "status": "queued", "cancel_requested": true },
            doc! { "$set": {
                "status": "cancelled",
                "error": "cancelled before it started",
                "finished_at": now,
                "updated_at": now,
            } },
        )
        .await?;
    Ok(r.modified_count == 1)
}

/// Reads a number that MongoDB may have stored as Int32, Int64 or Double.
pub(crate) fn number(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Int64(n)) => *n,
        Some(bson::Bson::Double(f)) => *f as i64,
        _ => 0,
    }
}
