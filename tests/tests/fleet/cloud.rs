//! Cloud scans through the whole fleet with the canary tool: split, run, roll up, fail, cancel, time out.

use std::time::Duration;

use bson::doc;
use cspm_tests::{Fleet, wait_until};
use serde_json::json;

use crate::{FINISH, start_canary};

#[tokio::test]
async fn three_regions_by_two_tools_complete_and_roll_up() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[]);
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "123456789012", &["us-east-1", "eu-west-1", "eu-central-1"]).await;
    let run =
        start_canary(&fleet, &token, &account, &["canary:a", "canary:b"], json!({ "duration_ms": 300, "findings": 4 }))
            .await;
    let status = fleet.api.wait_finished(&token, &run, FINISH).await;
    assert_eq!(status["status"], json!("completed"), "{status}");
    assert_eq!(status["progress"]["completed"], json!(6));
    assert_eq!(status["progress"]["overall"], json!(100.0));
    assert!(
        status["sub_jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .all(|j| j["attempts"] == json!(1) && j["findings_count"] == json!(4))
    );
    let (_, summary) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/summary")).await;
    assert_eq!(summary["total_findings"], json!(24), "{summary}");
    assert_eq!(summary["new_findings"], json!(24));
    assert_eq!(summary["by_severity"]["informational"], json!(24));
    assert_eq!(fleet.mongo.findings.count_documents(doc! { "account_id": &account }).await.expect("count"), 24);
    let events = fleet.api.ocsf_events(&token, &run).await;
    assert_eq!(events.len(), 24);
    cspm_tests::assert_valid_ocsf(&events);
    assert!(
        events.iter().all(|e| e["cloud"]["account"]["uid"] == json!("123456789012")),
        "cloud profile with the account"
    );
    // The account is free again: a second scan starts (and finds nothing new).
    let again = start_canary(&fleet, &token, &account, &["canary:a", "canary:b"], json!({ "findings": 4 })).await;
    let status = fleet.api.wait_finished(&token, &again, FINISH).await;
    assert_eq!(status["status"], json!("completed"));
    let (_, summary) = fleet.api.get(&token, &format!("/api/cloud-scans/{again}/summary")).await;
    assert_eq!(summary["new_findings"], json!(0));
    assert_eq!(fleet.mongo.findings.count_documents(doc! { "account_id": &account }).await.expect("count"), 24);
    // The unified record follows the run.
    let (_, list) = fleet.api.get(&token, "/api/cloud-scans?status=completed").await;
    assert_eq!(list["total"], json!(2), "{list}");
    let record = fleet.mongo.scan_results.find_one(doc! { "scan_id": &run }).await.expect("db").expect("record");
    assert_eq!(record.get_str("status").ok(), Some("completed"));
    // Workers expose what they did.
    let text = metrics_of(&fleet).await;
    assert!(text.contains("cspm_subjobs_total{tool=\"canary:a\",outcome=\"completed\"}"), "{text}");
    assert!(text.contains("cspm_subjob_duration_seconds"), "{text}");
}

async fn metrics_of(fleet: &Fleet) -> String {
    // The workers bind port 0: read the address each one logged.
    let mut out = String::new();
    for w in &fleet.workers {
        let log = w.log_text();
        let addr = log.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == json!("worker starting")).then(|| v["addr"].as_str().unwrap_or("").to_string())
        });
        if let Some(addr) = addr
            && let Ok(r) = fleet.api.http.get(format!("http://{addr}/metrics")).send().await
        {
            out.push_str(&r.text().await.unwrap_or_default());
        }
    }
    out
}

