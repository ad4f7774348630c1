//! Schedules (`cspm_orchestration.schedules`) and their fires (`cspm_orchestration.schedule_fires`).
//!
//! A fire is one moment a schedule came due. Its id is deterministic (`<schedule>:<due time>`), so that
//! however many scheduler replicas see the schedule due, one fire document exists; the run it starts has
//! an id derived from the fire, so that a fire processed twice (a replica paused past its lease) starts
//! one run. Counters on the schedule are applied once per fire and step through an idempotency marker.

use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::db::Mongo;
use crate::domain::scan::{ScanType, Tool};
use crate::domain::schedule::{OverlapPolicy, Trigger, default_skip_window};
use crate::error::{StoreError, StoreResult};
use crate::ids::{AccountId, RunId, ScheduleId, TeamId, UserId};
use crate::store::subjobs::NativeSpec;
use crate::time::Timestamp;

/// What a schedule scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleTarget {
    /// A cloud account, with the scan's type, regions and tools (empty: the account's own, as a
    /// manual scan would).
    CloudAccount {
        account_id: AccountId,
        scan_type: ScanType,
        #[serde(default)]
        regions: Vec<String>,
        #[serde(default)]
        tools: Vec<String>,
    },
    /// A native target (host, URL, image, path) scanned by one tool, as checked when the schedule was
    /// made (host and URL targets are checked again at every fire).
    Native { tool: Tool, scan_type: String, spec: NativeSpec },
}

impl ScheduleTarget {
    /// The cloud account scanned, if the target is one.
    pub fn account_id(&self) -> Option<&AccountId> {
        match self {
            ScheduleTarget::CloudAccount { account_id, .. } => Some(account_id),
            ScheduleTarget::Native { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    Active,
    Paused,
    /// A one-time schedule that fired.
    Completed,
    /// A one-time schedule whose time passed while no scheduler ran (beyond the catch-up window).
    Expired,
}

impl ScheduleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleStatus::Active => "active",
            ScheduleStatus::Paused => "paused",
            ScheduleStatus::Completed => "completed",
            ScheduleStatus::Expired => "expired",
        }
    }
}

/// The history of a schedule: how its fires went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStats {
    /// Fires that started a scan.
    #[serde(default)]
    pub started: i64,
    /// Fires skipped (scanned recently, previous scan active, target gone).
    #[serde(default)]
    pub skipped: i64,
    /// Fire times that passed while no scheduler ran and were not caught up.
    #[serde(default)]
    pub missed: i64,
    /// Started scans that completed (fully or partially).
    #[serde(default)]
    pub succeeded: i64,
    #[serde(default)]
    pub failed: i64,
    #[serde(default)]
    pub cancelled: i64,
}

/// A schedule document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleDoc {
    #[serde(rename = "_id")]
    pub id: ScheduleId,
    pub team_id: TeamId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub target: ScheduleTarget,
    /// The account of a cloud-account target (top level, for queries and indexes).
    #[serde(default)]
    pub account_id: Option<AccountId>,
    pub trigger: Trigger,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// A fire is skipped when the account had a qualifying scan this recently (seconds; none: never).
    #[serde(default)]
    pub skip_if_scanned_within_secs: Option<i64>,
    pub status: ScheduleStatus,
    #[serde(default)]
    pub paused_reason: Option<String>,
    #[serde(default)]
    pub paused_at: Option<Timestamp>,
    /// Paused by the fleet (consecutive failures) rather than by a person: resumed by a successful
    /// manual scan or new credentials.
    #[serde(default, deserialize_with = "crate::store::lenient_bool")]
    pub auto_paused: bool,
    /// The next due time, or none when the schedule fires no more.
    #[serde(default)]
    pub next_fire_at: Option<Timestamp>,
    #[serde(default)]
    pub last_fire_at: Option<Timestamp>,
    #[serde(default)]
    pub last_run_id: Option<RunId>,
    #[serde(default)]
    pub last_outcome: Option<String>,
    #[serde(default)]
    pub last_outcome_at: Option<Timestamp>,
    #[serde(default)]
    pub stats: ScheduleStats,
    /// What made it: `user`, or `account_default` for the two schedules made with an account.
    pub origin: String,
    #[serde(default)]
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The state of one fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireStatus {
    /// Due and not handled yet (or its handler died; another replica takes it when its lease ends).
    Pending,
    /// Waiting for the previous scan of the target to end (overlap `queue` or `cancel_previous`).
    Waiting,
    /// Its scan is running.
    Started,
    Skipped,
    /// It could not start a scan (the target no longer passes checks, too many sub-jobs...).
    Failed,
    /// Its scan ended: completed or partial.
    Succeeded,
    /// Its scan failed.
    ScanFailed,
    /// Its scan was cancelled.
    Cancelled,
}

