//! One SubJob, start to end: claim → plan → run → parse → store → finish → roll up.
//!
//! Every step is safe to repeat: the claim makes a duplicate delivery a no-op while the first holds a
//! live lease, findings are upserts keyed by identity, and the final transition is a compare-and-set by
//! the lease owner. A worker that dies mid-way leaves a lease that lapses; the SubJob then runs again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_core::error::BoxDynError;
use cspm_shared::artifacts::{ArtifactOwner, ArtifactStore};
use cspm_shared::db::Mongo;
use cspm_shared::domain::scan::{CanaryFailure, SubJobStatus, Tool};
use cspm_shared::error::StoreError;
use cspm_shared::ids::{RunId, SubJobId};
use cspm_shared::kev::KevCache;
use cspm_shared::queue::{Queues, SubJobMessage};
use cspm_shared::store::findings::{self, FindingScope, NewFinding};
use cspm_shared::store::occurrences;
use cspm_shared::store::runs;
use cspm_shared::store::subjobs::{self, Claim, Finishing, HandBack, Lease, Outcome, Renewal, SubJobDoc};
use cspm_shared::time::Timestamp;
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::ledger::Ledger;
use crate::metrics::WorkerMetrics;
use crate::runner::docker::{ContainerJob, DockerRunner};
use crate::runner::{self, Exit, RunReport, StopReason, StopSignal};
use crate::tools::{Adapter, FindingSink, JobContext, Plan, canary};

/// Findings per database round trip.
const STORE_BATCH: usize = 500;

/// Everything a SubJob needs from its worker.
pub struct WorkerCtx {
    pub config: WorkerConfig,
    pub mongo: Mongo,
    pub queues: Queues,
    pub metrics: WorkerMetrics,
    pub inflight: Inflight,
    /// Runs this process has already marked `running` (spares one database write per SubJob).
    pub started_runs: Mutex<HashSet<RunId>>,
    /// Claims and terminal transitions, batched across the SubJobs running here.
    pub ledger: Ledger,
    /// The Docker runner, when scanners run in sibling containers (`CSPM_SCANNER_RUNNER=docker`).
    pub docker: Option<DockerRunner>,
    /// Where the raw output of every SubJob goes.
    pub artifacts: ArtifactStore,
    /// The current KEV catalog, for the enrichment stage.
    pub kev: KevCache,
}

impl WorkerCtx {
    pub fn new(
        config: WorkerConfig,
        mongo: Mongo,
        queues: Queues,
        metrics: WorkerMetrics,
        docker: Option<DockerRunner>,
        artifacts: ArtifactStore,
    ) -> Self {
        let ledger = Ledger::start(mongo.clone(), config.name.clone(), config.lease);
        let kev = KevCache::new(mongo.clone(), config.kev.reload_every);
        Self {
            kev,
            docker,
            artifacts,
            config,
            mongo,
            queues,
            metrics,
            inflight: Inflight::default(),
            started_runs: Mutex::new(HashSet::new()),
            ledger,
        }
    }

    /// Marks the run `running` unless this process already did.
    async fn mark_run_started(&self, run: &RunId) {
        let first = self.started_runs.lock().map(|mut s| {
            if s.len() > 10_000 {
                s.clear();
            }
            s.insert(run.clone())
        });
        if first.unwrap_or(true)
            && let Err(e) = runs::mark_running(&self.mongo, run).await
        {
            tracing::warn!(error = %e, "could not mark the run running");
        }
    }

    /// Counts a SubJob of the run as finished and rolls the run up when it was the last one. The count
    /// lives in Redis (a hint that spares a query per SubJob); without it, the database is asked.
    async fn finished_one(&self, job_run: &RunId, run_size: i64, cancelled: bool) -> Result<(), StoreError> {
        let last = match self.queues.count_finished(job_run, 1).await {
            Ok(n) if run_size > 0 && !cancelled => n as i64 >= run_size,
            _ => !subjobs::run_has_unfinished(&self.mongo, job_run).await?,
        };
        if last {
            runs::finalize(&self.mongo, job_run).await?;
        }
        Ok(())
    }
}

