//! Workers that die: SIGKILL mid-SubJob, SIGTERM, and a SubJob that kills its worker every time.

use std::time::{Duration, Instant};

use bson::doc;
use cspm_tests::{Fleet, wait_until};
use serde_json::json;

use crate::{FINISH, start_canary};

const FAST_LEASE: [(&str, &str); 1] = [("CSPM_WORKER_LEASE_SECS", "10")];

#[tokio::test]
async fn a_worker_killed_mid_subjob_is_replaced_within_30_seconds_with_exact_counts() {
    let mut fleet = Fleet::start(&[]).await;
    let victim = fleet.add_worker(&[FAST_LEASE[0], ("CSPM_WORKER_CLOUD_CONCURRENCY", "3")]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "310000000001", &["us-east-1", "eu-west-1", "eu-central-1"]).await;
    let run = start_canary(&fleet, &token, &account, &["canary"], json!({ "duration_ms": 4000, "findings": 2 })).await;
    wait_until(Duration::from_secs(60), "all three sub-jobs to run on the first worker", || async {
        let (_, s) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/status")).await;
        (s["progress"]["running"] == json!(3)).then_some(())
    })
    .await;
    fleet.workers[victim].sigkill();
    let killed_at = Instant::now();
    fleet.add_worker(&[FAST_LEASE[0]]);
    let status = fleet.api.wait_finished(&token, &run, FINISH).await;
    let recovered_in = killed_at.elapsed();
    assert!(recovered_in < Duration::from_secs(30), "recovery took {recovered_in:?}");
    assert_eq!(status["status"], json!("completed"), "{status}");
    assert_eq!(status["progress"]["completed"], json!(3));
    assert_eq!(status["counts"]["completed"], json!(3), "the run's counts are exact");
    for job in status["sub_jobs"].as_array().expect("jobs") {
        assert_eq!(job["attempts"], json!(2), "each SubJob ran once more after the crash: {job}");
    }
    assert_eq!(
        fleet.mongo.findings.count_documents(doc! { "account_id": &account }).await.expect("count"),
        6,
        "nothing stored twice"
    );
    let (_, summary) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/summary")).await;
    assert_eq!(summary["total_findings"], json!(6), "{summary}");
}

#[tokio::test]
async fn sigterm_lets_running_work_finish() {
    let mut fleet = Fleet::start(&[]).await;
    let w = fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "320000000001", &["us-east-1"]).await;
    let run = start_canary(&fleet, &token, &account, &["canary"], json!({ "duration_ms": 3000 })).await;
    wait_until(Duration::from_secs(60), "the sub-job to run", || async {
        let (_, s) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/status")).await;
        (s["progress"]["running"] == json!(1)).then_some(())
    })
    .await;
    fleet.workers[w].sigterm();
    let code = fleet.workers[w].wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "a clean exit");
    let status = fleet.api.wait_finished(&token, &run, Duration::from_secs(10)).await;
    assert_eq!(status["status"], json!("completed"), "the running sub-job finished before the worker left");
    assert_eq!(status["sub_jobs"][0]["attempts"], json!(1));
}

#[tokio::test]
async fn sigterm_hands_back_what_cannot_finish_within_the_grace_period() {
    let mut fleet = Fleet::start(&[]).await;
    let w = fleet.add_worker(&[("CSPM_WORKER_SHUTDOWN_GRACE_SECS", "1")]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "330000000001", &["us-east-1"]).await;
    let run = start_canary(&fleet, &token, &account, &["canary"], json!({ "duration_ms": 6000 })).await;
    wait_until(Duration::from_secs(60), "the sub-job to run", || async {
        let (_, s) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/status")).await;
        (s["progress"]["running"] == json!(1)).then_some(())
    })
    .await;
    fleet.workers[w].sigterm();
    assert_eq!(fleet.workers[w].wait_exit(Duration::from_secs(60)).await, Some(0));
    let (_, s) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/status")).await;
    assert_eq!(s["sub_jobs"][0]["status"], json!("queued"), "handed back: {s}");
    assert_eq!(s["sub_jobs"][0]["attempts"], json!(0), "a hand-back is not a failed attempt");
    fleet.add_worker(&[]);
    let status = fleet.api.wait_finished(&token, &run, FINISH).await;
    assert_eq!(status["status"], json!("completed"), "{status}");
    assert_eq!(status["sub_jobs"][0]["attempts"], json!(1));
}

#[tokio::test]
async fn a_subjob_that_kills_its_worker_three_times_fails_with_the_reason() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[FAST_LEASE[0]]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "340000000001", &["us-east-1"]).await;
    let run =
        start_canary(&fleet, &token, &account, &["canary"], json!({ "duration_ms": 400, "failure": "crash" })).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut crashes = 0;
    let status = loop {
        assert!(Instant::now() < deadline, "the run did not end after {crashes} crashes");
        let (_, s) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/status")).await;
        if s["status"] == json!("failed") {
            break s;
        }
        // Replace a worker the SubJob killed, as a supervisor would.
        let last = fleet.workers.len() - 1;
        if fleet.workers[last].exited().is_some() {
            crashes += 1;
            fleet.add_worker(&[FAST_LEASE[0]]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(crashes, 3, "the SubJob ran exactly three times");
    let job = &status["sub_jobs"][0];
    assert_eq!(job["attempts"], json!(3));
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("lost 3 times"), "{error}");
}

#[tokio::test]
async fn a_cancelled_run_whose_worker_dies_before_stopping_still_ends_cancelled() {
    let mut fleet = Fleet::start(&[]).await;
    let victim = fleet.add_worker(&[FAST_LEASE[0]]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "350000000001", &["us-east-1", "eu-west-1"]).await;
    let run = start_canary(&fleet, &token, &account, &["canary"], json!({ "duration_ms": 120_000 })).await;
    wait_until(Duration::from_secs(60), "both sub-jobs to run", || async {
        let (_, s) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/status")).await;
        (s["progress"]["running"] == json!(2)).then_some(())
    })
    .await;
    // Cancel, and kill the worker before its next lease renewal can notice.
    let (s, c) = fleet.api.delete(&token, &format!("/api/cloud-scans/{run}")).await;
    assert_eq!(s, 202, "{c}");
    fleet.workers[victim].sigkill();
    fleet.add_worker(&[FAST_LEASE[0]]);
    let status = fleet.api.wait_finished(&token, &run, Duration::from_secs(60)).await;
    assert_eq!(status["status"], json!("cancelled"), "{status}");
    assert_eq!(status["progress"]["cancelled"], json!(2));
    let (_, account_view) = fleet.api.get(&token, &format!("/api/cloud-accounts/{account}")).await;
    assert_eq!(account_view["active_run_id"], json!(null), "the account is free again");
}
