//! The scheduler: the fleet's hygiene loops. Every loop is safe to run in several replicas at once
//! (each action is a compare-and-set in MongoDB), so no leader is needed for them.
//!
//! - reaper: SubJobs whose worker stopped renewing its lease are re-queued (the attempt stays counted)
//!   or failed once their attempts are used up;
//! - feeder: SubJobs waiting in MongoDB are fed into Redis below the high-water mark;
//! - lost messages: queued SubJobs whose Redis message vanished are dispatched again;
//! - roll-up sweep: runs whose last SubJob ended without a roll-up (its worker died) are rolled up;
//! - stuck runs: active runs none of whose SubJobs moved for `CSPM_STUCK_RUN_HOURS` are ended;
//! - queue housekeeping: finished messages are removed from Redis, the dead-letter set trimmed;
//! - KEV: the catalog is refreshed from `CSPM_KEV_URL` when due (conditional requests), and the
//!   re-enrichment a new catalog needs is carried out;
//! - compliance: every team's controls are synced with its findings every `CSPM_COMPLIANCE_SYNC_HOURS`
//!   and after each completed run (one sync per team at a time, whichever replica claims it);
//! - retention: old runs (with their SubJobs, records, artifacts, fires) and old fixed findings go;
//! - schedules: due schedules start their scans, exactly once per fire across replicas, and scheduled
//!   scans are followed to their end (`cspm_shared::scheduling`).

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use cspm_shared::db::Mongo;
use cspm_shared::dispatch;
use cspm_shared::ops::{self, OpsState, QueueGauges};
use cspm_shared::queue::Queues;
use cspm_shared::scheduling::Engine;
use cspm_shared::store::runs;
use cspm_shared::store::subjobs::{self, Reaped};
use cspm_shared::time::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::SchedulerConfig;

type Labels = Vec<(String, String)>;

#[derive(Clone, Default)]
struct Metrics {
    /// Hygiene actions by kind (requeued, failed, redispatched, rolled_up).
    actions: Family<Labels, Counter>,
}

impl Metrics {
    fn count(&self, action: &str, n: u64) {
        if n > 0 {
            self.actions.get_or_create(&vec![("action".to_string(), action.to_string())]).inc_by(n);
        }
    }
}

pub struct SchedulerApp {
    config: SchedulerConfig,
    mongo: Mongo,
    queues: Queues,
    listener: tokio::net::TcpListener,
    ops_router: axum::Router,
    metrics: Metrics,
}

impl SchedulerApp {
    pub async fn build(config: SchedulerConfig) -> anyhow::Result<Self> {
        let mongo = config.common.mongo("cspm-scheduler").await?;
        let queues = config.common.queues()?;
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let metrics = Metrics::default();
        let gauges = QueueGauges::default();
        let mut registry = Registry::default();
        registry.register("cspm_fleet_actions", "Hygiene actions taken by the scheduler", metrics.actions.clone());
        gauges.register(&mut registry);
        let ops_router = ops::router(OpsState {
            service: "cspm-scheduler",
            mongo: mongo.clone(),
            queues: queues.clone(),
            registry: Arc::new(registry),
            gauges,
        });
        Ok(Self { config, mongo, queues, listener, ops_router, metrics })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tracing::info!(addr = %self.listener.local_addr()?, "scheduler starting");
        let ops_task = tokio::spawn(ops::serve(self.listener, self.ops_router, wait_true(stop_rx.clone())));
        let artifacts = cspm_shared::artifacts::ArtifactStore::new(&self.config.artifacts)?;
        let kev_http = cspm_shared::kev::fetch::source_client(self.config.kev.fetch_timeout)?;
        let engine = Engine::new(
            self.mongo.clone(),
            self.queues.clone(),
            self.config.limits.clone(),
            self.config.target_policy,
            self.config.schedules.clone(),
            self.config.name.clone(),
        );
        let s = Arc::new(Loops {
            mongo: self.mongo,
            queues: self.queues,
            metrics: self.metrics,
            config: self.config,
            sweep_cursor: std::sync::Mutex::new(None),
            engine,
            artifacts,
            kev_http,
        });
        let tasks = vec![
            tokio::spawn(every(s.config.reaper_interval, stop_rx.clone(), {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    async move { s.reap().await }
                }
            })),
            tokio::spawn(every(s.config.feed_interval, stop_rx.clone(), {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    async move { s.feed().await }
                }
            })),
            tokio::spawn(every(s.config.rollup_sweep, stop_rx.clone(), {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    async move { s.sweep().await }
                }
            })),
            tokio::spawn(every(s.config.housekeeping, stop_rx.clone(), {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    async move { s.housekeep().await }
                }
            })),
            // Every minute: `refresh_from_source` itself decides whether a check is due.
            tokio::spawn(every(Duration::from_secs(60), stop_rx.clone(), {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    async move { s.refresh_kev().await }
                }
            })),
            tokio::spawn(every(Duration::from_secs(60), stop_rx.clone(), {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    async move { s.sync_compliance().await }
                }
            })),
            tokio::spawn(every(s.config.retention.interval, stop_rx.clone(), {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    async move { s.retain().await }
                }
            })),
            tokio::spawn(every(s.config.schedules.tick, stop_rx.clone(), {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    async move { s.schedules().await }
                }
            })),
        ];
        shutdown.await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let _ = ops_task.await;
        tracing::info!("scheduler stopped");
        Ok(())
    }
}