/// The SubJobs running in this process, so that shutdown can hand them back.
#[derive(Default)]
pub struct Inflight {
    /// Keyed by delivery, not by SubJob: a duplicate delivery of a running SubJob must not hide it.
    stops: Mutex<HashMap<u64, watch::Sender<Option<StopReason>>>>,
    next: std::sync::atomic::AtomicU64,
    changed: Notify,
}

impl Inflight {
    fn insert(&self, tx: watch::Sender<Option<StopReason>>) -> u64 {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut m) = self.stops.lock() {
            m.insert(key, tx);
        }
        key
    }

    fn remove(&self, key: u64) {
        if let Ok(mut m) = self.stops.lock() {
            m.remove(&key);
        }
        self.changed.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.stops.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every running SubJob to stop.
    pub fn stop_all(&self, reason: StopReason) {
        if let Ok(m) = self.stops.lock() {
            for tx in m.values() {
                let _ = tx.send(Some(reason));
            }
        }
    }

    /// Waits until no SubJob runs, or the timeout passes. Returns whether it emptied.
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_empty();
            }
        }
    }
}

/// The queue handler. The work runs on its own task, so that a slow SubJob never delays the queue's
/// heartbeats, and so that shutdown can hand it back even if the queue stops polling it.
pub async fn handle(ctx: Arc<WorkerCtx>, msg: SubJobMessage) -> Result<(), BoxDynError> {
    let span =
        tracing::info_span!("subjob", run.id = %msg.run_id, subjob.id = %msg.subjob_id, tool = tracing::field::Empty);
    let (db, subjob, run) = (ctx.mongo.clone(), msg.subjob_id.clone(), msg.run_id.clone());
    match tokio::spawn(process(ctx, msg).instrument(span.clone())).await {
        Ok(Ok(())) => Ok(()),
        // Retrying cannot help a document that cannot be read: fail it, once, with the reason.
        Ok(Err(StoreError::Corrupt(why))) => async move {
            tracing::error!(error = %why, "the sub-job's document cannot be read; failing it");
            subjobs::fail_unreadable(&db, &subjob, &why).await?;
            runs::finalize(&db, &run).await?;
            Ok::<(), StoreError>(())
        }
        .instrument(span)
        .await
        .map_err(|e| Box::new(e) as BoxDynError),
        Ok(Err(e)) => {
            // Transient (the database is away): the queue retries the message later.
            tracing::warn!(error = %e, "sub-job deferred");
            Err(Box::new(e))
        }
        Err(join) => Err(Box::new(join)),
    }
}

async fn process(ctx: Arc<WorkerCtx>, msg: SubJobMessage) -> Result<(), StoreError> {
    // Registered before the claim, so that a shutdown never misses a SubJob between claim and start.
    let (stop_tx, stop_rx) = watch::channel(None);
    let key = ctx.inflight.insert(stop_tx.clone());
    let result = deliver(&ctx, &msg, stop_tx, stop_rx).await;
    ctx.inflight.remove(key);
    result
}

