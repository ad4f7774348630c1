//! ScanRuns: creation, reads, cancel, and the roll-up that ends a run exactly once.

use crate::time::Timestamp;
use bson::{Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::db::Mongo;
use crate::domain::provider::Provider;
use crate::domain::scan::{RunStatus, SubJobCounts, SubJobStatus, roll_up};
use crate::domain::severity::SeverityCounts;
use crate::error::{StoreError, StoreResult};
use crate::ids::{AccountId, RunId, ScheduleId, TeamId, UserId};
use crate::store::subjobs::{self, number};
use crate::store::{accounts, results};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// A cloud account scan (regions × tools).
    Cloud,
    /// A native scan of a host or network.
    Native,
}

/// Totals of a finished run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunSummary {
    pub total_findings: i64,
    pub new_findings: i64,
    #[serde(default)]
    pub resolved_findings: i64,
    #[serde(default)]
    pub reopened_findings: i64,
    pub by_severity: SeverityCounts,
    /// Messages of the SubJobs that did not complete, one per SubJob (bounded).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A ScanRun document (`cspm_orchestration.scan_runs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDoc {
    #[serde(rename = "_id")]
    pub id: RunId,
    pub team_id: TeamId,
    pub kind: RunKind,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub target: Option<String>,
    pub scan_type: String,
    pub regions: Vec<String>,
    pub tools: Vec<String>,
    pub status: RunStatus,
    pub sub_jobs_count: i64,
    #[serde(default, deserialize_with = "crate::store::lenient_bool")]
    pub cancel_requested: bool,
    pub trigger: String,
    /// The schedule whose fire started the run (`trigger` is then `schedule`).
    #[serde(default)]
    pub schedule_id: Option<ScheduleId>,
    #[serde(default)]
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub estimated_completion: Option<Timestamp>,
    /// SubJob states at the roll-up (while the run is active, they are counted on demand).
    #[serde(default)]
    pub counts: Option<SubJobCounts>,
    #[serde(default)]
    pub summary: Option<RunSummary>,
    /// Set between the roll-up and the end of its side effects (account release, unified record), so
    /// that the sweeper can finish them if the process died in between.
    #[serde(default, deserialize_with = "crate::store::lenient_bool")]
    pub finalize_pending: bool,
}

impl RunDoc {
    /// A new run, `queued` now, with nothing to scan yet (callers fill in scope and SubJob count).
    pub fn queued(id: RunId, team: TeamId, kind: RunKind, scan_type: &str, trigger: &str, by: Option<UserId>) -> Self {
        Self {
            id,
            team_id: team,
            kind,
            account_id: None,
            provider: None,
            target: None,
            scan_type: scan_type.to_string(),
            regions: Vec::new(),
            tools: Vec::new(),
            status: RunStatus::Queued,
            sub_jobs_count: 0,
            cancel_requested: false,
            trigger: trigger.to_string(),
            schedule_id: None,
            created_by: by,
            created_at: Timestamp::now(),
            started_at: None,
            finished_at: None,
            estimated_completion: None,
            counts: None,
            summary: None,
            finalize_pending: false,
        }
    }
}

pub async fn insert(db: &Mongo, run: &RunDoc) -> StoreResult<()> {
    db.scan_runs.insert_one(bson::serialize_to_document(run)?).await?;
    Ok(())
}

