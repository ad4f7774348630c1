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
use crate::domain::native::{NetworkScanType, PortList};
use crate::domain::provider::Provider;
use crate::domain::scan::{CanaryOptions, SubJobCounts, SubJobStatus, ToolId};
use crate::domain::severity::SeverityCounts;
use crate::error::{StoreError, StoreResult};
use crate::ids::{AccountId, RunId, SubJobId, TeamId};
use crate::queue::QueueKind;

/// What a native SubJob scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeSpec {
    pub target: String,
    pub ports: Option<PortList>,
    pub scan_type: NetworkScanType,
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

/// Starts a SubJob: `queued → running` with a fresh lease and one more attempt; or, for a SubJob whose
/// owner stopped renewing its lease, takes it over (counting the attempt) or fails it when the attempts
/// are used up.
pub async fn claim(db: &Mongo, id: &SubJobId, owner: &str, lease: Duration) -> StoreResult<Claim> {
    let now = Timestamp::now();
    let token = ulid::Ulid::generate().to_string();
    let set_lease = doc! {
        "status": "running",
        "lease_owner": owner,
        "lease_token": &token,
        "lease_expires_at": now.plus(lease),
        "started_at": now,
        "updated_at": now,
    };
    let fresh = db
        .sub_jobs
        .find_one_and_update(
            doc! { "_id": id, "status": "queued", "cancel_requested": false },
            doc! { "$set": set_lease.clone(), "$inc": { "attempts": 1 } },
        )
        .return_document(ReturnDocument::After)
        .await?;
    if let Some(d) = fresh {
        let job: SubJobDoc = bson::deserialize_from_document(d)?;
        return Ok(Claim::Claimed(Box::new(job), Lease { owner: owner.to_string(), token }));
    }

    let Some(current) = get(db, id).await? else {
        return Ok(Claim::Missing);
    };
    match current.status {
        s if s.is_terminal() => Ok(Claim::Finished(s)),
        SubJobStatus::Queued => {
            // Queued but not claimable: a cancel is pending on it. Finish it as cancelled.
            Ok(if cancel_queued_one(db, id).await? {
                Claim::CancelledNow
            } else {
                Claim::Finished(SubJobStatus::Cancelled)
            })
        }
        _ => {
            let expired = current.lease_expires_at.is_none_or(|t| t < now);
            if !expired {
                return Ok(Claim::Busy { owner: current.lease_owner.unwrap_or_default() });
            }
            let old_token = current.lease_token.clone().unwrap_or_default();
            if current.attempts >= current.max_attempts {
                let reason = lost_worker_reason(&current);
                let failed = fail_abandoned(db, id, &old_token, &reason).await?;
                return Ok(if failed { Claim::Exhausted } else { Claim::Busy { owner: String::new() } });
            }
            let mut takeover = set_lease;
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
    pub severity: SeverityCounts,
    pub error: Option<String>,
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
    debug_assert!(status.is_terminal());
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .update_one(
            doc! { "_id": id, "status": "running", "lease_token": &lease.token },
            doc! {
                "$set": {
                    "status": status.as_str(),
                    "finished_at": now,
                    "updated_at": now,
                    "findings_count": outcome.findings_count,
                    "new_findings": outcome.new_findings,
                    "severity": bson::serialize_to_bson(&outcome.severity)?,
                    "error": outcome.error.clone(),
                    "lease_token": bson::Bson::Null,
                    "lease_expires_at": bson::Bson::Null,
                }
            },
        )
        .await?;
    Ok(r.modified_count == 1)
}

/// `running → queued` by the owner (graceful shutdown): the attempt is not counted against the SubJob,
/// and the dispatcher sends it to another worker.
pub async fn hand_back(db: &Mongo, id: &SubJobId, lease: &Lease, why: &str) -> StoreResult<bool> {
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .update_one(
            doc! { "_id": id, "status": "running", "lease_token": &lease.token },
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
    Ok(r.modified_count == 1)
}

/// Fails a running SubJob whose owner vanished, guarded by the vanished owner's token.
async fn fail_abandoned(db: &Mongo, id: &SubJobId, old_token: &str, reason: &str) -> StoreResult<bool> {
    let now = Timestamp::now();
    let r = db
        .sub_jobs
        .update_one(
            doc! { "_id": id, "status": "running", "lease_token": old_token },
            doc! {
                "$set": {
                    "status": "failed",
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
    Requeued(RunId),
    Failed(RunId),
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
        if job.attempts >= job.max_attempts {
            if fail_abandoned(db, &job.id, &token, &lost_worker_reason(&job)).await? {
                out.push(Reaped::Failed(job.run_id.clone()));
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
