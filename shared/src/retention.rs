//! Retention and stuck runs: what the scheduler removes when it is old enough, and the runs it ends
//! because they stopped moving.
//!
//! Retention removes, in bounded batches with a pause between them (so that a large backlog never
//! stalls the database for other work): finished runs older than the scan retention with everything
//! that belongs to them (SubJobs, the unified scan record, raw artifacts in object storage, schedule
//! fires), findings that were resolved or passed and not seen since, resolved vulnerability occurrences
//! not seen since, finished schedule fires, and audit events older than the audit retention (the
//! trail is otherwise insert-only, `crate::store::audit`). Dependants go first and the run last, so a
//! sweep cut short (a crash, the batch budget) is completed by the next one.

use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;

use crate::artifacts::ArtifactStore;
use crate::config::{Env, KeySpec};
use crate::db::Mongo;
use crate::error::StoreResult;
use crate::ids::{RunId, TeamId};
use crate::store::{runs, subjobs};
use crate::time::Timestamp;

pub const RETENTION_KEYS: &[KeySpec] = &[
    KeySpec::optional(
        "CSPM_RETENTION_SCAN_DAYS",
        "180",
        "finished scans (their sub-jobs, records, raw artifacts and schedule fires) older than this are removed",
    ),
    KeySpec::optional(
        "CSPM_RETENTION_FINDINGS_DAYS",
        "180",
        "resolved or passed findings, and resolved vulnerability occurrences, not seen for this long are removed",
    ),
    KeySpec::optional(
        "CSPM_RETENTION_AUDIT_DAYS",
        "365",
        "audit-trail events older than this are removed (the trail is otherwise never changed)",
    ),
    KeySpec::optional("CSPM_RETENTION_INTERVAL_HOURS", "24", "how often retention runs"),
    KeySpec::optional("CSPM_RETENTION_BATCH", "500", "documents removed per batch (a short pause follows each batch)"),
    KeySpec::optional(
        "CSPM_STUCK_RUN_HOURS",
        "4",
        "an active scan none of whose sub-jobs moved for this long is ended, its waiting sub-jobs failed with the reason",
    ),
];

#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub scan_age: Duration,
    pub findings_age: Duration,
    pub audit_age: Duration,
    pub interval: Duration,
    pub batch: i64,
    /// Batches one sweep may run per kind of document (the rest waits for the next sweep).
    pub max_batches: u32,
    /// The pause after each batch.
    pub pause: Duration,
    pub stuck_after: Duration,
}

const DAY: u64 = 86_400;

impl RetentionSettings {
    pub fn load(env: &Env) -> Self {
        Self {
            scan_age: Duration::from_secs(DAY * env.bounded::<u64>("CSPM_RETENTION_SCAN_DAYS", 180, 1, 36_500)),
            findings_age: Duration::from_secs(DAY * env.bounded::<u64>("CSPM_RETENTION_FINDINGS_DAYS", 180, 1, 36_500)),
            audit_age: Duration::from_secs(DAY * env.bounded::<u64>("CSPM_RETENTION_AUDIT_DAYS", 365, 1, 36_500)),
            interval: Duration::from_secs(3600 * env.bounded::<u64>("CSPM_RETENTION_INTERVAL_HOURS", 24, 1, 24 * 30)),
            batch: env.bounded("CSPM_RETENTION_BATCH", 500, 10, 10_000),
            max_batches: 200,
            pause: Duration::from_millis(50),
            stuck_after: Duration::from_secs(3600 * env.bounded::<u64>("CSPM_STUCK_RUN_HOURS", 4, 1, 24 * 30)),
        }
    }
}

/// What one sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub runs: u64,
    pub sub_jobs: u64,
    pub artifacts: u64,
    pub findings: u64,
    pub occurrences: u64,
    pub fires: u64,
    pub audit: u64,
    /// Expired sessions removed.
    pub sessions: u64,
    /// Whether a budget ran out (more is left for the next sweep).
    pub incomplete: bool,
}