/// A run of the team, or `None` (also for another team's run: callers answer 404).
pub async fn get(db: &Mongo, team: &TeamId, id: &RunId) -> StoreResult<Option<RunDoc>> {
    let found = db.scan_runs.find_one(doc! { "_id": id, "team_id": team }).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

/// A run regardless of team: for the worker and the scheduler, which act on behalf of the run's team.
pub async fn get_any(db: &Mongo, id: &RunId) -> StoreResult<Option<RunDoc>> {
    let found = db.scan_runs.find_one(doc! { "_id": id }).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

/// The account's latest scan that completed (fully or partially) and ended at or after `since`; only
/// full scans when `full_only`.
pub async fn recent_scan(
    db: &Mongo,
    team: &TeamId,
    account: &AccountId,
    since: Timestamp,
    full_only: bool,
) -> StoreResult<Option<RunDoc>> {
    let mut q = doc! {
        "team_id": team, "account_id": account,
        "status": { "$in": ["completed", "partial"] }, "finished_at": { "$gte": since },
    };
    if full_only {
        q.insert("scan_type", "full");
    }
    let found = db.scan_runs.find_one(q).sort(doc! { "finished_at": -1 }).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

/// A scan of the account not started by a schedule that completed (fully or partially) after `since`.
pub async fn manual_success_since(
    db: &Mongo,
    team: &TeamId,
    account: &AccountId,
    since: Timestamp,
) -> StoreResult<Option<RunDoc>> {
    let q = doc! {
        "team_id": team, "account_id": account, "trigger": { "$nin": ["schedule"] },
        "status": { "$in": ["completed", "partial"] }, "finished_at": { "$gt": since },
    };
    let found = db.scan_runs.find_one(q).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub kind: Option<RunKind>,
    pub account_id: Option<AccountId>,
    pub provider: Option<Provider>,
    pub status: Option<RunStatus>,
}

/// A page of the team's runs, newest first, and the total that matches.
pub async fn list(
    db: &Mongo,
    team: &TeamId,
    filter: &RunFilter,
    skip: u64,
    limit: i64,
) -> StoreResult<(Vec<RunDoc>, u64)> {
    let mut q = doc! { "team_id": team };
    if let Some(k) = filter.kind {
        q.insert("kind", bson::serialize_to_bson(&k)?);
    }
    if let Some(a) = &filter.account_id {
        q.insert("account_id", a);
    }
    if let Some(p) = filter.provider {
        q.insert("provider", p.as_str());
    }
    if let Some(s) = filter.status {
        q.insert("status", s.as_str());
    }
    let total = db.scan_runs.count_documents(q.clone()).await?;
    let cursor = db.scan_runs.find(q).sort(doc! { "created_at": -1, "_id": -1 }).skip(skip).limit(limit).await?;
    let docs: Vec<Document> = cursor.try_collect().await?;
    let runs = docs
        .into_iter()
        .map(|d| bson::deserialize_from_document(d).map_err(StoreError::from))
        .collect::<StoreResult<Vec<RunDoc>>>()?;
    Ok((runs, total))
}

/// `queued → running` when the first SubJob starts (a no-op afterwards).
pub async fn mark_running(db: &Mongo, id: &RunId) -> StoreResult<()> {
    let now = Timestamp::now();
    let r = db
        .scan_runs
        .update_one(
            doc! { "_id": id, "status": "queued" },
            doc! { "$set": { "status": "running", "started_at": now, "updated_at": now } },
        )
        .await?;
    if r.modified_count == 1 {
        results::set_status(db, id, RunStatus::Running).await?;
    }
    Ok(())
}

/// Flags an active run for cancellation. Returns false when the run is already finished.
pub async fn request_cancel(db: &Mongo, team: &TeamId, id: &RunId) -> StoreResult<bool> {
    let r = db
        .scan_runs
        .update_one(
            doc! { "_id": id, "team_id": team, "status": { "$in": ["queued", "running"] } },
            doc! { "$set": { "cancel_requested": true, "updated_at": Timestamp::now() } },
        )
        .await?;
    Ok(r.matched_count == 1)
}

/// Ends a run if all its SubJobs are terminal: computes the final state and summary from the SubJobs
/// themselves (so the figures are exact however many deliveries and crashes happened), switches the
/// run to it with a compare-and-set (so it happens once), then releases the account and updates the
/// unified scan record. Safe to call any number of times, from any process.
pub async fn finalize(db: &Mongo, id: &RunId) -> StoreResult<Option<RunStatus>> {
    let Some(run) = get_any(db, id).await? else {
        return Ok(None);
    };
    if run.status.is_terminal() {
        if run.finalize_pending {
            finish_side_effects(db, &run).await?;
        }
        return Ok(Some(run.status));
    }
    if run.cancel_requested {
        // Nothing queued may outlive a cancel (a SubJob re-queued after its worker died would wait for
        // a dispatch that never comes).
        subjobs::cancel_run(db, id).await?;
    }
    let (counts, mut summary, warned) = tally(db, id).await?;
    if (counts.total() as i64) < run.sub_jobs_count {
        // Still being created, or its creator died half-way (then, after a grace period, fail it).
        let age = Timestamp::now().since(run.created_at);
        if age < CREATION_GRACE {
            return Ok(None);
        }
        return fail_incomplete(db, &run, &counts).await;
    }
    let Some(final_status) = roll_up(&counts, run.cancel_requested) else {
        return Ok(None);
    };
    if counts.failed + counts.timed_out > 0 || warned > 0 {
        summary.warnings = warnings(db, id).await?;
    }
    if end_run(db, run, final_status, counts, summary).await? {
        tracing::info!(run.id = %id, status = %final_status, total = counts.total(), completed = counts.completed,
            failed = counts.failed, timed_out = counts.timed_out, cancelled = counts.cancelled, "run finished");
    }
    Ok(Some(final_status))
}

/// How long a run may have fewer SubJobs than it announced before it is considered abandoned by a
/// creator that died half-way.
const CREATION_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

async fn fail_incomplete(db: &Mongo, run: &RunDoc, counts: &SubJobCounts) -> StoreResult<Option<RunStatus>> {
    let reason = format!(
        "the scan was only partly created ({} of {} sub-jobs) and was abandoned",
        counts.total(),
        run.sub_jobs_count
    );
    abandon(db, run, &reason).await?;
    Ok(Some(RunStatus::Failed))
}

/// Ends a run that cannot go on (its creation failed half-way): what was created is cancelled, the run
/// ends `failed` with the reason, and its account is released.
pub async fn abandon(db: &Mongo, run: &RunDoc, reason: &str) -> StoreResult<()> {
    subjobs::cancel_run(db, &run.id).await?;
    let (counts, _, _) = tally(db, &run.id).await?;
    let summary = RunSummary { warnings: vec![reason.to_string()], ..RunSummary::default() };
    end_run(db, run.clone(), RunStatus::Failed, counts, summary).await?;
    Ok(())
}

/// Switches an active run to its final state, once (a compare-and-set on the state), then does the side
/// effects. Returns whether this call made the switch.
async fn end_run(
    db: &Mongo,
    mut run: RunDoc,
    status: RunStatus,
    counts: SubJobCounts,
    summary: RunSummary,
) -> StoreResult<bool> {
    let now = Timestamp::now();
    let r = db
        .scan_runs
        .update_one(
            doc! { "_id": &run.id, "status": { "$in": ["queued", "running"] } },
            doc! { "$set": {
                "status": status.as_str(),
                "counts": bson::serialize_to_bson(&counts)?,
                "summary": bson::serialize_to_bson(&summary)?,
                "finished_at": now,
                "updated_at": now,
                "finalize_pending": true,
            } },
        )
        .await?;
    if r.modified_count != 1 {
        return Ok(false);
    }
    run.status = status;
    run.counts = Some(counts);
    run.summary = Some(summary);
    run.finished_at = Some(now);
    finish_side_effects(db, &run).await?;
    Ok(true)
}

async fn finish_side_effects(db: &Mongo, run: &RunDoc) -> StoreResult<()> {
    if let Some(account) = &run.account_id {
        accounts::release_active_run(db, account, &run.id).await?;
    }
    results::upsert_for_run(db, run).await?;
    db.scan_runs.update_one(doc! { "_id": &run.id }, doc! { "$set": { "finalize_pending": false } }).await?;
    Ok(())
}

/// SubJob states and finding totals of a run, in one aggregation.
/// Also returns how many SubJobs left a warning.
async fn tally(db: &Mongo, id: &RunId) -> StoreResult<(SubJobCounts, RunSummary, i64)> {
    let pipeline = vec![
        doc! { "$match": { "run_id": id } },
        doc! { "$group": {
            "_id": "$status",
            "n": { "$sum": 1 },
            "total": { "$sum": "$findings_count" },
            "new": { "$sum": "$new_findings" },
            "resolved": { "$sum": "$resolved_findings" },
            "reopened": { "$sum": "$reopened_findings" },
            "warned": { "$sum": "$warnings_count" },
            "critical": { "$sum": "$severity.critical" },
            "high": { "$sum": "$severity.high" },
            "medium": { "$sum": "$severity.medium" },
            "low": { "$sum": "$severity.low" },
            "informational": { "$sum": "$severity.informational" },
        } },
    ];
    let rows: Vec<Document> = db.sub_jobs.aggregate(pipeline).await?.try_collect().await?;
    let mut counts = SubJobCounts::default();
    let mut summary = RunSummary::default();
    let mut warned = 0;
    for row in &rows {
        warned += number(row, "warned");
        let status: SubJobStatus = bson::deserialize_from_bson(row.get("_id").cloned().unwrap_or(bson::Bson::Null))?;
        counts.add(status, number(row, "n") as u64);
        summary.total_findings += number(row, "total");
        summary.new_findings += number(row, "new");
        summary.resolved_findings += number(row, "resolved");
        summary.reopened_findings += number(row, "reopened");
        summary.by_severity.merge(&SeverityCounts {
            critical: number(row, "critical"),
            high: number(row, "high"),
            medium: number(row, "medium"),
            low: number(row, "low"),
            informational: number(row, "informational"),
        });
    }
    Ok((counts, summary, warned))
}

/// The messages of the SubJobs that failed or timed out (bounded), for the run's summary.
async fn warnings(db: &Mongo, id: &RunId) -> StoreResult<Vec<String>> {
    let failed: Vec<Document> = db
        .sub_jobs
        .find(doc! { "run_id": id, "$or": [
            { "status": { "$in": ["failed", "timed_out"] } },
            { "warning": { "$ne": null } },
        ] })
        .projection(doc! { "region": 1, "tool": 1, "error": 1, "warning": 1 })
        .limit(50)
        .await?
        .try_collect()
        .await?;
    Ok(failed
        .iter()
        .map(|d| {
            format!(
                "{} in {}: {}",
                d.get_str("tool").unwrap_or("?"),
                d.get_str("region").unwrap_or("?"),
                d.get_str("error").or_else(|_| d.get_str("warning")).unwrap_or("no message")
            )
        })
        .collect())
}

/// Runs that may need a roll-up: active ones (their last SubJob may have finished while its worker died
/// before rolling up), and finished ones whose side effects did not complete.
pub async fn needing_roll_up(db: &Mongo, after: Option<&RunId>, limit: i64) -> StoreResult<Vec<RunId>> {
    let mut filter = doc! { "$or": [ { "status": { "$in": ["queued", "running"] } }, { "finalize_pending": true } ] };
    if let Some(a) = after {
        filter.insert("_id", doc! { "$gt": a });
    }
    let cursor = db.scan_runs.find(filter).projection(doc! { "_id": 1 }).sort(doc! { "_id": 1 }).limit(limit).await?;
    let docs: Vec<Document> = cursor.try_collect().await?;
    docs.into_iter()
        .map(|d| {
            bson::deserialize_from_bson(d.get("_id").cloned().unwrap_or(bson::Bson::Null)).map_err(StoreError::from)
        })
        .collect()
}
