//! Starting and cancelling scans: the orchestration rules of design sections 3 and 4, used by the API
//! (and later by the scheduler) so that every entry point splits and admits work the same way.

use std::collections::HashSet;
use std::time::Duration;

use crate::config::{Env, KeySpec};
use crate::db::Mongo;
use crate::dispatch;
use crate::domain::native::{NetworkScanType, PortList, Target, TargetPolicy};
use crate::domain::provider::{GLOBAL_REGION, validate_region};
use crate::domain::scan::{CanaryOptions, RunStatus, ScanType, Tool, ToolId};
use crate::error::{StoreError, StoreResult};
use crate::ids::{AccountId, RunId, ScheduleId, TeamId, UserId};
use crate::queue::{QueueKind, Queues};
use crate::store::accounts::{self, ActiveClaim};
use crate::store::runs::{self, RunDoc, RunKind};
use crate::store::subjobs::{self, NativeSpec, SubJobDoc};
use crate::store::{results, users};

/// The keys of the rules every entry point that starts scans applies (the API, the scheduler).
pub const SCAN_KEYS: &[KeySpec] = &[
    KeySpec::optional("ALLOW_PRIVATE_SCAN_TARGETS", "false", "allow native scans of private (RFC 1918, ULA) addresses"),
    KeySpec::optional(
        "CSPM_ALLOW_LOOPBACK_SCAN_TARGETS",
        "false",
        "allow native scans of loopback addresses (development and tests only)",
    ),
    KeySpec::optional(
        "CSPM_MAX_SUBJOBS_PER_RUN",
        "10000",
        "largest number of sub-jobs (regions × tools) one scan may create",
    ),
    KeySpec::optional("CSPM_SUBJOB_MAX_ATTEMPTS", "3", "times a sub-job may start before a lost worker fails it"),
    KeySpec::optional("CSPM_CLOUD_SUBJOB_TIMEOUT_SECS", "3600", "time limit of one cloud sub-job"),
    KeySpec::optional("CSPM_NATIVE_SUBJOB_TIMEOUT_SECS", "1800", "time limit of one native scan"),
];

impl RunLimits {
    pub fn load(env: &Env) -> Self {
        Self {
            max_subjobs_per_run: env.bounded("CSPM_MAX_SUBJOBS_PER_RUN", 10_000, 1, 100_000),
            max_attempts: env.bounded("CSPM_SUBJOB_MAX_ATTEMPTS", 3, 1, 20),
            cloud_timeout: env.seconds("CSPM_CLOUD_SUBJOB_TIMEOUT_SECS", 3600, 1, 7 * 86_400),
            native_timeout: env.seconds("CSPM_NATIVE_SUBJOB_TIMEOUT_SECS", 1800, 1, 7 * 86_400),
            feed_batch: 500,
        }
    }
}

impl TargetPolicy {
    pub fn load(env: &Env) -> Self {
        Self {
            allow_private: env.flag("ALLOW_PRIVATE_SCAN_TARGETS", false),
            allow_loopback: env.flag("CSPM_ALLOW_LOOPBACK_SCAN_TARGETS", false),
        }
    }
}

/// Limits that apply to every new run.
#[derive(Debug, Clone)]
pub struct RunLimits {
    pub max_subjobs_per_run: usize,
    pub max_attempts: i32,
    pub cloud_timeout: Duration,
    pub native_timeout: Duration,
    /// How many messages one feed pushes right after creation (the rest is fed in the background).
    pub feed_batch: u64,
}