impl FireStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FireStatus::Pending => "pending",
            FireStatus::Waiting => "waiting",
            FireStatus::Started => "started",
            FireStatus::Skipped => "skipped",
            FireStatus::Failed => "failed",
            FireStatus::Succeeded => "succeeded",
            FireStatus::ScanFailed => "scan_failed",
            FireStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, FireStatus::Pending | FireStatus::Waiting | FireStatus::Started)
    }
}

/// A fire document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FireDoc {
    /// `<schedule id>:<due time in ms>`.
    #[serde(rename = "_id")]
    pub id: String,
    pub schedule_id: ScheduleId,
    pub team_id: TeamId,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    /// The fire time this fire is for (the latest that had passed when it was taken).
    pub fire_at: Timestamp,
    /// Earlier fire times that passed during downtime and were not run.
    #[serde(default)]
    pub missed_before: i64,
    pub status: FireStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub run_id: Option<RunId>,
    #[serde(default)]
    pub lease_owner: Option<String>,
    #[serde(default)]
    pub lease_until: Option<Timestamp>,
    #[serde(default)]
    pub attempts: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When its scan ended (outcome fires).
    #[serde(default)]
    pub run_finished_at: Option<Timestamp>,
}

impl FireDoc {
    pub fn key(schedule: &ScheduleId, due: Timestamp) -> String {
        format!("{schedule}:{}", due.millis())
    }

    /// The id of the run this fire starts: derived from the fire, so that two replicas handling the
    /// same fire make the same run (and the second insert is refused).
    pub fn run_id(&self) -> RunId {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(self.id.as_bytes());
        let mut random = [0u8; 16];
        random[6..].copy_from_slice(&digest[..10]);
        RunId::from_ulid(ulid::Ulid::from_parts(self.fire_at.millis().max(0) as u64, u128::from_be_bytes(random)))
    }
}

fn decode<T: serde::de::DeserializeOwned>(d: Document) -> StoreResult<T> {
    bson::deserialize_from_document(d).map_err(StoreError::from)
}

/// A new schedule, active, its first fire computed from `now`.
#[allow(clippy::too_many_arguments)]
pub fn new_schedule(
    id: ScheduleId,
    team: TeamId,
    name: String,
    target: ScheduleTarget,
    trigger: Trigger,
    overlap: OverlapPolicy,
    origin: &str,
    by: Option<UserId>,
    now: Timestamp,
) -> ScheduleDoc {
    let account_id = target.account_id().cloned();
    let skip = match &target {
        ScheduleTarget::CloudAccount { scan_type, .. } => default_skip_window(*scan_type).map(|d| d.as_secs() as i64),
        ScheduleTarget::Native { .. } => None,
    };
    ScheduleDoc {
        id,
        team_id: team,
        name,
        description: None,
        next_fire_at: trigger.first_at_or_after(now),
        target,
        account_id,
        trigger,
        overlap,
        skip_if_scanned_within_secs: skip,
        status: ScheduleStatus::Active,
        paused_reason: None,
        paused_at: None,
        auto_paused: false,
        last_fire_at: None,
        last_run_id: None,
        last_outcome: None,
        last_outcome_at: None,
        stats: ScheduleStats::default(),
        origin: origin.to_string(),
        created_by: by,
        created_at: now,
        updated_at: now,
    }
}

pub async fn insert(db: &Mongo, s: &ScheduleDoc) -> StoreResult<()> {
    db.schedules.insert_one(bson::serialize_to_document(s)?).await?;
    Ok(())
}

