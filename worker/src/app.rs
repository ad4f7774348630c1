//! The worker process: queue consumers (one per workload, each with its own concurrency), a feeder that
//! moves waiting SubJobs from MongoDB into Redis below the high-water mark, the ops endpoints, and a
//! graceful shutdown that lets running SubJobs finish or hands them back.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_core::backend::ext::BackendExt;
use cspm_shared::artifacts::ArtifactStore;
use cspm_shared::dispatch;
use cspm_shared::ops::{self, OpsState, QueueGauges};
use cspm_shared::queue::{QueueKind, SubJobMessage};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::config::WorkerConfig;
use crate::metrics::WorkerMetrics;
use crate::pipeline::{self, WorkerCtx};
use crate::poll::{self, WakeStrategy};
use crate::runner::StopReason;
use crate::runner::docker::{self, DockerRunner, RunnerSettings};
use cspm_shared::store::subjobs;
use cspm_shared::time::Timestamp;

pub struct WorkerApp {
    ctx: Arc<WorkerCtx>,
    listener: tokio::net::TcpListener,
    ops_router: axum::Router,
}

impl WorkerApp {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let mongo = config.common.mongo("cspm-worker").await?;
        let queues = config.common.queues()?;
        tokio::fs::create_dir_all(&config.output_dir).await.map_err(|e| {
            anyhow::anyhow!("CSPM_WORKER_OUTPUT_DIR: cannot create {}: {e}", config.output_dir.display())
        })?;
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let metrics = WorkerMetrics::default();
        let gauges = QueueGauges::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        gauges.register(&mut registry);
        let ops_router = ops::router(OpsState {
            service: "cspm-worker",
            mongo: mongo.clone(),
            queues: queues.clone(),
            registry: Arc::new(registry),
            gauges,
        });
        let docker = match &config.runner {
            RunnerSettings::Local => None,
            RunnerSettings::Docker(settings) => Some(
                DockerRunner::connect(
                    settings.clone(),
                    config.name.clone(),
                    config.common.db_prefix.clone(),
                    metrics.clone(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("CSPM_SCANNER_RUNNER=docker: {e}"))?,
            ),
        };
        let artifacts = ArtifactStore::new(&config.artifacts).map_err(|e| anyhow::anyhow!("artifact store: {e}"))?;
        let ctx = Arc::new(WorkerCtx::new(config, mongo, queues, metrics, docker, artifacts));
        Ok(Self { ctx, listener, ops_router })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn name(&self) -> &str {
        &self.ctx.config.name
    }

    /// Runs until `shutdown` resolves, then stops taking work, lets running SubJobs finish within the
    /// grace period, hands back the rest, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let (stop_tx, stop_rx) = watch::channel(false);
        tracing::info!(worker = %ctx.config.name, addr = %self.listener.local_addr()?, cloud = ctx.config.cloud_concurrency,
            native = ctx.config.native_concurrency, "worker starting");

        let ops_stop = stop_rx.clone();
        let ops_task = tokio::spawn(ops::serve(self.listener, self.ops_router, wait_true(ops_stop)));
        let feeder = tokio::spawn(feed_loop(ctx.clone(), stop_rx.clone()));
        let spool = tokio::spawn(crate::artifacts::spool_loop(
            ctx.artifacts.clone(),
            ctx.mongo.clone(),
            ctx.config.output_dir.clone(),
        ));
        let reaper = ctx.docker.clone().map(|docker| tokio::spawn(reap_loop(docker, ctx.mongo.clone())));

        let mut consumers = Vec::new();
        for (kind, concurrency) in
            [(QueueKind::Cloud, ctx.config.cloud_concurrency), (QueueKind::Native, ctx.config.native_concurrency)]
        {
            if concurrency > 0 {
                consumers.push(tokio::spawn(consume(ctx.clone(), kind, concurrency, stop_rx.clone())));
            }
        }

        shutdown.await;
        tracing::info!(
            running = ctx.inflight.len(),
            grace_secs = ctx.config.shutdown_grace.as_secs(),
            "stopping: no new sub-jobs"
        );
        let _ = stop_tx.send(true);
        if !ctx.inflight.wait_empty(ctx.config.shutdown_grace).await {
            tracing::info!(running = ctx.inflight.len(), "grace period over: handing back running sub-jobs");
            ctx.inflight.stop_all(StopReason::Shutdown);
            ctx.inflight.wait_empty(Duration::from_secs(30)).await;
        }
        for c in consumers {
            if tokio::time::timeout(Duration::from_secs(10), c).await.is_err() {
                tracing::warn!("a queue consumer did not stop in time");
            }
        }
        feeder.abort();
        spool.abort();
        if let Some(r) = reaper {
            r.abort();
        }
        let _ = ops_task.await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// How often the Docker runner looks for containers of workers that are gone (also once at start-up).
const REAP_EVERY: Duration = Duration::from_secs(60);

/// Removes scanner containers whose SubJob no longer runs under the worker that started them.
async fn reap_loop(docker: DockerRunner, mongo: cspm_shared::db::Mongo) {
    loop {
        let db = mongo.clone();
        let reaped = docker
            .reap_orphans(move |id, worker| {
                let db = db.clone();
                async move {
                    let doc = subjobs::get(&db, &id).await.map_err(|e| e.to_string())?;
                    let holder = doc.and_then(|d| {
                        let live = d.lease_expires_at.is_some_and(|t| t > Timestamp::now());
                        docker::holder(d.status, d.lease_owner, live)
                    });
                    Ok(holder.as_deref() != Some(worker.as_str()))
                }
            })
            .await;
        match reaped {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed orphaned scanner containers"),
            Err(e) => tracing::warn!(error = %e, "could not look for orphaned scanner containers"),
        }
        tokio::time::sleep(REAP_EVERY).await;
    }
}

async fn handle_message(msg: SubJobMessage, ctx: Data<Arc<WorkerCtx>>) -> Result<(), BoxDynError> {
    pipeline::handle(Arc::clone(&ctx), msg).await
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Consumes one queue until shutdown. If the queue connection fails (Redis away, or its data lost), the
/// consumer is rebuilt under a fresh name after a pause; running SubJobs are not affected (their tasks
/// live on and their leases are renewed through MongoDB).
async fn consume(ctx: Arc<WorkerCtx>, kind: QueueKind, concurrency: usize, stop: watch::Receiver<bool>) {
    let mut generation = 0u32;
    let mut backoff = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            return;
        }
        let name = format!("{}-{}-{generation}", ctx.config.name, kind.as_str());
        let (wake_tx, wake_rx) = mpsc::channel(1);
        let listener = tokio::spawn(poll::listen(ctx.queues.client().clone(), ctx.queues.wake_channel(kind), wake_tx));
        let backend = ctx.queues.storage(kind).poll_with_strategy(WakeStrategy::new(ctx.config.poll, wake_rx));
        let worker = WorkerBuilder::new(name.as_str())
            .backend(backend)
            .data(ctx.clone())
            .concurrency(concurrency)
            .build(handle_message);
        let signal = {
            let rx = stop.clone();
            async move {
                wait_true(rx).await;
                Ok::<(), WorkerError>(())
            }
        };
        let result = worker.run_until(signal).await;
        listener.abort();
        match result {
            Ok(()) if *stop.borrow() => return,
            Ok(()) => tracing::warn!(queue = kind.as_str(), "queue consumer ended unexpectedly; restarting"),
            Err(e) => tracing::warn!(queue = kind.as_str(), error = %e, "queue consumer failed; restarting"),
        }
        generation += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Keeps Redis fed from MongoDB (admission control), so that SubJobs created while Redis was full, down,
/// or had no consumers reach a worker.
async fn feed_loop(ctx: Arc<WorkerCtx>, stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    while !*stop.borrow() {
        match dispatch::feed_all(&ctx.mongo, &ctx.queues, 500).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(pushed = n, "fed the queue");
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, failures, "cannot feed the queue");
                }
            }
        }
        tokio::time::sleep(ctx.config.feed_interval).await;
    }
}

impl cspm_shared::ops::Service for WorkerApp {
    type Config = WorkerConfig;
    const NAME: &'static str = "cspm-worker";
    fn common(config: &WorkerConfig) -> &cspm_shared::settings::CommonSettings {
        &config.common
    }
    async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        WorkerApp::build(config).await
    }
    async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        WorkerApp::run_until_stopped(self, shutdown).await
    }
}
