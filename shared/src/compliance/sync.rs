//! The sync: a team's findings through the mapper into control states, one sync per team at a time.
//!
//! One sync per team is decided by a single conditional update on the team's document
//! (`active_job_id` set only where it is null): two requests cannot both win; the loser gets the
//! winner's job id. The running sync holds a lease on its job, renewed while it works; a sync whose
//! process died is recognised by its lapsed lease, marked `failed` with the reason, and replaced by the
//! next request. Everything a sync writes is derived from the findings and the catalog alone, so running
//! it twice, or again after it died half-way, writes the same states.
//!
//! Findings are read with a cursor, in batches, with a projection of the fields the mapper needs; a
//! control keeps counts and its first few pieces of evidence, so memory stays bounded whatever the
//! number of findings.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::ComplianceSettings;
use super::mapping::{FindingText, Mapper};
use super::state::{ControlState, EvidenceKind, Tally};
use super::store::{self, Derived, Evidence};
use crate::db::Mongo;
use crate::domain::finding::{FindingStatus, Verdict};
use crate::error::{StoreError, StoreResult};
use crate::ids::{CatalogId, SyncJobId, TeamId, UserId};
use crate::time::Timestamp;

/// How long a sync's lease lasts without renewal, and how often it is renewed.
const LEASE: Duration = Duration::from_secs(60);
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// A claim whose job document never appeared (its creator died in between) is cleared after this.
const CLAIM_GRACE: Duration = Duration::from_secs(60);
/// Findings per round trip of the sync's cursor.
const READ_BATCH: u32 = 1000;
/// Pieces of evidence kept per control (failing ones preferred); the tally counts them all.
pub const EVIDENCE_PER_CONTROL: usize = 20;
/// A sync that failed is tried again after a completed run no sooner than this.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

/// Why a sync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncTrigger {
    /// `POST /api/compliance-engine/sync`.
    Manual,
    /// The scheduler's interval (`CSPM_COMPLIANCE_SYNC_HOURS`).
    Schedule,
    /// A scan run of the team completed after the last sync started.
    RunCompleted,
}

impl SyncTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncTrigger::Manual => "manual",
            SyncTrigger::Schedule => "schedule",
            SyncTrigger::RunCompleted => "run_completed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Running,
    Completed,
    Failed,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyncResult {
    pub findings_read: i64,
    pub mapped_findings: i64,
    pub unmapped_findings: i64,
    /// Findings by the path that mapped them (a finding's first path).
    pub findings_by_path: BTreeMap<String, i64>,
    pub controls_with_evidence: i64,
    /// Effective states of the controls the team has a state for (the rest are not assessed).
    pub states: BTreeMap<String, i64>,
    pub overridden_controls: i64,
    pub catalog_controls: i64,
    pub duration_ms: i64,
}

/// A sync's document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncJob {
    #[serde(rename = "_id")]
    pub id: SyncJobId,
    pub team_id: TeamId,
    pub status: SyncStatus,
    pub trigger: SyncTrigger,
    #[serde(default)]
    pub requested_by: Option<UserId>,
    pub catalog_id: CatalogId,
    pub created_at: Timestamp,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub lease_expires_at: Option<Timestamp>,
    #[serde(default)]
    pub result: Option<SyncResult>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A sync this process has claimed and must run.
#[derive(Debug, Clone)]
pub struct ClaimedSync {
    pub job_id: SyncJobId,
    pub team: TeamId,
    pub catalog_id: CatalogId,
    lease_token: String,
    started_at: Timestamp,
}

