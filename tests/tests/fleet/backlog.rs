//! A large backlog created while no worker runs: Redis holds at most the high-water mark (apalis-redis
//! 1.0.0 breaks at 8,000 due messages), MongoDB holds the rest, and everything completes once workers
//! start, each SubJob exactly once.

use std::time::Duration;

use bson::doc;
use cspm_tests::{Fleet, wait_every};
use futures::TryStreamExt;
use serde_json::json;

use crate::start_canary;

const HIGH_WATER_MARK: u64 = 1500;

#[tokio::test]
async fn ten_thousand_subjobs_created_without_workers_all_complete_once() {
    let mut fleet = Fleet::start(&[("CSPM_QUEUE_HIGH_WATER_MARK", "1500")]).await;
    let token = fleet.admin().await;
    let regions: Vec<String> = (1..=50).map(|i| format!("region-{i:02}")).collect();
    let region_refs: Vec<&str> = regions.iter().map(String::as_str).collect();
    let tools: Vec<String> = (1..=20).map(|i| format!("canary:t{i}")).collect();
    let tool_refs: Vec<&str> = tools.iter().map(String::as_str).collect();
    let mut runs = Vec::new();
    for i in 0..10 {
        let account = fleet.api.aws_account(&token, &format!("9000000000{i:02}"), &region_refs).await;
        runs.push(start_canary(&fleet, &token, &account, &tool_refs, json!({})).await);
    }
    assert_eq!(fleet.mongo.sub_jobs.count_documents(doc! {}).await.expect("count"), 10_000);

    let redis = cspm_shared::redis::Client::open(cspm_tests::redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let queue = format!("{}:cspm:cloud", fleet.prefix);
    let depth = || {
        let mut conn = redis.clone();
        let q = queue.clone();
        async move {
            let (a, b): (u64, u64) = cspm_shared::redis::pipe()
                .cmd("ZCARD")
                .arg(format!("{q}:scheduled"))
                .cmd("LLEN")
                .arg(format!("{q}:active"))
                .query_async(&mut conn)
                .await
                .expect("depth");
            a + b
        }
    };
    // Let the scheduler's feeder run a few times: the backlog in Redis stays at the mark.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = depth().await;
    assert!(waiting <= HIGH_WATER_MARK, "{waiting} messages in Redis");
    assert!(waiting >= 1000, "the queue was fed ({waiting})");

    fleet.add_worker(&[("CSPM_WORKER_CLOUD_CONCURRENCY", "16")]);
    fleet.add_worker(&[("CSPM_WORKER_CLOUD_CONCURRENCY", "16")]);
    // Watch Redis (cheap) often and the database (the runs, ten documents) rarely, so that the test
    // itself does not load the servers it measures.
    let started = std::time::Instant::now();
    let max_depth = std::sync::atomic::AtomicU64::new(waiting);
    wait_every(Duration::from_millis(250), Duration::from_secs(900), "all ten runs to finish", || async {
        max_depth.fetch_max(depth().await, std::sync::atomic::Ordering::Relaxed);
        if started.elapsed().as_millis() % 2000 > 300 {
            return None;
        }
        let active =
            fleet.mongo.scan_runs.count_documents(doc! { "status": { "$in": ["queued", "running"] } }).await.ok()?;
        (active == 0).then_some(())
    })
    .await;
    let max_depth = max_depth.into_inner();
    assert!(max_depth <= HIGH_WATER_MARK, "Redis held {max_depth} messages");
    eprintln!("10,000 sub-jobs drained in {:?} after the workers started", started.elapsed());
    for run in &runs {
        let status = fleet.api.wait_finished(&token, run, Duration::from_secs(120)).await;
        assert_eq!(status["status"], json!("completed"));
        assert_eq!(status["counts"]["completed"], json!(1000), "{}", status["counts"]);
    }
    // Each SubJob started exactly once.
    let multi: Vec<bson::Document> = fleet
        .mongo
        .sub_jobs
        .find(doc! { "attempts": { "$ne": 1 } })
        .limit(5)
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("docs");
    assert!(multi.is_empty(), "SubJobs started more than once: {multi:?}");
    for w in &mut fleet.workers {
        assert!(w.exited().is_none(), "a worker died:\n{}", w.log_text());
    }
}