async fn deliver(
    ctx: &WorkerCtx,
    msg: &SubJobMessage,
    stop_tx: watch::Sender<Option<StopReason>>,
    stop_rx: StopSignal,
) -> Result<(), StoreError> {
    let db = &ctx.mongo;
    let mut claim = ctx.ledger.claim(msg.subjob_id.clone()).await?;
    if let Claim::Busy { .. } = &claim {
        // A re-delivery after the queue lost track of a worker: if that worker is dead, its lease lapses
        // within one lease period; wait for that rather than dropping the message.
        if let Some(job) = subjobs::get(db, &msg.subjob_id).await?
            && let Some(expiry) = job.lease_expires_at
        {
            let wait = expiry.since(Timestamp::now());
            if wait <= ctx.config.lease {
                let mut stop = stop_rx.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait + Duration::from_millis(500)) => {
                        claim = ctx.ledger.claim(msg.subjob_id.clone()).await?;
                    }
                    _ = stop.changed() => {}
                }
            }
        }
    }
    match claim {
        Claim::Claimed(job, lease) => run_claimed(ctx, *job, lease, stop_tx, stop_rx).await,
        Claim::Busy { owner } => {
            tracing::debug!(%owner, "already running on another worker");
            ctx.metrics.skipped("running_elsewhere");
            Ok(())
        }
        Claim::Finished(status) => {
            tracing::debug!(%status, "already finished");
            ctx.metrics.skipped("already_finished");
            // The previous delivery may have died between its transition and the roll-up.
            runs::finalize(db, &msg.run_id).await?;
            Ok(())
        }
        Claim::Exhausted => {
            tracing::warn!("the sub-job's worker was lost too many times; it failed");
            ctx.metrics.ended("unknown", "failed", 0.0);
            let _ = ctx.queues.count_finished(&msg.run_id, 1).await;
            runs::finalize(db, &msg.run_id).await?;
            Ok(())
        }
        Claim::CancelledNow => {
            ctx.metrics.skipped("cancelled_before_start");
            ctx.finished_one(&msg.run_id, 0, true).await
        }
        Claim::Missing => {
            tracing::warn!("no such sub-job; message dropped");
            ctx.metrics.skipped("missing");
            Ok(())
        }
    }
}

/// How the work of a claimed SubJob ended.
enum Ending {
    Done(Outcome),
    Failed(String, Outcome),
    TimedOut(String),
    Stopped(StopReason),
}

async fn run_claimed(
    ctx: &WorkerCtx,
    job: SubJobDoc,
    lease: Lease,
    stop_tx: watch::Sender<Option<StopReason>>,
    stop_rx: StopSignal,
) -> Result<(), StoreError> {
    let db = &ctx.mongo;
    let tool = job.tool.to_string();
    tracing::Span::current().record("tool", tool.as_str());
    tracing::info!(attempt = job.attempts, region = %job.region, "sub-job started");
    let started = Instant::now();
    ctx.metrics.running.inc();
    ctx.mark_run_started(&job.run_id).await;

    // Held until the SubJob's result is recorded (the raw-output upload included), so that a long
    // upload never lets the lease lapse; aborted when dropped, on every path.
    let keeper = AbortOnDrop(tokio::spawn(
        keep_lease(db.clone(), job.id.clone(), lease.clone(), ctx.config.lease, stop_tx).in_current_span(),
    ));

    let workdir = ctx.config.output_dir.join(job.run_id.as_str()).join(job.id.as_str());
    let mut phases = Phases::default();
    let ending = match prepare_dir(&workdir).await {
        Ok(()) => execute(ctx, &job, &workdir, stop_rx, &mut phases).await,
        Err(e) => Ending::Failed(
            format!("cannot prepare the output directory {}: {e}", workdir.display()),
            Outcome::default(),
        ),
    };
    ctx.metrics.running.dec();
    let seconds = started.elapsed().as_secs_f64();

    let (status, outcome, keep_output) = match ending {
        Ending::Done(o) => (SubJobStatus::Completed, o, false),
        Ending::Failed(msg, mut o) => {
            o.error = Some(msg);
            (SubJobStatus::Failed, o, ctx.config.keep_failed_output)
        }
        Ending::TimedOut(msg) => {
            (SubJobStatus::TimedOut, Outcome { error: Some(msg), ..Outcome::default() }, ctx.config.keep_failed_output)
        }
        Ending::Stopped(StopReason::Cancelled) => (
            SubJobStatus::Cancelled,
            Outcome { error: Some("cancelled while running".into()), ..Outcome::default() },
            false,
        ),
        Ending::Stopped(StopReason::LeaseLost) => {
            tracing::warn!("lease lost (this worker stalled past it); leaving the sub-job to its new owner");
            ctx.metrics.ended(&tool, "lease_lost", seconds);
            remove_dir(&workdir).await;
            return Ok(());
        }
        Ending::Stopped(StopReason::Shutdown) => {
            drop(keeper);
            let handed = subjobs::hand_back(db, &job.id, &lease, "handed back by a worker shutting down").await?;
            tracing::info!(?handed, "sub-job handed back at shutdown");
            ctx.metrics.ended(&tool, "handed_back", seconds);
            remove_dir(&workdir).await;
            if handed == HandBack::Cancelled {
                ctx.finished_one(&job.run_id, job.run_size, true).await?;
            }
            return Ok(());
        }
    };
    let (status, outcome) = keep_raw_output(ctx, &job, &workdir, status, outcome).await;
    if !keep_output {
        remove_dir(&workdir).await;
    }
    let finishing = Finishing { id: job.id.clone(), lease: lease.clone(), status, outcome: outcome.clone() };
    let transitioned = ctx.ledger.finish(finishing).await?;
    drop(keeper);
    if !transitioned {
        tracing::warn!(%status, "the sub-job was taken over before it finished; result not recorded");
        ctx.metrics.ended(&tool, "lease_lost", seconds);
        return Ok(());
    }
    ctx.metrics.ended(&tool, status.as_str(), seconds);
    match &outcome.error {
        Some(e) => tracing::warn!(%status, error = %e, seconds, "sub-job ended"),
        None => {
            tracing::info!(%status, findings = outcome.findings_count, new = outcome.new_findings, seconds,
                scan_seconds = phases.scan, store_seconds = phases.store, "sub-job ended")
        }
    }
    ctx.finished_one(&job.run_id, job.run_size, status == SubJobStatus::Cancelled).await
}