/// The answer to a sync request.
#[derive(Debug)]
pub enum SyncStart {
    /// This request won: run it ([`run`]).
    Claimed(ClaimedSync),
    /// A sync of the team is already running: its id.
    Running(SyncJobId),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    #[error("no SCF catalog has been imported (POST /api/common-controls/import-scf)")]
    NoCatalog,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn token() -> String {
    ulid::Ulid::generate().to_string()
}

/// Claims the team's one sync, or names the one already running. A running sync whose lease lapsed is
/// failed ("its process stopped") and replaced.
pub async fn claim(
    db: &Mongo,
    team: &TeamId,
    trigger: SyncTrigger,
    by: Option<&UserId>,
) -> Result<SyncStart, SyncError> {
    let c = &db.compliance;
    let catalog = store::current_catalog_id(db).await?.ok_or(SyncError::NoCatalog)?;
    match c
        .teams
        .update_one(doc! { "_id": team }, doc! { "$setOnInsert": { "active_job_id": Bson::Null } })
        .upsert(true)
        .await
    {
        Ok(_) => {}
        // Two first requests at once: the other one created it.
        Err(e) if crate::error::is_duplicate_key(&e) => {}
        Err(e) => return Err(StoreError::from(e).into()),
    }
    for _ in 0..3 {
        let now = Timestamp::now();
        let id = SyncJobId::new();
        let won = c
            .teams
            .find_one_and_update(
                doc! { "_id": team, "active_job_id": Bson::Null },
                doc! { "$set": { "active_job_id": &id, "active_claimed_at": now } },
            )
            .projection(doc! { "_id": 1 })
            .await
            .map_err(StoreError::from)?;
        if won.is_some() {
            let claimed = ClaimedSync {
                job_id: id.clone(),
                team: team.clone(),
                catalog_id: catalog.clone(),
                lease_token: token(),
                started_at: now,
            };
            let mut job = bson::serialize_to_document(&SyncJob {
                id,
                team_id: team.clone(),
                status: SyncStatus::Running,
                trigger,
                requested_by: by.cloned(),
                catalog_id: catalog.clone(),
                created_at: now,
                finished_at: None,
                lease_expires_at: Some(now.plus(LEASE)),
                result: None,
                error: None,
            })
            .map_err(StoreError::from)?;
            job.insert("lease_token", &claimed.lease_token);
            c.sync_jobs.insert_one(job).await.map_err(StoreError::from)?;
            return Ok(SyncStart::Claimed(claimed));
        }
        let Some(team_doc) = c.teams.find_one(doc! { "_id": team }).await.map_err(StoreError::from)? else {
            continue;
        };
        let Ok(active) = team_doc.get_str("active_job_id") else { continue };
        let active: SyncJobId = active.parse().map_err(|e| StoreError::Corrupt(format!("compliance team: {e}")))?;
        let claimed_at = number(&team_doc, "active_claimed_at").map(Timestamp::from_millis);
        let job = get_any(db, &active).await?;
        let stale = match &job {
            None => claimed_at.is_none_or(|t| now.since(t) > CLAIM_GRACE),
            Some(j) if j.status != SyncStatus::Running => true,
            Some(j) => j.lease_expires_at.is_none_or(|t| t < now),
        };
        if !stale {
            return Ok(SyncStart::Running(active));
        }
        tracing::warn!(team.id = %team, job.id = %active, "clearing a compliance sync whose process stopped");
        c.sync_jobs
            .update_one(
                doc! { "_id": &active, "status": "running", "lease_expires_at": { "$lt": now } },
                doc! { "$set": {
                    "status": "failed",
                    "finished_at": now,
                    "error": "abandoned: the process running this sync stopped before it finished (its lease lapsed); the next sync redoes it",
                } },
            )
            .await
            .map_err(StoreError::from)?;
        c.teams
            .update_one(
                doc! { "_id": team, "active_job_id": &active },
                doc! { "$set": { "active_job_id": Bson::Null } },
            )
            .await
            .map_err(StoreError::from)?;
    }
    Err(StoreError::Database("could not settle the team's compliance sync after 3 tries".into()).into())
}

fn number(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

/// Runs a claimed sync to its end (completed or failed, recorded on the job) while renewing its lease.
pub async fn run(db: &Mongo, claimed: ClaimedSync) -> Result<SyncResult, String> {
    let started = Instant::now();
    let outcome = tokio::select! {
        r = compute_and_write(db, &claimed) => r.map_err(|e| e.to_string()),
        lost = keep_lease(db, &claimed) => Err(lost),
    };
    let outcome = outcome.map(|mut r| {
        r.duration_ms = started.elapsed().as_millis() as i64;
        r
    });
    if let Err(e) = finish(db, &claimed, &outcome).await {
        tracing::warn!(job.id = %claimed.job_id, error = %e, "could not record the end of a compliance sync");
    }
    match &outcome {
        Ok(r) => tracing::info!(
            team.id = %claimed.team, job.id = %claimed.job_id, findings = r.findings_read,
            duration_ms = r.duration_ms, "compliance sync completed"
        ),
        Err(e) => {
            tracing::warn!(team.id = %claimed.team, job.id = %claimed.job_id, error = %e, "compliance sync failed")
        }
    }
    outcome
}

/// Renews the lease until it cannot; returns why (the sync is then abandoned).
async fn keep_lease(db: &Mongo, claimed: &ClaimedSync) -> String {
    let mut failures = 0;
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let r = db
            .compliance
            .sync_jobs
            .update_one(
                doc! { "_id": &claimed.job_id, "lease_token": &claimed.lease_token, "status": "running" },
                doc! { "$set": { "lease_expires_at": Timestamp::now().plus(LEASE) } },
            )
            .await;
        match r {
            Ok(u) if u.matched_count == 1 => failures = 0,
            Ok(_) => return "the sync's lease was taken over (it ran past its lease)".into(),
            Err(e) => {
                failures += 1;
                // The lease outlives three missed renewals; stop before it may lapse.
                if failures >= 3 {
                    return format!("the sync's lease could not be renewed: {e}");
                }
            }
        }
    }
}

async fn finish(db: &Mongo, claimed: &ClaimedSync, outcome: &Result<SyncResult, String>) -> StoreResult<()> {
    let c = &db.compliance;
    let now = Timestamp::now();
    let set = match outcome {
        Ok(r) => doc! { "status": "completed", "finished_at": now, "result": bson::serialize_to_bson(r)? },
        Err(e) => doc! { "status": "failed", "finished_at": now, "error": e },
    };
    let ended = c
        .sync_jobs
        .update_one(
            doc! { "_id": &claimed.job_id, "lease_token": &claimed.lease_token, "status": "running" },
            doc! { "$set": set },
        )
        .await?;
    if ended.matched_count == 0 {
        // Another process declared it abandoned meanwhile; what it recorded stands.
        return Ok(());
    }
    let mut team_set =
        doc! { "active_job_id": Bson::Null, "last_job_id": &claimed.job_id, "last_attempt_at": claimed.started_at };
    if outcome.is_ok() {
        team_set.insert("last_completed_job_id", &claimed.job_id);
        team_set.insert("last_sync_started_at", claimed.started_at);
    }
    c.teams
        .update_one(doc! { "_id": &claimed.team, "active_job_id": &claimed.job_id }, doc! { "$set": team_set })
        .await?;
    Ok(())
}

/// Per control, while findings stream by.
#[derive(Default)]
struct Acc {
    tally: Tally,
    evidence: Vec<Evidence>,
    paths: BTreeMap<String, i64>,
}

async fn compute_and_write(db: &Mongo, claimed: &ClaimedSync) -> StoreResult<SyncResult> {
    let (controls, checks) = store::mapper_input(db, &claimed.catalog_id).await?;
    if controls.is_empty() {
        return Err(StoreError::Corrupt(format!("catalog {} has no controls", claimed.catalog_id)));
    }
    let mut result = SyncResult { catalog_controls: controls.len() as i64, ..SyncResult::default() };
    let mut mapper = Mapper::new(controls, &checks);
    let mut acc: Vec<Acc> = (0..mapper.controls.len()).map(|_| Acc::default()).collect();
    let mut cursor = db
        .findings
        .find(doc! { "team_id": &claimed.team })
        .projection(doc! {
            "_id": 1, "tool": 1, "rule_id": 1, "title": 1, "service": 1, "status": 1, "verdict": 1, "compliance": 1,
        })
        .batch_size(READ_BATCH)
        .await?;
    while let Some(d) = cursor.try_next().await? {
        result.findings_read += 1;
        let id = d.get_str("_id").unwrap_or_default();
        let tool = d.get_str("tool").unwrap_or_default();
        let rule_id = d.get_str("rule_id").unwrap_or_default();
        let title = d.get_str("title").unwrap_or_default();
        let status_text = d.get_str("status").unwrap_or_default();
        let Ok(status) = status_text.parse::<FindingStatus>() else {
            return Err(StoreError::Corrupt(format!("finding {id} has an unknown status `{status_text}`")));
        };
        let verdict = match d.get_str("verdict").unwrap_or("fail") {
            "pass" => Verdict::Pass,
            "manual" => Verdict::Manual,
            _ => Verdict::Fail,
        };
        let compliance = compliance_of(&d);
        let text = FindingText { tool, rule_id, title, service: d.get_str("service").ok(), compliance: &compliance };
        let mappings = mapper.map(&text);
        if mappings.is_empty() {
            result.unmapped_findings += 1;
            continue;
        }
        result.mapped_findings += 1;
        *result.findings_by_path.entry(mappings[0].path.as_str().to_string()).or_default() += 1;
        let kind = EvidenceKind::of(status, verdict);
        for m in mappings.iter() {
            let a = &mut acc[m.control];
            a.tally.add(kind);
            *a.paths.entry(m.path.as_str().to_string()).or_default() += 1;
            let keep = a.evidence.len() < EVIDENCE_PER_CONTROL;
            let replace = !keep && kind == EvidenceKind::Failing;
            if keep || replace {
                let e = Evidence {
                    finding_id: id.to_string(),
                    tool: tool.to_string(),
                    rule_id: rule_id.to_string(),
                    title: title.to_string(),
                    status,
                    kind,
                    path: m.path.as_str().to_string(),
                    explanation: m.explanation.clone(),
                };
                if keep {
                    a.evidence.push(e);
                } else if let Some(slot) = a.evidence.iter_mut().rev().find(|x| x.kind != EvidenceKind::Failing) {
                    *slot = e;
                }
            }
        }
    }
    let derived: Vec<Derived> = acc
        .into_iter()
        .enumerate()
        .filter(|(_, a)| a.tally.total() > 0)
        .map(|(i, a)| {
            let (state, reason) = a.tally.derive();
            Derived {
                scf_id: mapper.controls[i].scf_id.clone(),
                state,
                reason,
                tally: a.tally,
                evidence: a.evidence,
                paths: a.paths,
            }
        })
        .collect();
    result.controls_with_evidence = derived.len() as i64;
    store::write_derived(db, &claimed.team, &claimed.job_id, &derived).await?;
    let states = store::team_states(db, &claimed.team).await?;
    for s in states.values() {
        *result.states.entry(s.state().as_str().to_string()).or_default() += 1;
        if s.manual.is_some() {
            result.overridden_controls += 1;
        }
    }
    let counted: i64 = result.states.values().sum();
    *result.states.entry(ControlState::NotAssessed.as_str().to_string()).or_default() +=
        (result.catalog_controls - counted).max(0);
    Ok(result)
}

/// A finding's `compliance` (framework → requirement ids), tolerating anything else.
fn compliance_of(d: &Document) -> BTreeMap<String, Vec<String>> {
    let Ok(c) = d.get_document("compliance") else { return BTreeMap::new() };
    c.iter()
        .filter_map(|(k, v)| {
            let ids: Vec<String> = v.as_array()?.iter().filter_map(|x| x.as_str().map(str::to_string)).collect();
            (!ids.is_empty()).then(|| (k.clone(), ids))
        })
        .collect()
}

/// A sync of the team, run here and now (the scheduler's entry point): claims it, runs it, and returns
/// its job id and result; `Ok(None)` when one is already running elsewhere (its id is logged).
pub async fn sync_team(
    db: &Mongo,
    team: &TeamId,
    trigger: SyncTrigger,
) -> Result<Option<(SyncJobId, Result<SyncResult, String>)>, SyncError> {
    match claim(db, team, trigger, None).await? {
        SyncStart::Claimed(c) => {
            let id = c.job_id.clone();
            let r = run(db, c).await;
            Ok(Some((id, r)))
        }
        SyncStart::Running(id) => {
            tracing::info!(team.id = %team, job.id = %id, "a compliance sync of the team is already running");
            Ok(None)
        }
    }
}

/// What [`sync_due_teams`] did for one team.
#[derive(Debug)]
pub struct DueSync {
    pub team: TeamId,
    pub trigger: SyncTrigger,
    /// The job and its result; `None`: a sync of the team was already running.
    pub ran: Option<(SyncJobId, Result<SyncResult, String>)>,
}

/// Syncs every team that is due, one after the other: a team whose last successful sync started more
/// than `CSPM_COMPLIANCE_SYNC_HOURS` ago (or never), or one with a scan run that completed (`completed`
/// or `partial`) after its last successful sync started. Cheap when nothing is due: call it every minute
/// or so. Returns what it did; nothing when no catalog is imported.
pub async fn sync_due_teams(db: &Mongo, settings: &ComplianceSettings) -> StoreResult<Vec<DueSync>> {
    if store::current_catalog_id(db).await?.is_none() {
        return Ok(Vec::new());
    }
    let teams: Vec<Document> = db.teams.find(doc! {}).projection(doc! { "_id": 1 }).await?.try_collect().await?;
    let state: HashMap<String, Document> = db
        .compliance
        .teams
        .find(doc! {})
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .into_iter()
        .filter_map(|d| Some((d.get_str("_id").ok()?.to_string(), d)))
        .collect();
    let now = Timestamp::now();
    let mut out = Vec::new();
    for t in teams {
        let Some(team) = t.get_str("_id").ok().and_then(|s| s.parse::<TeamId>().ok()) else { continue };
        let s = state.get(team.as_str());
        let last_ok = s.and_then(|d| number(d, "last_sync_started_at")).map(Timestamp::from_millis);
        let last_attempt = s.and_then(|d| number(d, "last_attempt_at")).map(Timestamp::from_millis);
        let trigger = match last_ok {
            None if last_attempt.is_none_or(|a| now.since(a) >= RETRY_AFTER_FAILURE) => Some(SyncTrigger::Schedule),
            None => None,
            Some(ok) if now.since(ok) >= settings.sync_interval => Some(SyncTrigger::Schedule),
            Some(ok) => {
                let retry_ok = last_attempt.is_none_or(|a| a <= ok || now.since(a) >= RETRY_AFTER_FAILURE);
                let finished = db
                    .scan_runs
                    .find_one(doc! {
                        "team_id": &team,
                        "status": { "$in": ["completed", "partial"] },
                        "finished_at": { "$gt": ok },
                    })
                    .projection(doc! { "_id": 1 })
                    .await?;
                (retry_ok && finished.is_some()).then_some(SyncTrigger::RunCompleted)
            }
        };
        let Some(trigger) = trigger else { continue };
        match sync_team(db, &team, trigger).await {
            Ok(ran) => out.push(DueSync { team, trigger, ran }),
            Err(SyncError::NoCatalog) => break,
            Err(SyncError::Store(e)) => return Err(e),
        }
    }
    Ok(out)
}

/// A job of the team.
pub async fn get(db: &Mongo, team: &TeamId, id: &SyncJobId) -> StoreResult<Option<SyncJob>> {
    match db.compliance.sync_jobs.find_one(doc! { "_id": id, "team_id": team }).await? {
        Some(d) => Ok(Some(bson::deserialize_from_document(d)?)),
        None => Ok(None),
    }
}

async fn get_any(db: &Mongo, id: &SyncJobId) -> StoreResult<Option<SyncJob>> {
    match db.compliance.sync_jobs.find_one(doc! { "_id": id }).await? {
        Some(d) => Ok(Some(bson::deserialize_from_document(d)?)),
        None => Ok(None),
    }
}

/// The team's running sync (if any) and its last finished one.
pub async fn team_jobs(db: &Mongo, team: &TeamId) -> StoreResult<(Option<SyncJob>, Option<SyncJob>)> {
    let Some(d) = db.compliance.teams.find_one(doc! { "_id": team }).await? else { return Ok((None, None)) };
    let load = |key: &str| d.get_str(key).ok().and_then(|s| s.parse::<SyncJobId>().ok());
    let active = match load("active_job_id") {
        Some(id) => get(db, team, &id).await?.filter(|j| j.status == SyncStatus::Running),
        None => None,
    };
    let last = match load("last_job_id") {
        Some(id) => get(db, team, &id).await?,
        None => None,
    };
    Ok((active, last))
}