struct Loops {
    mongo: Mongo,
    queues: Queues,
    metrics: Metrics,
    config: SchedulerConfig,
    sweep_cursor: std::sync::Mutex<Option<cspm_shared::ids::RunId>>,
    engine: Engine,
    artifacts: cspm_shared::artifacts::ArtifactStore,
    kev_http: cspm_shared::reqwest::Client,
}

impl Loops {
    /// Teams due for a compliance sync (interval passed, or a run completed since the last one).
    async fn sync_compliance(&self) -> anyhow::Result<()> {
        for done in cspm_shared::compliance::sync::sync_due_teams(&self.mongo, &self.config.compliance).await? {
            match &done.ran {
                Some((job, Ok(_))) => {
                    self.metrics.count("compliance_synced", 1);
                    tracing::info!(team.id = %done.team, job.id = %job, trigger = ?done.trigger, "compliance sync done");
                }
                Some((job, Err(e))) => {
                    self.metrics.count("compliance_sync_failed", 1);
                    tracing::warn!(team.id = %done.team, job.id = %job, error = %e, "compliance sync failed");
                }
                None => {}
            }
        }
        Ok(())
    }

    async fn refresh_kev(&self) -> anyhow::Result<()> {
        use cspm_shared::kev::{self, RefreshOutcome};
        match kev::refresh_from_source(&self.mongo, &self.config.kev, &self.kev_http).await {
            Ok(RefreshOutcome::Imported { version, count, .. }) => {
                self.metrics.count("kev_imported", 1);
                tracing::info!(version, count, "imported a new KEV catalog");
            }
            Ok(RefreshOutcome::NotModified | RefreshOutcome::Unchanged { .. }) => self.metrics.count("kev_checked", 1),
            Ok(RefreshOutcome::Disabled | RefreshOutcome::NotDue) => {}
            // Recorded in the catalog status by `refresh_from_source`; the one in force stays.
            Err(e @ (kev::KevError::Fetch(_) | kev::KevError::Invalid(_) | kev::KevError::Url(_))) => {
                self.metrics.count("kev_refresh_failed", 1);
                tracing::warn!(error = %e, "the KEV catalog could not be refreshed; the current one stays");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn housekeep(&self) -> anyhow::Result<()> {
        for kind in cspm_shared::queue::QueueKind::ALL {
            // Bounded per run: at most 20 calls of 1,000 (~140 ms of Redis time).
            for _ in 0..20 {
                let (done, dead) = self.queues.housekeep(kind, 1000, self.config.keep_dead).await?;
                self.metrics.count("queue_done_removed", done);
                self.metrics.count("queue_dead_removed", dead);
                if done < 1000 && dead < 1000 {
                    break;
                }
            }
        }
        Ok(())
    }

    async fn retain(&self) -> anyhow::Result<()> {
        let r = cspm_shared::retention::sweep(&self.mongo, &self.artifacts, &self.config.retention, Timestamp::now())
            .await?;
        for (what, n) in [
            ("retention_runs", r.runs),
            ("retention_sub_jobs", r.sub_jobs),
            ("retention_artifacts", r.artifacts),
            ("retention_findings", r.findings),
            ("retention_occurrences", r.occurrences),
            ("retention_fires", r.fires),
            ("retention_audit", r.audit),
            ("retention_sessions", r.sessions),
        ] {
            self.metrics.count(what, n);
        }
        if r != Default::default() {
            tracing::info!(
                runs = r.runs,
                findings = r.findings,
                occurrences = r.occurrences,
                artifacts = r.artifacts,
                fires = r.fires,
                audit = r.audit,
                sessions = r.sessions,
                incomplete = r.incomplete,
                "retention sweep"
            );
        }
        Ok(())
    }

    async fn schedules(&self) -> anyhow::Result<()> {
        let r = self.engine.tick(Timestamp::now()).await?;
        for (what, n) in [
            ("schedule_fired", r.fired),
            ("schedule_missed", r.missed),
            ("schedule_started", r.started),
            ("schedule_skipped", r.skipped),
            ("schedule_waiting", r.waiting),
            ("schedule_failed", r.failed),
            ("schedule_finished", r.finished),
            ("schedules_paused", r.accounts_paused),
            ("schedules_resumed", r.accounts_resumed),
        ] {
            self.metrics.count(what, n);
        }
        Ok(())
    }

    async fn reap(&self) -> anyhow::Result<()> {
        let reaped = subjobs::reap_expired_leases(&self.mongo, 200).await?;
        let mut runs_to_check = Vec::new();
        for r in &reaped {
            match r {
                Reaped::Requeued(run) => {
                    self.metrics.count("requeued", 1);
                    tracing::warn!(run.id = %run, "re-queued a sub-job whose worker stopped renewing its lease");
                }
                Reaped::Ended(run) => {
                    self.metrics.count("ended", 1);
                    let _ = self.queues.count_finished(run, 1).await;
                    tracing::warn!(run.id = %run, "ended a sub-job whose worker was lost (attempts used up, or a cancel pending)");
                    runs_to_check.push(run.clone());
                }
            }
        }
        for run in runs_to_check {
            if let Err(e) = runs::finalize(&self.mongo, &run).await {
                tracing::warn!(run.id = %run, error = %e, "roll-up failed; the sweep will retry");
            }
        }
        if !reaped.is_empty() {
            dispatch::feed_all(&self.mongo, &self.queues, 500).await?;
        }
        Ok(())
    }

    async fn feed(&self) -> anyhow::Result<()> {
        let n = dispatch::feed_all(&self.mongo, &self.queues, 500).await?;
        self.metrics.count("fed", n);
        Ok(())
    }

    /// Each part on its own: a failure of one (Redis away, one run's roll-up) does not skip the others.
    async fn sweep(&self) -> anyhow::Result<()> {
        match dispatch::recover_lost_messages(&self.mongo, &self.queues, self.config.lost_message_after, 500).await {
            Ok(n) => self.metrics.count("redispatched", n),
            Err(e) => tracing::warn!(error = %e, "lost-message recovery failed; will retry"),
        }
        // A page of runs per sweep, resuming where the last one stopped, so that every run is visited
        // however many are active.
        let after = self.sweep_cursor.lock().map(|c| c.clone()).unwrap_or(None);
        let page = runs::needing_roll_up(&self.mongo, after.as_ref(), 500).await?;
        let next = if page.len() < 500 { None } else { page.last().cloned() };
        for run in &page {
            match runs::finalize(&self.mongo, run).await {
                Ok(Some(status)) if status.is_terminal() => self.metrics.count("swept", 1),
                Ok(_) => {}
                Err(e) => tracing::warn!(run.id = %run, error = %e, "roll-up failed; will retry"),
            }
        }
        if let Ok(mut c) = self.sweep_cursor.lock() {
            *c = next;
        }
        let stuck = cspm_shared::retention::end_stuck_runs(
            &self.mongo,
            self.config.retention.stuck_after,
            Timestamp::now(),
            100,
        )
        .await?;
        self.metrics.count("stuck_ended", stuck.len() as u64);
        Ok(())
    }
}

/// Runs `f` every `period` until stopped, logging failures (rate-limited) and carrying on.
async fn every<F, Fut>(period: Duration, stop: watch::Receiver<bool>, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wait_true(stop.clone()) => return,
        }
        match f().await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, failures, "scheduler task failed; will retry");
                }
            }
        }
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl cspm_shared::ops::Service for SchedulerApp {
    type Config = SchedulerConfig;
    const NAME: &'static str = "cspm-scheduler";
    fn common(config: &SchedulerConfig) -> &cspm_shared::settings::CommonSettings {
        &config.common
    }
    async fn build(config: SchedulerConfig) -> anyhow::Result<Self> {
        SchedulerApp::build(config).await
    }
    async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        SchedulerApp::run_until_stopped(self, shutdown).await
    }
}