/// Uploads what the scanner wrote (findings are already stored: this cannot lose them). A failed upload
/// spools the output for a later retry and leaves a warning on the SubJob; only the canary, which has
/// no real output, is skipped.
async fn keep_raw_output(
    ctx: &WorkerCtx,
    job: &SubJobDoc,
    workdir: &Path,
    status: SubJobStatus,
    outcome: Outcome,
) -> (SubJobStatus, Outcome) {
    let ran = matches!(status, SubJobStatus::Completed | SubJobStatus::Failed | SubJobStatus::TimedOut);
    if !ran || job.tool.tool == Tool::Canary {
        return (status, outcome);
    }
    // An image exported for the scanner is its input, not its output (and may be gigabytes): the runner
    // removes it when the scanner ends; never upload one it could not remove.
    let export = workdir.join(runner::IMAGE_ARCHIVE);
    if tokio::fs::try_exists(&export).await.unwrap_or(false) {
        tracing::warn!(file = %export.display(), "an image export outlived its scan; removing it before the upload");
        if let Err(e) = tokio::fs::remove_file(&export).await {
            return (
                status,
                with_warning(
                    outcome,
                    format!("the raw output was not kept: cannot remove the image export {}: {e}", export.display()),
                ),
            );
        }
    }
    let owner = ArtifactOwner {
        team_id: job.team_id.clone(),
        run_id: job.run_id.clone(),
        subjob_id: job.id.clone(),
        tool: job.tool.clone(),
    };
    let warning =
        match crate::artifacts::upload_or_spool(&ctx.artifacts, &ctx.mongo, &ctx.config.output_dir, &owner, workdir)
            .await
        {
            Ok(None) => return (status, outcome),
            Ok(Some(why)) | Err(why) => why,
        };
    (status, with_warning(outcome, warning))
}