/// The two schedules every new cloud account gets (unless the operator turns it off): a daily
/// incremental scan at 02:00 UTC and a weekly full scan on Sunday at 03:00 UTC. Their ids derive from the
/// account's, so that making them twice (a retried request) makes them once.
pub async fn create_account_defaults(
    db: &Mongo,
    team: &TeamId,
    account: &AccountId,
    by: Option<UserId>,
    now: Timestamp,
) -> StoreResult<Vec<ScheduleDoc>> {
    let base = account.ulid();
    let mut made = Vec::new();
    for (n, name, scan_type, cron) in [
        (1u128, "Daily Cloud Incremental Scan", ScanType::Incremental, "0 2 * * *"),
        (2u128, "Weekly Cloud Full Scan", ScanType::Full, "0 3 * * 0"),
    ] {
        let id = ScheduleId::from_ulid(ulid::Ulid::from_parts(base.timestamp_ms(), base.random() ^ n));
        let s = new_schedule(
            id,
            team.clone(),
            name.to_string(),
            ScheduleTarget::CloudAccount {
                account_id: account.clone(),
                scan_type,
                regions: Vec::new(),
                tools: Vec::new(),
            },
            Trigger::Cron { expression: cron.to_string() },
            OverlapPolicy::Skip,
            "account_default",
            by.clone(),
            now,
        );
        match insert(db, &s).await {
            Ok(()) | Err(StoreError::Duplicate) => made.push(s),
            Err(e) => return Err(e),
        }
    }
    Ok(made)
}

pub async fn get(db: &Mongo, team: &TeamId, id: &ScheduleId) -> StoreResult<Option<ScheduleDoc>> {
    db.schedules.find_one(doc! { "_id": id, "team_id": team }).await?.map(decode).transpose()
}

pub async fn get_any(db: &Mongo, id: &ScheduleId) -> StoreResult<Option<ScheduleDoc>> {
    db.schedules.find_one(doc! { "_id": id }).await?.map(decode).transpose()
}

/// Filters of the schedule list.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFilter {
    pub account_id: Option<AccountId>,
    pub status: Option<ScheduleStatus>,
}

pub async fn list(
    db: &Mongo,
    team: &TeamId,
    f: &ScheduleFilter,
    skip: u64,
    limit: i64,
) -> StoreResult<(Vec<ScheduleDoc>, u64)> {
    let mut q = doc! { "team_id": team };
    if let Some(a) = &f.account_id {
        q.insert("account_id", a);
    }
    if let Some(s) = f.status {
        q.insert("status", s.as_str());
    }
    let total = db.schedules.count_documents(q.clone()).await?;
    let docs: Vec<Document> = db
        .schedules
        .find(q)
        .sort(doc! { "created_at": 1, "_id": 1 })
        .skip(skip)
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    Ok((docs.into_iter().map(decode).collect::<StoreResult<_>>()?, total))
}

/// Replaces the editable part of a schedule (name, target, trigger, overlap, skip window); the next
/// fire is recomputed from `now`. `None` when it is not the team's.
pub async fn replace_definition(db: &Mongo, s: &ScheduleDoc, now: Timestamp) -> StoreResult<Option<ScheduleDoc>> {
    let next = if s.status == ScheduleStatus::Active { s.trigger.first_at_or_after(now) } else { s.next_fire_at };
    let mut set = doc! {
        "name": &s.name,
        "description": s.description.clone(),
        "target": bson::serialize_to_bson(&s.target)?,
        "account_id": s.account_id.clone(),
        "trigger": bson::serialize_to_bson(&s.trigger)?,
        "overlap": s.overlap.as_str(),
        "skip_if_scanned_within_secs": s.skip_if_scanned_within_secs,
        "next_fire_at": next,
        "updated_at": now,
    };
    // A one-time schedule moved to a new time is active again.
    if matches!(s.status, ScheduleStatus::Completed | ScheduleStatus::Expired) && next.is_some() {
        set.insert("status", "active");
    }
    db.schedules
        .find_one_and_update(doc! { "_id": &s.id, "team_id": &s.team_id }, doc! { "$set": set })
        .return_document(mongodb::options::ReturnDocument::After)
        .await?
        .map(decode)
        .transpose()
}

pub async fn delete(db: &Mongo, team: &TeamId, id: &ScheduleId) -> StoreResult<bool> {
    let r = db.schedules.delete_one(doc! { "_id": id, "team_id": team }).await?;
    if r.deleted_count == 1 {
        // Fires still pending die with it; finished ones stay as history until retention.
        db.schedule_fires
            .update_many(
                doc! { "schedule_id": id, "status": { "$in": ["pending", "waiting"] } },
                doc! { "$set": { "status": "skipped", "reason": "the schedule was deleted", "updated_at": Timestamp::now() } },
            )
            .await?;
    }
    Ok(r.deleted_count == 1)
}

