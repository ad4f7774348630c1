//! What the fleet's two mandated parts cost on their own, without the rest of the fleet: the queue
//! (apalis-redis, configured exactly as the workers configure it) and the SubJob bookkeeping in the
//! database (the store functions the API and the workers call). Their figures bound the fleet's from
//! above: a SubJob cannot go faster through the whole fleet than through either part alone.
//!
//! - `queue`: two apalis workers (in this process, each with its own name, wake-up listener and
//!   concurrency, as in `cspm-worker`) consume messages whose handler does nothing; a burst pushed in
//!   the feeder's batches gives messages per second, and single messages pushed at a steady rate give
//!   the delay from push to the handler's start (Celery's "task start − enqueue").
//! - `bookkeeping`: SubJobs are inserted (in a run's batches), claimed with a lease and finished, in the
//!   batches the workers' ledger forms, against the database alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apalis::prelude::*;
use apalis_core::backend::ext::BackendExt;
use cspm_shared::db::Mongo;
use cspm_shared::dispatch::task_id_for;
use cspm_shared::domain::scan::{SubJobStatus, Tool, ToolId};
use cspm_shared::ids::{RunId, SubJobId, TeamId};
use cspm_shared::queue::{QueueKind, QueueSettings, Queues, SubJobMessage};
use cspm_shared::store::subjobs::{self, Finishing, Outcome, SubJobDoc};
use cspm_shared::time::Timestamp;
use cspm_worker::poll::{self, WakeStrategy};
use tokio::sync::{Notify, mpsc};

/// Messages per push in the burst (the feeder's batch).
const PUSH_BATCH: usize = 500;

struct Seen {
    done: AtomicUsize,
    all_done: Notify,
    expected: AtomicUsize,
    /// Push instants of the paced messages, and the handler's delay for each.
    pushed: Mutex<HashMap<SubJobId, Instant>>,
    waits: Mutex<Vec<f64>>,
    last: Mutex<Option<Instant>>,
}

async fn nothing(msg: SubJobMessage, seen: Data<Arc<Seen>>) -> Result<(), BoxDynError> {
    let now = Instant::now();
    if let Some(at) = seen.pushed.lock().ok().and_then(|mut p| p.remove(&msg.subjob_id))
        && let Ok(mut w) = seen.waits.lock()
    {
        w.push(now.duration_since(at).as_secs_f64() * 1000.0);
    }
    if let Ok(mut l) = seen.last.lock() {
        *l = Some(now);
    }
    if seen.done.fetch_add(1, Ordering::SeqCst) + 1 >= seen.expected.load(Ordering::SeqCst) {
        seen.all_done.notify_waiters();
    }
    Ok(())
}