/// Why a scan was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    /// An invalid value of a named request field.
    #[error("{0}: {1}")]
    InvalidField(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request to scan a cloud account.
#[derive(Debug, Clone)]
pub struct CloudScanRequest {
    pub team: TeamId,
    pub account: AccountId,
    pub scan_type: ScanType,
    pub regions: Option<Vec<String>>,
    pub tools: Option<Vec<ToolId>>,
    pub canary: Option<CanaryOptions>,
    pub trigger: String,
    pub created_by: Option<UserId>,
    /// The run's id when the caller derives it (a schedule's fire); a fresh one otherwise.
    pub run_id: Option<RunId>,
    pub schedule_id: Option<ScheduleId>,
}

/// A started scan, or the one that was already active.
#[derive(Debug, Clone)]
pub struct Started {
    pub run: RunDoc,
    /// True when the account already had an active scan: `run` is that scan, nothing was created.
    pub already_active: bool,
}

/// Starts a cloud scan: resolves regions (explicit → account → provider default) and tools, enforces
/// one active scan per account (race-free), creates the run and one SubJob per region × tool, and feeds
/// the queue. A Redis outage after creation does not lose the run: its SubJobs wait in MongoDB.
pub async fn start_cloud_scan(
    db: &Mongo,
    queues: &Queues,
    req: CloudScanRequest,
    limits: &RunLimits,
) -> Result<Started, StartError> {
    let account = accounts::get(db, &req.team, &req.account).await?.ok_or(StartError::NotFound)?;

    let regions: Vec<String> = if !account.provider.is_regional() {
        vec![GLOBAL_REGION.to_string()]
    } else if let Some(explicit) = req.regions.as_ref().filter(|r| !r.is_empty()) {
        dedup(
            explicit
                .iter()
                .map(|r| validate_region(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StartError::InvalidField("regions", e))?,
        )
    } else if !account.regions.is_empty() {
        account.regions.clone()
    } else {
        account.provider.default_regions(req.scan_type)
    };

    let tools = match req.tools.as_ref().filter(|t| !t.is_empty()) {
        Some(t) => t.clone(),
        None => vec![ToolId::plain(Tool::Prowler)],
    };
    let mut seen = HashSet::new();
    for t in &tools {
        if !t.tool.scans_cloud() {
            return Err(StartError::Invalid(format!("tool `{t}` does not scan cloud accounts")));
        }
        if !seen.insert(t.to_string()) {
            return Err(StartError::Invalid(format!("tool `{t}` is listed twice")));
        }
    }
    let has_canary = tools.iter().any(|t| t.tool == Tool::Canary);
    if let Some(c) = &req.canary {
        if !has_canary {
            return Err(StartError::Invalid("canary options given but no canary tool requested".into()));
        }
        c.validate().map_err(StartError::Invalid)?;
    }
    let count = regions.len() * tools.len();
    if count > limits.max_subjobs_per_run {
        return Err(StartError::Invalid(format!(
            "{} regions × {} tools = {count} sub-jobs, more than the limit of {}",
            regions.len(),
            tools.len(),
            limits.max_subjobs_per_run
        )));
    }

    let run_id = req.run_id.clone().unwrap_or_default();
    match accounts::claim_active_run(db, &req.team, &req.account, &run_id).await? {
        ActiveClaim::Claimed => {}
        ActiveClaim::NotFound => return Err(StartError::NotFound),
        ActiveClaim::Existing(existing) => {
            let run = runs::get(db, &req.team, &existing).await?;
            return match run {
                Some(run) => Ok(Started { run, already_active: true }),
                // The other request is between its claim and its insert: answer with its id.
                None => Ok(Started { run: placeholder(&req, &account.provider, existing), already_active: true }),
            };
        }
    }

    let minutes_per_region: i64 = if req.scan_type == ScanType::Full { 15 } else { 8 };
    let mut run = RunDoc::queued(
        run_id.clone(),
        req.team.clone(),
        RunKind::Cloud,
        req.scan_type.as_str(),
        &req.trigger,
        req.created_by.clone(),
    );
    run.account_id = Some(req.account.clone());
    run.provider = Some(account.provider);
    run.schedule_id = req.schedule_id.clone();
    run.regions = regions.clone();
    run.tools = tools.iter().map(ToString::to_string).collect();
    run.sub_jobs_count = count as i64;
    run.estimated_completion =
        Some(run.created_at.plus(Duration::from_secs(minutes_per_region as u64 * regions.len() as u64 * 60)));
    let mut jobs = Vec::with_capacity(count);
    for region in &regions {
        for tool in &tools {
            jobs.push(new_subjob(
                &run,
                QueueKind::Cloud,
                tool.clone(),
                region.clone(),
                limits,
                limits.cloud_timeout,
                |j| {
                    j.account_id = Some(req.account.clone());
                    j.provider = Some(account.provider);
                    j.provider_account_id = Some(account.provider_account_id.clone());
                    if tool.tool == Tool::Canary {
                        j.canary = Some(req.canary.clone().unwrap_or_default());
                    }
                },
            ));
        }
    }
    if let Err(e) = runs::insert(db, &run).await {
        // Do not leave the account pointing at a run that was never written.
        let _ = accounts::release_active_run(db, &req.account, &run_id).await;
        return Err(e.into());
    }
    persist(db, queues, QueueKind::Cloud, &run, jobs, limits).await?;
    Ok(Started { run, already_active: false })
}

/// A request for a native network scan.
#[derive(Debug, Clone)]
pub struct NetworkScanRequest {
    pub team: TeamId,
    pub target: String,
    pub ports: Option<String>,
    pub scan_type: NetworkScanType,
    pub trigger: String,
    pub created_by: Option<UserId>,
}

/// Starts a network discovery scan (nmap) of a target the SSRF policy allows.
pub async fn start_network_scan(
    db: &Mongo,
    queues: &Queues,
    req: NetworkScanRequest,
    policy: &TargetPolicy,
    limits: &RunLimits,
) -> Result<RunDoc, StartError> {
    let spec = network_spec(&req.target, req.ports.as_deref(), req.scan_type, policy).await?;
    let req = NativeScanRequest {
        team: req.team,
        tool: Tool::Nmap,
        spec,
        scan_type: req.scan_type.as_str().to_string(),
        trigger: req.trigger,
        created_by: req.created_by,
        run_id: None,
        schedule_id: None,
    };
    start_native_scan(db, queues, req, limits).await
}

/// The checked spec of a network scan: a target the SSRF policy allows (names resolved, every address
/// checked) and a port list that parses.
pub async fn network_spec(
    target: &str,
    ports: Option<&str>,
    scan_type: NetworkScanType,
    policy: &TargetPolicy,
) -> Result<NativeSpec, StartError> {
    let target = Target::parse(target).map_err(|e| StartError::InvalidField("target", e))?;
    policy.resolve(&target).await.map_err(|e| StartError::InvalidField("target", e))?;
    let ports = ports.map(PortList::parse).transpose().map_err(|e| StartError::InvalidField("ports", e))?;
    Ok(NativeSpec {
        target: target.to_string(),
        ports,
        scan_type,
        web_profile: None,
        artifact: None,
        scanners: Vec::new(),
    })
}

/// A request for a native scan of one target by one tool, its target already checked by the caller
/// (SSRF guard for hosts and URLs, allowed roots for paths, grammar for images).
#[derive(Debug, Clone)]
pub struct NativeScanRequest {
    pub team: TeamId,
    pub tool: Tool,
    pub spec: NativeSpec,
    /// The profile shown for the run (`port_scan`, `quick`, `image`...).
    pub scan_type: String,
    pub trigger: String,
    pub created_by: Option<UserId>,
    /// As in [`CloudScanRequest`].
    pub run_id: Option<RunId>,
    pub schedule_id: Option<ScheduleId>,
}

/// Starts a native scan: one run with one SubJob on the native queue.
pub async fn start_native_scan(
    db: &Mongo,
    queues: &Queues,
    req: NativeScanRequest,
    limits: &RunLimits,
) -> Result<RunDoc, StartError> {
    let mut run = RunDoc::queued(
        req.run_id.clone().unwrap_or_default(),
        req.team.clone(),
        RunKind::Native,
        &req.scan_type,
        &req.trigger,
        req.created_by.clone(),
    );
    run.schedule_id = req.schedule_id.clone();
    run.target = Some(req.spec.target.clone());
    run.regions = vec![GLOBAL_REGION.to_string()];
    run.tools = vec![req.tool.as_str().to_string()];
    run.sub_jobs_count = 1;
    run.estimated_completion = Some(run.created_at.plus(Duration::from_secs(300)));
    let spec = req.spec;
    let job = new_subjob(
        &run,
        QueueKind::Native,
        ToolId::plain(req.tool),
        GLOBAL_REGION.to_string(),
        limits,
        limits.native_timeout,
        move |j| j.native = Some(spec),
    );
    match runs::insert(db, &run).await {
        Ok(()) => {}
        // The run of this id exists (a schedule's fire handled twice): it is the answer.
        Err(StoreError::Duplicate) if req.run_id.is_some() => {
            return runs::get_any(db, &run.id).await?.ok_or(StartError::Store(StoreError::Duplicate));
        }
        Err(e) => return Err(e.into()),
    }
    persist(db, queues, QueueKind::Native, &run, vec![job], limits).await?;
    Ok(run)
}

/// What a cancel did.
#[derive(Debug, Clone)]
pub struct Cancelled {
    pub status: RunStatus,
    /// Queued SubJobs that will never start.
    pub cancelled_sub_jobs: u64,
    /// Running SubJobs whose workers were asked to stop.
    pub stopping_sub_jobs: u64,
}

/// Cancels an active run: queued SubJobs never start, running ones are stopped by their workers within
/// a lease renewal. `Ok(None)` when the run does not exist for the team; `Err(Invalid)` when it already
/// finished.
pub async fn cancel_run(
    db: &Mongo,
    queues: &Queues,
    team: &TeamId,
    id: &RunId,
) -> Result<Option<Cancelled>, StartError> {
    let Some(run) = runs::get(db, team, id).await? else {
        return Ok(None);
    };
    if !runs::request_cancel(db, team, id).await? {
        return Err(StartError::Invalid(format!("the scan already finished (status {})", run.status)));
    }
    let (cancelled, stopping) = subjobs::cancel_run(db, id).await?;
    if cancelled > 0
        && let Err(e) = queues.count_finished(id, cancelled).await
    {
        tracing::debug!(error = %e, "could not count the cancelled sub-jobs; the roll-up sweep will end the run");
    }
    let status = runs::finalize(db, id).await?.unwrap_or(run.status);
    Ok(Some(Cancelled { status, cancelled_sub_jobs: cancelled, stopping_sub_jobs: stopping }))
}

fn new_subjob(
    run: &RunDoc,
    queue: QueueKind,
    tool: ToolId,
    region: String,
    limits: &RunLimits,
    timeout: Duration,
    customise: impl FnOnce(&mut SubJobDoc),
) -> SubJobDoc {
    let mut job = SubJobDoc {
        max_attempts: limits.max_attempts,
        timeout_secs: timeout.as_secs() as i64,
        created_at: run.created_at,
        run_size: run.sub_jobs_count,
        ..SubJobDoc::queued(run.id.clone(), run.team_id.clone(), queue, tool, region)
    };
    customise(&mut job);
    job
}

async fn persist(
    db: &Mongo,
    queues: &Queues,
    kind: QueueKind,
    run: &RunDoc,
    jobs: Vec<SubJobDoc>,
    limits: &RunLimits,
) -> StoreResult<()> {
    // Called once the run is written. Its SubJobs come after it: the roll-up waits until all
    // `sub_jobs_count` SubJobs exist, so a SubJob that finishes before its siblings are written cannot end
    // the run early. The unified record comes before them, so that it cannot overwrite a fast run's end.
    if let Err(e) = results::upsert_for_run(db, run).await {
        tracing::warn!(run.id = %run.id, error = %e, "could not write the scan record; the roll-up will");
    }
    let all_admitted = match dispatch::insert_and_admit(db, queues, kind, jobs).await {
        Ok(all) => all,
        Err(e) => {
            // The run exists: end it (which also frees the account) rather than leave it half made. If
            // the database is away for this too, the roll-up sweep abandons it after its grace period.
            if let Err(e2) = runs::abandon(db, run, &format!("creating its sub-jobs failed: {e}")).await {
                tracing::warn!(run.id = %run.id, error = %e2, "could not abandon a half-created run; the sweep will");
            }
            return Err(e);
        }
    };
    if !all_admitted {
        // What did not fit (or could not be pushed now) waits in MongoDB; feed what fits, and leave the
        // rest to the background feeders (workers, scheduler).
        if let Err(e) = dispatch::feed(db, queues, kind, limits.feed_batch).await {
            tracing::warn!(error = %e, queue = kind.as_str(), "could not feed the queue now; background feeders will retry");
        }
    }
    Ok(())
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

fn placeholder(req: &CloudScanRequest, provider: &crate::domain::provider::Provider, id: RunId) -> RunDoc {
    let mut run = RunDoc::queued(id, req.team.clone(), RunKind::Cloud, req.scan_type.as_str(), &req.trigger, None);
    run.account_id = Some(req.account.clone());
    run.provider = Some(*provider);
    run
}

/// Creates the bootstrap team and administrator if no user has the configured email yet. Returns true
/// when the administrator was created by this call (so that a generated password is shown only once).
pub async fn bootstrap_admin(db: &Mongo, email: &str, password_hash: String) -> StoreResult<bool> {
    if users::find_by_email(db, email).await?.is_some() {
        return Ok(false);
    }
    let team = users::ensure_team(db, "Default").await?;
    match users::create_user(db, email, "Administrator", password_hash, &team.id, crate::domain::role::Role::Admin)
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::Duplicate) => Ok(false),
        Err(e) => Err(e),
    }
}
