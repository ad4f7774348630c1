//! The schedule engine: turns due schedules into scans, exactly once per fire however many scheduler
//! replicas run, and follows each scheduled scan to its end.
//!
//! One tick, at a time `now` the caller gives (the scheduler passes the clock; tests pass chosen times):
//! 1. **take**: every active schedule whose stored next fire has passed gets ONE fire document, whose id is
//!    the schedule and that stored time (a second replica's insert is refused), and its next fire moves
//!    on with a compare-and-set on the stored value (so it moves once). After downtime the fire is for the
//!    latest passed time and earlier ones are counted as missed: at most one catch-up run per schedule,
//!    and none when even the latest is older than the catch-up window.
//! 2. **handle**: open fires are leased (a replica that dies mid-way loses its lease and another takes
//!    the fire over) and decided: skipped (scanned within the skip window, target gone, previous scan
//!    active under `skip`), waiting (previous scan active under `queue` / `cancel_previous`), failed
//!    (the scan cannot start), or started. The run's id derives from the fire, so a fire handled twice
//!    starts one run.
//! 3. **observe**: started fires whose scan ended record the outcome on the schedule once; an account
//!    whose last N scheduled scans failed has its schedules paused with the reason; a successful manual
//!    scan of such an account resumes them.
//!
//! No leader is needed: every step is a conditional write, and a paused replica that wakes up with a
//! stale view finds its fire taken and its compare-and-set refused.

use std::time::Duration;

use bson::doc;

use crate::config::{Env, KeySpec};
use crate::db::Mongo;
use crate::domain::native::{Target, TargetPolicy, WebTarget};
use crate::domain::scan::{RunStatus, ScanType, Tool, ToolId};
use crate::domain::schedule::{Due, OverlapPolicy, due};
use crate::error::StoreResult;
use crate::ids::AccountId;
use crate::orchestrate::{self, CloudScanRequest, NativeScanRequest, RunLimits, StartError, Started};
use crate::queue::Queues;
use crate::store::accounts;
use crate::store::runs::{self, RunDoc};
use crate::store::schedules::{self, FireDoc, FireStatus, ScheduleDoc, ScheduleStatus, ScheduleTarget};
use crate::time::Timestamp;

pub const SCHEDULE_KEYS: &[KeySpec] = &[
    KeySpec::optional("CSPM_SCHEDULE_TICK_SECS", "5", "how often due schedules are fired and scheduled scans followed"),
    KeySpec::optional(
        "CSPM_SCHEDULE_CATCH_UP_HOURS",
        "24",
        "after downtime, a schedule fires once for its latest missed time if it is at most this old; older ones are counted as missed",
    ),
    KeySpec::optional(
        "CSPM_SCHEDULE_FIRE_LEASE_SECS",
        "60",
        "a fire whose scheduler stopped handling it is taken over by another after this long",
    ),
    KeySpec::optional(
        "CLOUD_SCAN_MAX_CONSECUTIVE_FAILURES",
        "3",
        "scheduled scans of an account that may fail in a row before its schedules pause",
    ),
];

#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub tick: Duration,
    pub catch_up_window: Duration,
    pub fire_lease: Duration,
    pub max_consecutive_failures: u32,
}

impl ScheduleSettings {
    pub fn load(env: &Env) -> Self {
        Self {
            tick: env.seconds("CSPM_SCHEDULE_TICK_SECS", 5, 1, 300),
            catch_up_window: Duration::from_secs(
                3600 * env.bounded::<u64>("CSPM_SCHEDULE_CATCH_UP_HOURS", 24, 0, 24 * 31),
            ),
            fire_lease: env.seconds("CSPM_SCHEDULE_FIRE_LEASE_SECS", 60, 5, 3600),
            max_consecutive_failures: env.bounded("CLOUD_SCAN_MAX_CONSECUTIVE_FAILURES", 3, 1, 100),
        }
    }
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            catch_up_window: Duration::from_secs(24 * 3600),
            fire_lease: Duration::from_secs(60),
            max_consecutive_failures: 3,
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Fires this replica created.
    pub fired: u64,
    /// Fire times that passed unrun (downtime beyond the catch-up window, or before a catch-up fire).
    pub missed: u64,
    pub started: u64,
    pub skipped: u64,
    pub waiting: u64,
    pub failed: u64,
    /// Scheduled scans whose end was recorded.
    pub finished: u64,
    pub accounts_paused: u64,
    pub accounts_resumed: u64,
}

/// How a fire was decided.
enum Decision {
    Started,
    Skipped,
    Waiting,
    Failed,
    /// Another replica holds it now.
    Lost,
}