/// Removes every schedule of an account (the account is being deleted).
pub async fn delete_for_account(db: &Mongo, team: &TeamId, account: &AccountId) -> StoreResult<u64> {
    let r = db.schedules.delete_many(doc! { "team_id": team, "account_id": account }).await?;
    db.schedule_fires
        .update_many(
            doc! { "team_id": team, "account_id": account, "status": { "$in": ["pending", "waiting"] } },
            doc! { "$set": { "status": "skipped", "reason": "the account was deleted", "updated_at": Timestamp::now() } },
        )
        .await?;
    Ok(r.deleted_count)
}

/// Pauses an active schedule by hand. `None` when it is not the team's; `Some(false)` when it was not active.
pub async fn pause(
    db: &Mongo,
    team: &TeamId,
    id: &ScheduleId,
    reason: &str,
    now: Timestamp,
) -> StoreResult<Option<bool>> {
    let r = db
        .schedules
        .update_one(
            doc! { "_id": id, "team_id": team, "status": "active" },
            doc! { "$set": { "status": "paused", "paused_reason": reason, "paused_at": now, "auto_paused": false, "updated_at": now } },
        )
        .await?;
    if r.matched_count == 1 {
        return Ok(Some(true));
    }
    Ok(get(db, team, id).await?.map(|_| false))
}

/// Resumes a paused schedule: its next fire is the first after `now` (the paused time is not caught up).
/// `None` when it is not the team's; `Some(false)` when it was not paused.
pub async fn resume(db: &Mongo, team: &TeamId, id: &ScheduleId, now: Timestamp) -> StoreResult<Option<bool>> {
    let Some(s) = get(db, team, id).await? else {
        return Ok(None);
    };
    if s.status != ScheduleStatus::Paused {
        return Ok(Some(false));
    }
    let resumed = resume_one(db, &s, now).await?;
    if resumed && let Some(account) = &s.account_id {
        reset_failure_streak(db, account, now).await?;
    }
    Ok(Some(resumed))
}

async fn resume_one(db: &Mongo, s: &ScheduleDoc, now: Timestamp) -> StoreResult<bool> {
    let next = s.trigger.first_at_or_after(now);
    let status = if next.is_some() { "active" } else { "expired" };
    let r = db
        .schedules
        .update_one(
            doc! { "_id": &s.id, "status": "paused" },
            doc! { "$set": {
                "status": status, "next_fire_at": next, "paused_reason": Bson::Null, "paused_at": Bson::Null,
                "auto_paused": false, "updated_at": now,
            } },
        )
        .await?;
    Ok(r.modified_count == 1)
}

/// Pauses every active schedule of the account (consecutive scheduled failures), recording why.
pub async fn auto_pause_account(db: &Mongo, account: &AccountId, reason: &str, now: Timestamp) -> StoreResult<u64> {
    let r = db
        .schedules
        .update_many(
            doc! { "account_id": account, "status": "active" },
            doc! { "$set": { "status": "paused", "paused_reason": reason, "paused_at": now, "auto_paused": true, "updated_at": now } },
        )
        .await?;
    if r.modified_count > 0 {
        db.cloud_accounts
            .update_one(
                doc! { "_id": account },
                doc! { "$set": { "schedules_paused_at": now, "schedules_paused_reason": reason } },
            )
            .await?;
    }
    Ok(r.modified_count)
}

/// Resumes the account's schedules that the fleet paused (a successful manual scan, new credentials),
/// and starts its failure streak afresh. Schedules paused by a person stay paused.
pub async fn resume_auto_paused(db: &Mongo, account: &AccountId, now: Timestamp) -> StoreResult<u64> {
    let docs: Vec<Document> = db
        .schedules
        .find(doc! { "account_id": account, "status": "paused", "auto_paused": { "$in": [true, 1] } })
        .await?
        .try_collect()
        .await?;
    let mut n = 0;
    for d in docs {
        let s: ScheduleDoc = decode(d)?;
        if resume_one(db, &s, now).await? {
            n += 1;
        }
    }
    reset_failure_streak(db, account, now).await?;
    Ok(n)
}

/// Scheduled failures before `now` no longer count towards an automatic pause.
async fn reset_failure_streak(db: &Mongo, account: &AccountId, now: Timestamp) -> StoreResult<()> {
    db.cloud_accounts
        .update_one(
            doc! { "_id": account },
            doc! { "$set": { "schedule_streak_since": now, "schedules_paused_at": Bson::Null, "schedules_paused_reason": Bson::Null } },
        )
        .await?;
    Ok(())
}