/// The queue alone: `count` messages as a burst, then `paced` messages at `rate` per second.
pub async fn queue(
    redis_url: &str,
    count: usize,
    workers: usize,
    concurrency: usize,
    paced: usize,
    rate: f64,
) -> anyhow::Result<()> {
    let settings = QueueSettings {
        redis_url: redis_url.to_string(),
        namespace: format!("floor{}:", ulid::Ulid::generate()),
        response_timeout: Duration::from_secs(2),
        heartbeat: Duration::from_secs(5),
        missed_heartbeats: 2,
        high_water_mark: 2000,
    };
    let queues = Queues::new(settings)?;
    queues.ping().await.context("Redis")?;
    let kind = QueueKind::Cloud;
    let seen = Arc::new(Seen {
        done: AtomicUsize::new(0),
        all_done: Notify::new(),
        expected: AtomicUsize::new(usize::MAX),
        pushed: Mutex::new(HashMap::new()),
        waits: Mutex::new(Vec::new()),
        last: Mutex::new(None),
    });
    // Consumers and their wake-up listeners run until the measurement ends; the process exits then.
    let mut running = Vec::new();
    for w in 0..workers {
        let (wake_tx, wake_rx) = mpsc::channel(1);
        running.push(tokio::spawn(poll::listen(queues.client().clone(), queues.wake_channel(kind), wake_tx)));
        let backend = queues.storage(kind).poll_with_strategy(WakeStrategy::new(Duration::from_millis(250), wake_rx));
        let worker = WorkerBuilder::new(format!("floor-{w}-{}", ulid::Ulid::generate()))
            .backend(backend)
            .data(seen.clone())
            .concurrency(concurrency)
            .build(nothing);
        running.push(tokio::spawn(async move {
            if let Err(e) = worker.run().await {
                eprintln!("queue worker failed: {e}");
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, wall0) = (own_cpu_seconds(), Instant::now());

    // The burst: pushed in the feeder's batches, below the high-water mark, while the workers consume.
    seen.expected.store(count, Ordering::SeqCst);
    let token = ulid::Ulid::generate().to_string();
    let run = RunId::new();
    let mut left = count;
    while left > 0 {
        let room = queues.settings().high_water_mark.saturating_sub(queues.depth(kind).await?) as usize;
        if room < PUSH_BATCH.min(left) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let n = PUSH_BATCH.min(left);
        let batch: Vec<_> = (0..n)
            .map(|_| {
                let id = SubJobId::new();
                (task_id_for(&id, &token), SubJobMessage { subjob_id: id, run_id: run.clone() })
            })
            .collect();
        queues.push(kind, batch).await?;
        left -= n;
    }
    wait_for(&seen, count, Duration::from_secs(300)).await?;
    let last = seen.last.lock().ok().and_then(|l| *l).unwrap_or_else(Instant::now);
    let burst_secs = last.duration_since(wall0).as_secs_f64();
    let burst_cpu = own_cpu_seconds() - cpu0;

    // Paced: one message at a time, at a steady rate, each timed from just before its push.
    seen.done.store(0, Ordering::SeqCst);
    seen.expected.store(paced, Ordering::SeqCst);
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    for i in 0..paced {
        tokio::time::sleep_until(start + period * i as u32).await;
        let id = SubJobId::new();
        let task = task_id_for(&id, &token);
        if let Ok(mut p) = seen.pushed.lock() {
            p.insert(id.clone(), Instant::now());
        }
        queues.push(kind, vec![(task, SubJobMessage { subjob_id: id, run_id: run.clone() })]).await?;
    }
    wait_for(&seen, paced, Duration::from_secs(120)).await?;
    let mut waits = seen.waits.lock().map(|w| w.clone()).unwrap_or_default();
    waits.sort_by(f64::total_cmp);

    for r in running {
        r.abort();
    }
    println!(
        "{{\"phase\":\"queue\",\"workers\":{workers},\"concurrency\":{concurrency},\"messages\":{count},\"seconds\":{burst_secs:.3},\"messages_per_second\":{:.0},\"bench_cpu_seconds\":{burst_cpu:.2},\"paced_rate\":{rate},\"paced\":{},\"push_to_start_ms_p50\":{:.2},\"push_to_start_ms_p99\":{:.2},\"push_to_start_ms_max\":{:.2}}}",
        count as f64 / burst_secs,
        waits.len(),
        crate::pct(&waits, 50.0),
        crate::pct(&waits, 99.0),
        waits.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

async fn wait_for(seen: &Seen, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = seen.all_done.notified();
        if seen.done.load(Ordering::SeqCst) >= n {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() && seen.done.load(Ordering::SeqCst) < n {
            bail!("{} of {n} messages handled after {timeout:?}", seen.done.load(Ordering::SeqCst));
        }
    }
}

/// The database alone: `count` SubJobs of runs of `per_run` inserted, then claimed and finished in
/// batches of `batch` by `lanes` concurrent ledgers (the workers' claim and finish loops).
pub async fn bookkeeping(
    mongodb_uri: &str,
    db_prefix: &str,
    count: usize,
    per_run: usize,
    batch: usize,
    lanes: usize,
) -> anyhow::Result<()> {
    let db = Mongo::connect(mongodb_uri, db_prefix, "cspm-bench", Duration::from_secs(10)).await?;
    db.ensure_indexes().await?;
    let team = TeamId::new();
    let mut jobs = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(per_run) {
        let run = RunId::new();
        let n = per_run.min(count - chunk * per_run);
        for i in 0..n {
            jobs.push(queued_canary(&run, &team, i, n));
        }
    }
    let ids: Vec<SubJobId> = jobs.iter().map(|j| j.id.clone()).collect();

    let t = Instant::now();
    for run in jobs.chunks(per_run) {
        subjobs::insert_many(&db, run).await?;
    }
    let insert_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let lanes_out = futures::future::try_join_all(
        ids.chunks(count.div_ceil(lanes.max(1)))
            .enumerate()
            .map(|(lane, mine)| claim_and_finish(&db, lane, mine, batch)),
    )
    .await?;
    let work_secs = t.elapsed().as_secs_f64();
    let (claimed, finished) = lanes_out.iter().fold((0, 0), |(c, f), (a, b)| (c + a, f + b));
    if claimed != count || finished != count {
        bail!("claimed {claimed}, finished {finished} of {count}");
    }
    println!(
        "{{\"phase\":\"bookkeeping\",\"subjobs\":{count},\"per_run\":{per_run},\"batch\":{batch},\"lanes\":{lanes},\"insert_seconds\":{insert_secs:.3},\"claim_finish_seconds\":{work_secs:.3},\"subjobs_per_second\":{:.0}}}",
        count as f64 / (insert_secs + work_secs)
    );
    Ok(())
}

/// One worker's ledger: claims its SubJobs `batch` at a time and finishes each batch it claimed.
/// Returns (claimed, finished).
async fn claim_and_finish(db: &Mongo, lane: usize, ids: &[SubJobId], batch: usize) -> anyhow::Result<(usize, usize)> {
    let owner = format!("floor-{lane}");
    let (mut claimed, mut finished) = (0, 0);
    for part in ids.chunks(batch) {
        let got = subjobs::claim_queued(db, part, &owner, Duration::from_secs(60)).await?;
        claimed += got.len();
        let ends: Vec<Finishing> = got
            .into_iter()
            .map(|(job, lease)| Finishing {
                id: job.id,
                lease,
                status: SubJobStatus::Completed,
                outcome: Outcome::default(),
            })
            .collect();
        finished += subjobs::finish_many(db, &ends).await?.into_iter().filter(|made| *made).count();
    }
    Ok((claimed, finished))
}

fn queued_canary(run: &RunId, team: &TeamId, i: usize, run_size: usize) -> SubJobDoc {
    let tool = ToolId { tool: Tool::Canary, label: Some(format!("l{i}")) };
    SubJobDoc {
        timeout_secs: 120,
        dispatched_at: Some(Timestamp::now()),
        dispatch_token: Some("floor".into()),
        run_size: run_size as i64,
        ..SubJobDoc::queued(run.clone(), team.clone(), QueueKind::Cloud, tool, "us-east-1".into())
    }
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name), in clock ticks of
    // 1/100 s (USER_HZ on Linux).
    (ticks(11) + ticks(12)) / 100.0
}