fn with_warning(mut outcome: Outcome, warning: String) -> Outcome {
    outcome.warning = Some(match outcome.warning.take() {
        Some(w) => format!("{w}; {warning}"),
        None => warning,
    });
    outcome
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the lease every third of its length, and turns a cancel request or a lost lease into a stop.
async fn keep_lease(db: Mongo, id: SubJobId, lease: Lease, length: Duration, stop: watch::Sender<Option<StopReason>>) {
    let every = length / 3;
    let mut held_until = tokio::time::Instant::now() + length;
    loop {
        tokio::time::sleep(every).await;
        match subjobs::renew(&db, &id, &lease, length).await {
            Ok(Renewal::Held { cancel }) => {
                held_until = tokio::time::Instant::now() + length;
                if cancel {
                    let _ = stop.send(Some(StopReason::Cancelled));
                }
            }
            Ok(Renewal::Lost) => {
                let _ = stop.send(Some(StopReason::LeaseLost));
                return;
            }
            Err(e) => {
                // Cut off from the database: once the lease may have lapsed, another worker may be
                // running the SubJob, so stop rather than run it twice.
                if tokio::time::Instant::now() + every >= held_until {
                    tracing::warn!(error = %e, "lease could not be renewed before it lapses; stopping the sub-job");
                    let _ = stop.send(Some(StopReason::LeaseLost));
                    return;
                }
                tracing::warn!(error = %e, "lease renewal failed; retrying");
            }
        }
    }
}

/// Where a SubJob's time went (seconds): running the scanner, then validating, parsing and storing.
#[derive(Default)]
struct Phases {
    scan: f64,
    store: f64,
}

async fn execute(
    ctx: &WorkerCtx,
    job: &SubJobDoc,
    workdir: &Path,
    mut stop: StopSignal,
    phases: &mut Phases,
) -> Ending {
    if let Some(reason) = *stop.borrow_and_update() {
        return Ending::Stopped(reason);
    }
    let adapter = Adapter::for_tool(job.tool.tool);
    // In a container when the tool has an image here, otherwise as a local process.
    let available = match ctx.docker.as_ref().filter(|d| d.settings().image_for(job.tool.tool).is_some()) {
        Some(docker) => docker.settings().check_available(job.tool.tool),
        None => adapter.check_available(&ctx.config).map_err(|e| match &ctx.docker {
            Some(d) if job.tool.tool != Tool::Canary => {
                format!("{}; {}", e.message, d.settings().check_available(job.tool.tool).err().unwrap_or_default())
            }
            _ => e.message,
        }),
    };
    if let Err(message) = available {
        return Ending::Failed(message, Outcome::default());
    }
    let jc = JobContext { job, mongo: &ctx.mongo, workdir: workdir.to_path_buf(), config: &ctx.config };
    let plan = match adapter.plan(&jc).await {
        Ok(p) => p,
        Err(e) => return Ending::Failed(e.message, Outcome::default()),
    };
    let timeout = job.timeout();
    let scan_started = Instant::now();
    let process = match plan {
        Plan::Process(spec) => Some((spec, None)),
        Plan::ProcessReadingImage(spec, image) => Some((spec, Some(image))),
        Plan::Simulated { duration, failure } => {
            if let Some(ending) = simulate(job, workdir, duration, failure, timeout, &mut stop).await {
                return ending;
            }
            None
        }
    };
    if let Some((spec, image)) = process {
        match run_process(ctx, job, &spec, image.as_ref(), timeout, stop.clone()).await {
            Err(message) => return Ending::Failed(message, Outcome::default()),
            Ok(report) => match &report.exit {
                Exit::TimedOut => {
                    return Ending::TimedOut(format!(
                        "the scan did not finish within {} s and was stopped",
                        timeout.as_secs()
                    ));
                }
                Exit::Stopped(r) => return Ending::Stopped(*r),
                Exit::Exited(code) if !report.succeeded(&spec) => {
                    let code = code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
                    let tail = last_lines(&report.output_tail, 5);
                    return Ending::Failed(
                        format!("{} exited with {code}: {tail}", job.tool.tool.as_str()),
                        Outcome::default(),
                    );
                }
                Exit::Exited(_) => {}
            },
        }
    }
    phases.scan = scan_started.elapsed().as_secs_f64();
    let store_started = Instant::now();
    let ending = store(ctx, job, workdir, adapter, stop).await;
    phases.store = store_started.elapsed().as_secs_f64();
    ending
}

/// Runs a planned process where this worker runs the tool: in a container when the Docker runner is on
/// and the tool has an image, otherwise as a child process.
async fn run_process(
    ctx: &WorkerCtx,
    job: &SubJobDoc,
    spec: &runner::ProcessSpec,
    image: Option<&runner::ImageInput>,
    timeout: Duration,
    stop: StopSignal,
) -> Result<RunReport, String> {
    match ctx.docker.as_ref().filter(|d| d.settings().image_for(job.tool.tool).is_some()) {
        // A local scanner reads the local image store itself: `image` is the Docker runner's concern.
        None => {
            runner::local::run(spec, timeout, stop).await.map_err(|e| format!("cannot start `{}`: {e}", spec.program))
        }
        Some(docker) => {
            let tool = job.tool.tool;
            let program = runner::docker::container_program(tool);
            let container = ContainerJob { spec, tool, program, run_id: &job.run_id, subjob_id: &job.id };
            docker
                .run_reading_image(container, image, timeout, stop)
                .await
                .map_err(|e| format!("cannot run the {} container: {e}", job.tool.tool.as_str()))
        }
    }
}

/// The canary's "scan": waits, then succeeds, fails, crashes the process or hangs, as asked.
async fn simulate(
    job: &SubJobDoc,
    workdir: &Path,
    duration: Duration,
    failure: CanaryFailure,
    timeout: Duration,
    stop: &mut StopSignal,
) -> Option<Ending> {
    let wait = match failure {
        CanaryFailure::Hang => timeout + Duration::from_secs(3600),
        CanaryFailure::Crash => duration / 2,
        _ => duration,
    };
    let sleep = tokio::time::sleep(wait.min(timeout));
    tokio::pin!(sleep);
    let timed_out = wait >= timeout;
    tokio::select! {
        _ = &mut sleep => {}
        reason = runner::stopped(stop) => return Some(Ending::Stopped(reason)),
    }
    if timed_out {
        return Some(Ending::TimedOut(format!(
            "the scan did not finish within {} s and was stopped",
            timeout.as_secs()
        )));
    }
    match failure {
        CanaryFailure::Crash => {
            tracing::error!("canary: crashing the worker as requested");
            std::process::abort();
        }
        CanaryFailure::Error => Some(Ending::Failed("canary: the tool failed as requested".into(), Outcome::default())),
        CanaryFailure::None | CanaryFailure::Hang | CanaryFailure::Malformed => {
            match canary::write_report(job, workdir, failure == CanaryFailure::Malformed) {
                Ok(()) => None,
                Err(e) => Some(Ending::Failed(format!("canary: cannot write its output: {e}"), Outcome::default())),
            }
        }
    }
}

/// Validates, then parses and stores. The output is read twice: first through a counting sink, so that
/// a truncated or malformed report fails the SubJob before anything is stored (nothing partial can later
/// look complete); then for real, on a blocking thread, handing batches to the async side as they come,
/// so memory holds at most a few batches whatever the size of the output. A complete SubJob then
/// resolves what its scope no longer reports, unless the zero-findings guard holds.
async fn store(ctx: &WorkerCtx, job: &SubJobDoc, workdir: &Path, adapter: Adapter, stop: StopSignal) -> Ending {
    let dir: PathBuf = workdir.to_path_buf();
    let max = ctx.config.max_output_bytes;
    let (check_job, check_dir) = (job.clone(), dir.clone());
    let checked = tokio::task::spawn_blocking(move || {
        let mut sink = FindingSink::counting();
        Adapter::for_tool(check_job.tool.tool)
            .parse(&check_job, &check_dir, max, &mut sink)
            .map(|()| (sink.emitted, sink.examined))
    })
    .await;
    let examined = match checked {
        Ok(Ok((_, examined))) => examined,
        Ok(Err(e)) => return Ending::Failed(e.message, Outcome::default()),
        Err(e) => return Ending::Failed(format!("the parser crashed: {e}"), Outcome::default()),
    };

    let (tx, mut rx) = mpsc::channel::<Vec<NewFinding>>(2);
    let parse_job = job.clone();
    let parser = tokio::task::spawn_blocking(move || {
        let mut sink = FindingSink::new(tx, STORE_BATCH);
        adapter.parse(&parse_job, &dir, max, &mut sink)
    });
    let scope = FindingScope::of_subjob(job);
    let mut outcome = Outcome::default();
    let mut store_error = None;
    let mut lease_lost = false;
    while let Some(mut batch) = rx.recv().await {
        if *stop.borrow() == Some(StopReason::LeaseLost) {
            // Another worker may own the SubJob now: write nothing more.
            lease_lost = true;
        }
        if store_error.is_some() || lease_lost {
            continue; // drain so the parser can finish
        }
        // Enrich: CVE findings get the current KEV catalog's mark (a lookup per CVE).
        if let Some(kev) = ctx.kev.current().await {
            kev.enrich(&mut batch);
        }
        let stored = match findings::upsert_batch(&ctx.mongo, &scope, &batch).await {
            Ok(stats) => occurrences::sync_batch(&ctx.mongo, &scope, &batch).await.map(|_| stats),
            Err(e) => Err(e),
        };
        match stored {
            Ok(stats) => {
                outcome.findings_count += batch.len() as i64;
                outcome.new_findings += stats.inserted;
                outcome.reopened_findings += stats.reopened;
                outcome.resolved_findings += stats.resolved;
                for f in &batch {
                    outcome.severity.add(f.severity, 1);
                }
                ctx.metrics.findings.inc_by(batch.len() as u64);
            }
            Err(e) => store_error = Some(e),
        }
    }
    let parsed = parser.await;
    if lease_lost || *stop.borrow() == Some(StopReason::LeaseLost) {
        return Ending::Stopped(StopReason::LeaseLost);
    }
    if let Some(e) = store_error {
        return Ending::Failed(format!("storing findings failed: {e}"), outcome);
    }
    match parsed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Ending::Failed(e.message, outcome),
        Err(e) => return Ending::Failed(format!("the parser crashed: {e}"), outcome),
    }
    if outcome.findings_count == 0 && examined == 0 {
        // An empty report that examined nothing is not evidence that anything was fixed.
        match findings::scope_has_active(&ctx.mongo, &scope).await {
            Ok(true) => {
                outcome.warning = Some(format!(
                    "{} reported no findings and examined nothing; no finding was resolved (zero-findings guard)",
                    job.tool.tool.as_str()
                ));
            }
            Ok(false) => {}
            Err(e) => return Ending::Failed(format!("storing findings failed: {e}"), outcome),
        }
    } else {
        // Batched with the other SubJobs finishing here; the count it answers is every finding this
        // SubJob resolved (unreported, or reported passing), read from the documents.
        match ctx.ledger.resolve(scope).await {
            Ok(n) => outcome.resolved_findings = n,
            Err(e) => return Ending::Failed(format!("resolving findings failed: {e}"), outcome),
        }
    }
    if job.attempts > 1 {
        // An earlier attempt may have stored or resolved some of these before it died: count what this
        // SubJob did, whichever attempt did it.
        match findings::lifecycle_counts(&ctx.mongo, &job.id).await {
            Ok(c) => {
                outcome.new_findings = c.new;
                outcome.resolved_findings = c.resolved;
                outcome.reopened_findings = c.reopened;
            }
            Err(e) => return Ending::Failed(format!("storing findings failed: {e}"), outcome),
        }
    }
    Ending::Done(outcome)
}

async fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    // A leftover from an earlier attempt must not be mistaken for this attempt's output.
    if tokio::fs::try_exists(dir).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(dir).await?;
    }
    // A sibling SubJob that just finished may remove the (then empty) run directory between our
    // creating it and our creating the SubJob's own: try again.
    let mut tries = 0;
    loop {
        match tokio::fs::create_dir_all(dir).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
            other => return other,
        }
    }
}

async fn remove_dir(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %dir.display(), "could not remove the output directory");
    }
    // The run's directory goes when its last SubJob's does (fails harmlessly while others remain).
    if let Some(parent) = dir.parent() {
        let _ = tokio::fs::remove_dir(parent).await;
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() { "no output".into() } else { joined }
}