/// One retention sweep at `now`.
pub async fn sweep(
    db: &Mongo,
    artifacts: &ArtifactStore,
    s: &RetentionSettings,
    now: Timestamp,
) -> StoreResult<RetentionReport> {
    let mut r = RetentionReport::default();
    let scan_cutoff = now.minus(s.scan_age);
    let finding_cutoff = now.minus(s.findings_age);

    // Runs, with what belongs to them.
    let mut batches = 0;
    loop {
        if batches == s.max_batches {
            r.incomplete = true;
            break;
        }
        let page: Vec<Document> = db
            .scan_runs
            .find(doc! {
                "status": { "$in": ["completed", "partial", "failed", "cancelled"] },
                "created_at": { "$lt": scan_cutoff },
                "finished_at": { "$lt": scan_cutoff },
            })
            .projection(doc! { "_id": 1, "team_id": 1 })
            .limit(s.batch)
            .await?
            .try_collect()
            .await?;
        if page.is_empty() {
            break;
        }
        let mut ids: Vec<Bson> = Vec::with_capacity(page.len());
        for d in &page {
            let (Ok(id), Ok(team)) = (d.get_str("_id"), d.get_str("team_id")) else { continue };
            let (Ok(run), Ok(team)) = (id.parse::<RunId>(), team.parse::<TeamId>()) else { continue };
            // Objects first (a failure leaves the run for the next sweep, which tries again).
            match artifacts.delete_run(db, &team, &run).await {
                Ok(n) => r.artifacts += n,
                Err(e) => {
                    tracing::warn!(run.id = %run, error = %e, "retention: could not remove the run's artifacts; will retry");
                    continue;
                }
            }
            ids.push(Bson::String(id.to_string()));
        }
        if ids.is_empty() {
            r.incomplete = true;
            break;
        }
        r.sub_jobs += db.sub_jobs.delete_many(doc! { "run_id": { "$in": ids.clone() } }).await?.deleted_count;
        db.scan_results.delete_many(doc! { "scan_id": { "$in": ids.clone() } }).await?;
        r.fires += db.schedule_fires.delete_many(doc! { "run_id": { "$in": ids.clone() } }).await?.deleted_count;
        r.runs += db.scan_runs.delete_many(doc! { "_id": { "$in": ids } }).await?.deleted_count;
        batches += 1;
        tokio::time::sleep(s.pause).await;
    }

    // Findings that were fixed, or that passed, and have not been seen since the cutoff.
    let (n, more) = delete_in_batches(
        &db.findings,
        doc! { "status": { "$in": ["resolved", "passed"] }, "last_seen": { "$lt": finding_cutoff } },
        s,
    )
    .await?;
    r.findings = n;
    r.incomplete |= more;
    let (n, more) =
        delete_in_batches(&db.occurrences, doc! { "status": "resolved", "last_seen": { "$lt": finding_cutoff } }, s)
            .await?;
    r.occurrences = n;
    r.incomplete |= more;
    // Fires that ended (skipped, failed to start, or whose run is gone) before the scan cutoff.
    let (n, more) = delete_in_batches(
        &db.schedule_fires,
        doc! {
            "status": { "$in": ["skipped", "failed", "succeeded", "scan_failed", "cancelled"] },
            "created_at": { "$lt": scan_cutoff },
        },
        s,
    )
    .await?;
    r.fires += n;
    r.incomplete |= more;
    // Audit events older than the audit retention (the trail is otherwise insert-only).
    let (n, more) = delete_in_batches(&db.audit, doc! { "at": { "$lt": now.minus(s.audit_age) } }, s).await?;
    r.audit = n;
    r.incomplete |= more;
    // Sessions past their fixed lifetime (the API already refuses them; this only frees the space).
    let (n, more) = delete_in_batches(&db.sessions, doc! { "expires_at": { "$lte": now } }, s).await?;
    r.sessions = n;
    r.incomplete |= more;
    Ok(r)
}