#[tokio::test]
async fn one_failing_subjob_makes_the_run_partial_and_all_failing_make_it_failed() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let regions = ["us-east-1", "eu-west-1", "eu-central-1"];
    let a = fleet.api.aws_account(&token, "210000000001", &regions).await;
    let b = fleet.api.aws_account(&token, "210000000002", &regions).await;
    let partial = start_canary(
        &fleet,
        &token,
        &a,
        &["canary:a", "canary:b"],
        json!({ "failure": "error", "failure_regions": ["eu-west-1"] }),
    )
    .await;
    let failed = start_canary(&fleet, &token, &b, &["canary"], json!({ "failure": "error" })).await;
    let p = fleet.api.wait_finished(&token, &partial, FINISH).await;
    assert_eq!(p["status"], json!("partial"), "{p}");
    assert_eq!(p["progress"]["completed"], json!(4));
    assert_eq!(p["progress"]["failed"], json!(2));
    let failing =
        p["sub_jobs"].as_array().expect("jobs").iter().filter(|j| j["status"] == json!("failed")).collect::<Vec<_>>();
    assert!(failing.iter().all(|j| j["region"] == json!("eu-west-1")));
    assert!(failing.iter().all(|j| j["error"].as_str().unwrap_or("").contains("failed as requested")), "{failing:?}");
    let (_, summary) = fleet.api.get(&token, &format!("/api/cloud-scans/{partial}/summary")).await;
    assert_eq!(summary["warnings"].as_array().map(Vec::len), Some(2), "{summary}");
    let f = fleet.api.wait_finished(&token, &failed, FINISH).await;
    assert_eq!(f["status"], json!("failed"), "{f}");
    assert_eq!(f["progress"]["failed"], json!(3));
}

#[tokio::test]
async fn a_tool_missing_on_the_worker_fails_its_subjobs_naming_the_tool() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[("CSPM_PROWLER_PATH", "/nonexistent/prowler")]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "220000000001", &["us-east-1"]).await;
    let (s, r) =
        fleet.api.post(&token, &format!("/api/cloud-accounts/{account}/scan"), json!({ "scan_type": "quick" })).await;
    assert_eq!(s, 202, "{r}");
    assert_eq!(r["tools"], json!(["prowler"]));
    let run = r["run_id"].as_str().expect("id");
    let status = fleet.api.wait_finished(&token, run, FINISH).await;
    assert_eq!(status["status"], json!("failed"), "{status}");
    let error = status["sub_jobs"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("tool `prowler` is not available on this worker"), "{error}");
}

#[tokio::test]
async fn cancel_stops_queued_and_running_work() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[("CSPM_WORKER_CLOUD_CONCURRENCY", "2"), ("CSPM_WORKER_LEASE_SECS", "6")]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "230000000001", &["us-east-1", "eu-west-1", "eu-central-1"]).await;
    let run =
        start_canary(&fleet, &token, &account, &["canary:a", "canary:b"], json!({ "duration_ms": 120_000 })).await;
    wait_until(Duration::from_secs(60), "two sub-jobs to run", || async {
        let (_, s) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/status")).await;
        (s["progress"]["running"] == json!(2)).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let (s, c) = fleet.api.delete(&token, &format!("/api/cloud-scans/{run}")).await;
    assert_eq!(s, 202, "{c}");
    assert_eq!(c["cancelled_sub_jobs"], json!(4));
    assert_eq!(c["stopping_sub_jobs"], json!(2));
    let status = fleet.api.wait_finished(&token, &run, Duration::from_secs(60)).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "running work stopped within seconds ({:?})",
        started.elapsed()
    );
    assert_eq!(status["status"], json!("cancelled"), "{status}");
    assert_eq!(status["progress"]["cancelled"], json!(6));
    let (_, account_view) = fleet.api.get(&token, &format!("/api/cloud-accounts/{account}")).await;
    assert_eq!(account_view["active_run_id"], json!(null), "the account is free again");
}

#[tokio::test]
async fn a_subjob_past_its_time_limit_ends_timed_out() {
    let mut fleet = Fleet::start(&[("CSPM_CLOUD_SUBJOB_TIMEOUT_SECS", "2")]).await;
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "240000000001", &["us-east-1"]).await;
    let run = start_canary(&fleet, &token, &account, &["canary"], json!({ "failure": "hang" })).await;
    let status = fleet.api.wait_finished(&token, &run, FINISH).await;
    assert_eq!(status["status"], json!("failed"), "{status}");
    assert_eq!(status["progress"]["timed_out"], json!(1));
    assert!(status["sub_jobs"][0]["error"].as_str().unwrap_or("").contains("within 2 s"), "{status}");
}