/// Active schedules due at `now`, earliest first.
pub async fn due(db: &Mongo, now: Timestamp, limit: i64) -> StoreResult<Vec<ScheduleDoc>> {
    let docs: Vec<Document> = db
        .schedules
        .find(doc! { "status": "active", "next_fire_at": { "$lte": now } })
        .sort(doc! { "next_fire_at": 1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    docs.into_iter().map(decode).collect()
}

/// Moves the schedule's next fire from `from` to `to` and records the fire, once: the update only
/// matches while the stored next fire is still `from`. Returns whether this call moved it.
pub async fn advance(
    db: &Mongo,
    s: &ScheduleDoc,
    from: Timestamp,
    to: Option<Timestamp>,
    fired_at: Option<Timestamp>,
    missed: i64,
    now: Timestamp,
) -> StoreResult<bool> {
    let mut set = doc! { "next_fire_at": to, "updated_at": now };
    if let Some(f) = fired_at {
        set.insert("last_fire_at", f);
    }
    if to.is_none() {
        set.insert("status", if fired_at.is_some() { "completed" } else { "expired" });
    }
    let mut update = doc! { "$set": set };
    if missed > 0 {
        update.insert("$inc", doc! { "stats.missed": missed });
    }
    let r = db.schedules.update_one(doc! { "_id": &s.id, "status": "active", "next_fire_at": from }, update).await?;
    Ok(r.modified_count == 1)
}

/// Applies `inc` (and `set`) to the schedule once per `marker`: a second call with the same marker
/// (the same fire outcome, recorded again after a crash) changes nothing.
pub async fn count_once(
    db: &Mongo,
    schedule: &ScheduleId,
    marker: &str,
    inc: Document,
    set: Document,
) -> StoreResult<()> {
    let mut update = doc! {
        "$inc": inc,
        "$push": { "counted": { "$each": [marker], "$slice": -64 } },
    };
    if !set.is_empty() {
        update.insert("$set", set);
    }
    // `$nin` rather than `$ne`: the same meaning on MongoDB, and the one the test server's updates honour.
    db.schedules.update_one(doc! { "_id": schedule, "counted": { "$nin": [marker] } }, update).await?;
    Ok(())
}

/// Records a fire; `false` when it already exists (another replica took it).
pub async fn insert_fire(db: &Mongo, fire: &FireDoc) -> StoreResult<bool> {
    match db.schedule_fires.insert_one(bson::serialize_to_document(fire)?).await {
        Ok(_) => Ok(true),
        Err(e) => match StoreError::from(e) {
            StoreError::Duplicate => Ok(false),
            other => Err(other),
        },
    }
}

/// Fires this replica may handle now: pending or waiting, with no live lease of another replica.
pub async fn fires_to_handle(db: &Mongo, me: &str, now: Timestamp, limit: i64) -> StoreResult<Vec<FireDoc>> {
    let docs: Vec<Document> = db
        .schedule_fires
        .find(doc! {
            "status": { "$in": ["pending", "waiting"] },
            "$or": [ { "lease_until": { "$lte": now } }, { "lease_owner": me } ],
        })
        .sort(doc! { "fire_at": 1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    docs.into_iter().map(decode).collect()
}

/// Takes the lease of a fire for `lease`; `None` when another replica holds it or it is no longer open.
pub async fn lease_fire(
    db: &Mongo,
    id: &str,
    me: &str,
    now: Timestamp,
    lease: Duration,
) -> StoreResult<Option<FireDoc>> {
    db.schedule_fires
        .find_one_and_update(
            doc! {
                "_id": id,
                "status": { "$in": ["pending", "waiting"] },
                "$or": [ { "lease_until": { "$lte": now } }, { "lease_owner": me } ],
            },
            doc! { "$set": { "lease_owner": me, "lease_until": now.plus(lease), "updated_at": now }, "$inc": { "attempts": 1 } },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await?
        .map(decode)
        .transpose()
}

/// Moves a fire this replica leases to `status` (with a reason and a run; `retry_at` hands it back to
/// every replica from then, `ended` records now as its end); `false` if the lease was lost.
#[allow(clippy::too_many_arguments)]
pub async fn set_fire(
    db: &Mongo,
    id: &str,
    me: &str,
    status: FireStatus,
    reason: Option<&str>,
    run: Option<&RunId>,
    retry_at: Option<Timestamp>,
    ended: bool,
    now: Timestamp,
) -> StoreResult<bool> {
    let mut set = doc! { "status": status.as_str(), "reason": reason, "updated_at": now };
    if ended {
        set.insert("run_finished_at", now);
    }
    if let Some(r) = run {
        set.insert("run_id", r);
    }
    if let Some(t) = retry_at {
        set.insert("lease_until", t);
        set.insert("lease_owner", Bson::Null);
    }
    let r = db
        .schedule_fires
        .update_one(
            doc! { "_id": id, "lease_owner": me, "status": { "$in": ["pending", "waiting"] } },
            doc! { "$set": set },
        )
        .await?;
    Ok(r.modified_count == 1)
}

/// Whether the schedule has another fire waiting for its previous scan.
pub async fn other_fire_waiting(db: &Mongo, schedule: &ScheduleId, except: &str) -> StoreResult<bool> {
    Ok(db
        .schedule_fires
        .find_one(doc! { "schedule_id": schedule, "status": "waiting", "_id": { "$nin": [except] } })
        .projection(doc! { "_id": 1 })
        .await?
        .is_some())
}

/// Fires whose scan is running, oldest first (a page).
pub async fn started_fires(db: &Mongo, skip: u64, limit: i64) -> StoreResult<Vec<FireDoc>> {
    let docs: Vec<Document> = db
        .schedule_fires
        .find(doc! { "status": "started" })
        .sort(doc! { "fire_at": 1, "_id": 1 })
        .skip(skip)
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    docs.into_iter().map(decode).collect()
}

/// Records the end of a started fire's scan, once.
pub async fn finish_fire(
    db: &Mongo,
    id: &str,
    status: FireStatus,
    reason: Option<&str>,
    run_finished_at: Timestamp,
    now: Timestamp,
) -> StoreResult<bool> {
    let r = db
        .schedule_fires
        .update_one(
            doc! { "_id": id, "status": "started" },
            doc! { "$set": { "status": status.as_str(), "reason": reason, "run_finished_at": run_finished_at, "updated_at": now } },
        )
        .await?;
    Ok(r.modified_count == 1)
}

/// The account's latest scheduled outcomes (succeeded, scan failed, or could not start) that ended after
/// `since`, newest first.
pub async fn recent_outcomes(
    db: &Mongo,
    account: &AccountId,
    since: Timestamp,
    limit: i64,
) -> StoreResult<Vec<FireDoc>> {
    let docs: Vec<Document> = db
        .schedule_fires
        .find(doc! {
            "account_id": account,
            "status": { "$in": ["succeeded", "scan_failed", "failed"] },
            "run_finished_at": { "$gt": since },
        })
        .sort(doc! { "run_finished_at": -1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    docs.into_iter().map(decode).collect()
}

/// A page of a schedule's fires, newest first.
pub async fn history(
    db: &Mongo,
    team: &TeamId,
    schedule: &ScheduleId,
    skip: u64,
    limit: i64,
) -> StoreResult<(Vec<FireDoc>, u64)> {
    let q = doc! { "team_id": team, "schedule_id": schedule };
    let total = db.schedule_fires.count_documents(q.clone()).await?;
    let docs: Vec<Document> =
        db.schedule_fires.find(q).sort(doc! { "fire_at": -1 }).skip(skip).limit(limit).await?.try_collect().await?;
    Ok((docs.into_iter().map(decode).collect::<StoreResult<_>>()?, total))
}

/// Accounts whose schedules the fleet paused, with when (a page).
pub async fn auto_paused_accounts(db: &Mongo, limit: i64) -> StoreResult<Vec<(AccountId, TeamId, Timestamp)>> {
    let docs: Vec<Document> = db
        .cloud_accounts
        .find(doc! { "schedules_paused_at": { "$gt": 0_i64 } })
        .projection(doc! { "_id": 1, "team_id": 1, "schedules_paused_at": 1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for d in docs {
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "_id")]
            id: AccountId,
            team_id: TeamId,
            schedules_paused_at: Timestamp,
        }
        let r: Row = decode(d)?;
        out.push((r.id, r.team_id, r.schedules_paused_at));
    }
    Ok(out)
}

/// When the account's current streak of scheduled outcomes began (its last reset), or the epoch.
pub async fn streak_since(db: &Mongo, account: &AccountId) -> StoreResult<Timestamp> {
    let d = db.cloud_accounts.find_one(doc! { "_id": account }).projection(doc! { "schedule_streak_since": 1 }).await?;
    Ok(d.and_then(|d| match d.get("schedule_streak_since") {
        Some(Bson::Int64(n)) => Some(Timestamp::from_millis(*n)),
        Some(Bson::Int32(n)) => Some(Timestamp::from_millis(i64::from(*n))),
        _ => None,
    })
    .unwrap_or_default())
}