/// Deletes what `filter` matches, `batch` ids at a time; returns the count and whether some may be left
/// (the batch budget ran out on full batches).
async fn delete_in_batches(
    coll: &mongodb::Collection<Document>,
    filter: Document,
    s: &RetentionSettings,
) -> StoreResult<(u64, bool)> {
    let mut n = 0;
    for _ in 0..s.max_batches {
        let ids: Vec<Bson> = coll
            .find(filter.clone())
            .projection(doc! { "_id": 1 })
            .limit(s.batch)
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        if ids.is_empty() {
            return Ok((n, false));
        }
        let found = ids.len();
        n += coll.delete_many(doc! { "_id": { "$in": ids } }).await?.deleted_count;
        if (found as i64) < s.batch {
            return Ok((n, false));
        }
        tokio::time::sleep(s.pause).await;
    }
    Ok((n, true))
}

/// Ends active runs that stopped moving: created more than `stuck_after` ago, and none of whose SubJobs
/// started, finished or renewed a lease within it. Their SubJobs that are still waiting are failed with
/// the reason (a running one with a live lease means the run is moving and is left alone), and the run
/// is rolled up. Returns the runs that ended.
pub async fn end_stuck_runs(db: &Mongo, stuck_after: Duration, now: Timestamp, limit: i64) -> StoreResult<Vec<RunId>> {
    let cutoff = now.minus(stuck_after);
    let candidates: Vec<Document> = db
        .scan_runs
        .find(doc! { "status": { "$in": ["queued", "running"] }, "created_at": { "$lt": cutoff } })
        .projection(doc! { "_id": 1 })
        .sort(doc! { "created_at": 1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    let mut ended = Vec::new();
    for d in candidates {
        let Some(run) = d.get_str("_id").ok().and_then(|s| s.parse::<RunId>().ok()) else { continue };
        let moving = db
            .sub_jobs
            .find_one(doc! {
                "run_id": &run,
                "$or": [
                    { "started_at": { "$gte": cutoff } },
                    { "finished_at": { "$gte": cutoff } },
                    { "status": "running", "lease_expires_at": { "$gte": now } },
                ],
            })
            .projection(doc! { "_id": 1 })
            .await?
            .is_some();
        if moving {
            continue;
        }
        let reason = format!(
            "the scan made no progress for {} hours (CSPM_STUCK_RUN_HOURS): its waiting sub-jobs were failed",
            stuck_after.as_secs() / 3600
        );
        let failed = subjobs::fail_waiting(db, &run, &reason).await?;
        // A SubJob whose lease ran out is the reaper's to re-queue or fail; the run ends after it.
        match runs::finalize(db, &run).await? {
            Some(status) if status.is_terminal() => {
                tracing::warn!(run.id = %run, failed_sub_jobs = failed, status = status.as_str(), "ended a stuck scan");
                ended.push(run);
            }
            _ => tracing::warn!(run.id = %run, failed_sub_jobs = failed, "failed the waiting sub-jobs of a stuck scan"),
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_events_are_kept_a_year_unless_configured() {
        let env = Env::from_map(Vec::<(String, String)>::new());
        assert_eq!(RetentionSettings::load(&env).audit_age, Duration::from_secs(365 * DAY));
        env.finish(()).expect("no problems");
        let env = Env::from_map([("CSPM_RETENTION_AUDIT_DAYS", "730")]);
        assert_eq!(RetentionSettings::load(&env).audit_age, Duration::from_secs(730 * DAY));
        let env = Env::from_map([("CSPM_RETENTION_AUDIT_DAYS", "0")]);
        RetentionSettings::load(&env);
        let err = env.finish(()).expect_err("0 days is refused");
        assert!(err.to_string().contains("CSPM_RETENTION_AUDIT_DAYS"), "{err}");
        assert!(RETENTION_KEYS.iter().any(|k| k.name == "CSPM_RETENTION_AUDIT_DAYS" && k.default == Some("365")));
    }
}