/// The engine of one scheduler replica.
#[derive(Clone)]
pub struct Engine {
    db: Mongo,
    queues: Queues,
    limits: RunLimits,
    policy: TargetPolicy,
    settings: ScheduleSettings,
    /// This replica's name (lease owner).
    me: String,
}

/// How many schedules or fires one step reads at a time.
const PAGE: i64 = 200;

impl Engine {
    pub fn new(
        db: Mongo,
        queues: Queues,
        limits: RunLimits,
        policy: TargetPolicy,
        settings: ScheduleSettings,
        me: String,
    ) -> Self {
        Self { db, queues, limits, policy, settings, me }
    }

    pub fn settings(&self) -> &ScheduleSettings {
        &self.settings
    }

    /// One pass of the three steps at `now`.
    pub async fn tick(&self, now: Timestamp) -> StoreResult<TickReport> {
        let mut r = TickReport::default();
        self.take_due(now, &mut r).await?;
        self.handle_fires(now, &mut r).await?;
        self.observe(now, &mut r).await?;
        Ok(r)
    }

    /// Step 1 on the schedules due now.
    pub async fn take_due(&self, now: Timestamp, r: &mut TickReport) -> StoreResult<()> {
        let due = schedules::due(&self.db, now, PAGE).await?;
        self.take_from(due, now, r).await
    }

    /// Step 1 on schedules as read earlier (`snapshot` may be stale: a replica that paused between its
    /// read and its writes). A stale snapshot takes nothing that was taken.
    pub async fn take_from(&self, snapshot: Vec<ScheduleDoc>, now: Timestamp, r: &mut TickReport) -> StoreResult<()> {
        for s in snapshot {
            let Some(stored) = s.next_fire_at else { continue };
            if s.status != ScheduleStatus::Active {
                continue;
            }
            match due(&s.trigger, stored, now, self.settings.catch_up_window) {
                Due::NotYet => {}
                Due::Fire { fire_at, missed, next } => {
                    let fire = FireDoc {
                        id: FireDoc::key(&s.id, stored),
                        schedule_id: s.id.clone(),
                        team_id: s.team_id.clone(),
                        account_id: s.account_id.clone(),
                        fire_at,
                        missed_before: i64::from(missed),
                        status: FireStatus::Pending,
                        reason: None,
                        run_id: None,
                        lease_owner: Some(self.me.clone()),
                        lease_until: Some(now.plus(self.settings.fire_lease)),
                        attempts: 0,
                        created_at: now,
                        updated_at: now,
                        run_finished_at: None,
                    };
                    // Fire first, then move on: a replica that dies in between leaves a fire that is
                    // handled, and a schedule that the next replica moves on (its fire insert refused).
                    let created = schedules::insert_fire(&self.db, &fire).await?;
                    let moved =
                        schedules::advance(&self.db, &s, stored, next, Some(fire_at), i64::from(missed), now).await?;
                    if created {
                        r.fired += 1;
                        tracing::info!(schedule.id = %s.id, fire = %fire.id, fire_at = %fire_at, missed, "schedule fired");
                    }
                    if moved {
                        r.missed += u64::from(missed);
                    }
                }
                Due::Missed { missed, next } => {
                    if schedules::advance(&self.db, &s, stored, next, None, i64::from(missed), now).await? {
                        r.missed += u64::from(missed);
                        tracing::warn!(
                            schedule.id = %s.id, missed, due = %stored,
                            "fire times passed while no scheduler ran, beyond the catch-up window: not run"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Step 2: decide the open fires no other replica is handling.
    pub async fn handle_fires(&self, now: Timestamp, r: &mut TickReport) -> StoreResult<()> {
        for f in schedules::fires_to_handle(&self.db, &self.me, now, PAGE).await? {
            let Some(f) = schedules::lease_fire(&self.db, &f.id, &self.me, now, self.settings.fire_lease).await? else {
                continue;
            };
            match self.handle(&f, now).await {
                Ok(Decision::Started) => r.started += 1,
                Ok(Decision::Skipped) => r.skipped += 1,
                Ok(Decision::Waiting) => r.waiting += 1,
                Ok(Decision::Failed) => r.failed += 1,
                Ok(Decision::Lost) => {}
                // The fire stays open; its lease runs out and it is handled again.
                Err(e) => tracing::warn!(fire = %f.id, error = %e, "could not handle a schedule's fire; will retry"),
            }
        }
        Ok(())
    }

    async fn handle(&self, f: &FireDoc, now: Timestamp) -> StoreResult<Decision> {
        let Some(s) = schedules::get_any(&self.db, &f.schedule_id).await? else {
            return self.close(f, None, FireStatus::Skipped, "the schedule no longer exists", now).await;
        };
        if s.status == ScheduleStatus::Paused {
            return self.close(f, Some(&s), FireStatus::Skipped, "the schedule is paused", now).await;
        }
        let run_id = f.run_id();
        // Handled before by a replica that died after starting the scan.
        if runs::get_any(&self.db, &run_id).await?.is_some() {
            return self.started(f, &s, &run_id, now).await;
        }
        match &s.target {
            ScheduleTarget::CloudAccount { account_id, scan_type, regions, tools } => {
                let Some(account) = accounts::get(&self.db, &s.team_id, account_id).await? else {
                    return self
                        .close(f, Some(&s), FireStatus::Skipped, "the cloud account no longer exists", now)
                        .await;
                };
                if let Some(secs) = s.skip_if_scanned_within_secs.filter(|v| *v > 0) {
                    let window = Duration::from_secs(secs as u64);
                    let full_only = *scan_type == ScanType::Full;
                    if let Some(recent) =
                        runs::recent_scan(&self.db, &s.team_id, account_id, now.minus(window), full_only).await?
                    {
                        let ended = recent.finished_at.unwrap_or(recent.created_at);
                        let why = format!(
                            "the account had a {} scan (run {}) that ended {} ago, within the skip window of {}",
                            recent.scan_type,
                            recent.id,
                            human(now.since(ended)),
                            human(window)
                        );
                        return self.close(f, Some(&s), FireStatus::Skipped, &why, now).await;
                    }
                }
                if let Some(active) = account.active_run_id.clone().filter(|a| *a != run_id)
                    && let Some(prev) = runs::get_any(&self.db, &active).await?.filter(|p| !p.status.is_terminal())
                {
                    return self.overlap(f, &s, &prev, now).await;
                }
                let tools = match tools.iter().map(|t| t.parse::<ToolId>()).collect::<Result<Vec<_>, _>>() {
                    Ok(t) => t,
                    Err(e) => return self.close(f, Some(&s), FireStatus::Failed, &e, now).await,
                };
                let req = CloudScanRequest {
                    team: s.team_id.clone(),
                    account: account_id.clone(),
                    scan_type: *scan_type,
                    regions: (!regions.is_empty()).then(|| regions.clone()),
                    tools: (!tools.is_empty()).then_some(tools),
                    canary: None,
                    trigger: "schedule".into(),
                    created_by: None,
                    run_id: Some(run_id.clone()),
                    schedule_id: Some(s.id.clone()),
                };
                match orchestrate::start_cloud_scan(&self.db, &self.queues, req, &self.limits).await {
                    Ok(Started { run, .. }) if run.id == run_id => self.started(f, &s, &run_id, now).await,
                    // Another scan took the account between the check and the claim.
                    Ok(Started { run, .. }) => self.overlap(f, &s, &run, now).await,
                    Err(StartError::NotFound) => {
                        self.close(f, Some(&s), FireStatus::Skipped, "the cloud account no longer exists", now).await
                    }
                    Err(StartError::Store(e)) => Err(e),
                    Err(e) => {
                        self.close(f, Some(&s), FireStatus::Failed, &format!("the scan cannot start: {e}"), now).await
                    }
                }
            }
            ScheduleTarget::Native { tool, scan_type, spec } => {
                if let Err(why) = self.check_native(*tool, &spec.target).await {
                    let why = format!("the target no longer passes the scan-target policy: {why}");
                    return self.close(f, Some(&s), FireStatus::Failed, &why, now).await;
                }
                if let Some(prev_id) = s.last_run_id.as_ref().filter(|p| **p != run_id)
                    && let Some(prev) = runs::get_any(&self.db, prev_id).await?.filter(|p| !p.status.is_terminal())
                {
                    return self.overlap(f, &s, &prev, now).await;
                }
                let req = NativeScanRequest {
                    team: s.team_id.clone(),
                    tool: *tool,
                    spec: spec.clone(),
                    scan_type: scan_type.clone(),
                    trigger: "schedule".into(),
                    created_by: None,
                    run_id: Some(run_id.clone()),
                    schedule_id: Some(s.id.clone()),
                };
                match orchestrate::start_native_scan(&self.db, &self.queues, req, &self.limits).await {
                    Ok(_) => self.started(f, &s, &run_id, now).await,
                    Err(StartError::Store(e)) => Err(e),
                    Err(e) => {
                        self.close(f, Some(&s), FireStatus::Failed, &format!("the scan cannot start: {e}"), now).await
                    }
                }
            }
        }
    }

    /// Host and URL targets are checked again at every fire: what a name resolves to can change.
    async fn check_native(&self, tool: Tool, target: &str) -> Result<(), String> {
        match tool {
            Tool::Nmap => self.policy.resolve(&Target::parse(target)?).await.map(|_| ()),
            Tool::Wapiti | Tool::Zap => self.policy.resolve(&WebTarget::parse(target)?.host).await.map(|_| ()),
            _ => Ok(()),
        }
    }

    async fn overlap(&self, f: &FireDoc, s: &ScheduleDoc, prev: &RunDoc, now: Timestamp) -> StoreResult<Decision> {
        match s.overlap {
            OverlapPolicy::Skip => {
                let why = format!("the previous scan {} is still {}", prev.id, prev.status.as_str());
                self.close(f, Some(s), FireStatus::Skipped, &why, now).await
            }
            OverlapPolicy::Queue | OverlapPolicy::CancelPrevious => {
                if f.status == FireStatus::Pending && schedules::other_fire_waiting(&self.db, &s.id, &f.id).await? {
                    let why = "another fire of this schedule is already waiting for the previous scan";
                    return self.close(f, Some(s), FireStatus::Skipped, why, now).await;
                }
                let why = if s.overlap == OverlapPolicy::CancelPrevious {
                    if !prev.cancel_requested {
                        match orchestrate::cancel_run(&self.db, &self.queues, &prev.team_id, &prev.id).await {
                            Ok(_) => {
                                tracing::info!(schedule.id = %s.id, run.id = %prev.id, "cancelled the previous scan for a scheduled one")
                            }
                            Err(StartError::Store(e)) => return Err(e),
                            Err(e) => tracing::debug!(run.id = %prev.id, error = %e, "previous scan not cancelled"),
                        }
                    }
                    format!("waiting for the previous scan {} to stop (cancelled)", prev.id)
                } else {
                    format!("waiting for the previous scan {} to end", prev.id)
                };
                let retry = now.plus(self.settings.tick);
                if schedules::set_fire(
                    &self.db,
                    &f.id,
                    &self.me,
                    FireStatus::Waiting,
                    Some(&why),
                    None,
                    Some(retry),
                    false,
                    now,
                )
                .await?
                {
                    Ok(Decision::Waiting)
                } else {
                    Ok(Decision::Lost)
                }
            }
        }
    }

    async fn started(
        &self,
        f: &FireDoc,
        s: &ScheduleDoc,
        run: &crate::ids::RunId,
        now: Timestamp,
    ) -> StoreResult<Decision> {
        // The counter first (once per fire), then the fire: a crash in between re-runs this, and the
        // marker stops the second count.
        schedules::count_once(
            &self.db,
            &s.id,
            &format!("{}:started", f.id),
            doc! { "stats.started": 1 },
            doc! { "last_run_id": run, "updated_at": now },
        )
        .await?;
        if schedules::set_fire(&self.db, &f.id, &self.me, FireStatus::Started, None, Some(run), None, false, now)
            .await?
        {
            tracing::info!(schedule.id = %s.id, fire = %f.id, run.id = %run, "scheduled scan started");
            Ok(Decision::Started)
        } else {
            Ok(Decision::Lost)
        }
    }

    /// Ends a fire without a scan (skipped or failed), counting it once.
    async fn close(
        &self,
        f: &FireDoc,
        s: Option<&ScheduleDoc>,
        status: FireStatus,
        why: &str,
        now: Timestamp,
    ) -> StoreResult<Decision> {
        let (stat, outcome) =
            if status == FireStatus::Failed { ("stats.failed", "failed") } else { ("stats.skipped", "skipped") };
        if let Some(s) = s {
            self.record_outcome(&s.id, &format!("{}:closed", f.id), stat, outcome, now).await?;
        }
        let ended = status == FireStatus::Failed;
        if !schedules::set_fire(&self.db, &f.id, &self.me, status, Some(why), None, None, ended, now).await? {
            return Ok(Decision::Lost);
        }
        if status == FireStatus::Failed {
            tracing::warn!(schedule.id = %f.schedule_id, fire = %f.id, reason = why, "scheduled scan could not start");
            if let Some(account) = &f.account_id {
                self.check_streak(account, now).await?;
            }
            Ok(Decision::Failed)
        } else {
            tracing::info!(schedule.id = %f.schedule_id, fire = %f.id, reason = why, "scheduled scan skipped");
            Ok(Decision::Skipped)
        }
    }

    /// Counts a fire's end on its schedule once (`marker` names the fire and the step) and records it
    /// as the schedule's last outcome.
    async fn record_outcome(
        &self,
        schedule: &crate::ids::ScheduleId,
        marker: &str,
        stat: &str,
        outcome: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        schedules::count_once(
            &self.db,
            schedule,
            marker,
            doc! { stat: 1 },
            doc! { "last_outcome": outcome, "last_outcome_at": now, "updated_at": now },
        )
        .await
    }

    /// Step 3: the end of scheduled scans, automatic pauses, and resumes after a successful manual scan.
    pub async fn observe(&self, now: Timestamp, r: &mut TickReport) -> StoreResult<()> {
        // Every started fire, a page at a time (a long scan at the front must not hide the ones behind it).
        let mut started = Vec::new();
        for page in 0..25u64 {
            let batch = schedules::started_fires(&self.db, page * PAGE as u64, PAGE).await?;
            let full = batch.len() as i64 == PAGE;
            started.extend(batch);
            if !full {
                break;
            }
        }
        for f in started {
            let Some(run_id) = f.run_id.clone() else { continue };
            let run = runs::get_any(&self.db, &run_id).await?;
            let (status, stat, outcome, reason, ended) = match &run {
                // Its starter died between claiming the account and writing the run: the claim goes
                // stale and is cleared; the fire failed.
                None if now.since(f.updated_at) > Duration::from_secs(600) => (
                    FireStatus::ScanFailed,
                    "stats.failed",
                    "failed",
                    Some("its scan was never created".to_string()),
                    now,
                ),
                None => continue,
                Some(run) if !run.status.is_terminal() => continue,
                Some(run) => {
                    let ended = run.finished_at.unwrap_or(now);
                    let first_warning = run.summary.as_ref().and_then(|s| s.warnings.first().cloned());
                    match run.status {
                        RunStatus::Completed | RunStatus::Partial => {
                            (FireStatus::Succeeded, "stats.succeeded", "succeeded", None, ended)
                        }
                        RunStatus::Cancelled => {
                            (FireStatus::Cancelled, "stats.cancelled", "cancelled", first_warning, ended)
                        }
                        _ => (FireStatus::ScanFailed, "stats.failed", "failed", first_warning, ended),
                    }
                }
            };
            self.record_outcome(&f.schedule_id, &format!("{}:outcome", f.id), stat, outcome, now).await?;
            if schedules::finish_fire(&self.db, &f.id, status, reason.as_deref(), ended, now).await? {
                r.finished += 1;
                tracing::info!(schedule.id = %f.schedule_id, run.id = %run_id, outcome, "scheduled scan ended");
            }
            if status == FireStatus::ScanFailed
                && let Some(account) = &f.account_id
                && self.check_streak(account, now).await?
            {
                r.accounts_paused += 1;
            }
        }
        for (account, team, paused_at) in schedules::auto_paused_accounts(&self.db, PAGE).await? {
            if let Some(run) = runs::manual_success_since(&self.db, &team, &account, paused_at).await? {
                let n = schedules::resume_auto_paused(&self.db, &account, now).await?;
                r.accounts_resumed += 1;
                tracing::info!(account.id = %account, run.id = %run.id, resumed = n, "a manual scan succeeded: resumed the paused schedules");
            }
        }
        Ok(())
    }

    /// Pauses the account's schedules when its last N scheduled outcomes since the streak began all
    /// failed. Returns whether it paused them now.
    async fn check_streak(&self, account: &AccountId, now: Timestamp) -> StoreResult<bool> {
        let max = self.settings.max_consecutive_failures;
        let since = schedules::streak_since(&self.db, account).await?;
        let recent = schedules::recent_outcomes(&self.db, account, since, i64::from(max)).await?;
        if recent.len() < max as usize || recent.iter().any(|f| f.status == FireStatus::Succeeded) {
            return Ok(false);
        }
        let last = recent.first().and_then(|f| f.reason.clone()).unwrap_or_else(|| "no reason recorded".into());
        let reason = format!(
            "{max} scheduled scans in a row failed (last: {last}); a successful manual scan or new credentials resume the schedules"
        );
        let paused = schedules::auto_pause_account(&self.db, account, &reason, now).await?;
        if paused > 0 {
            tracing::warn!(account.id = %account, schedules = paused, "paused the account's schedules after consecutive failures");
        }
        Ok(paused > 0)
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 2 * 86_400 {
        format!("{} days", s / 86_400)
    } else if s >= 3600 {
        format!("{} h", s / 3600)
    } else {
        format!("{} min", s / 60)
    }
}
