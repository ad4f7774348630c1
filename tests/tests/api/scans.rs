use bson::doc;
use cspm_shared::domain::role::Role;
use cspm_tests::{TestApi, user_token};
use serde_json::json;

use crate::assert_problem;

#[tokio::test]
async fn regions_follow_the_precedence_explicit_then_account_then_provider_default() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let with_regions = app.api.aws_account(&token, "100000000001", &["eu-west-1", "eu-north-1"]).await;
    let without = app.api.aws_account(&token, "100000000002", &[]).await;

    let (s, r) = app
        .api
        .post(
            &token,
            "/api/cloud-scans/initiate",
            json!({ "account_id": with_regions, "regions": ["ap-south-1"], "tools": ["canary"] }),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    assert_eq!(r["regions"], json!(["ap-south-1"]));
    assert_eq!(r["sub_jobs_count"], json!(1));
    cancel(&app, &token, &r).await;

    let (_, r) =
        app.api.post(&token, &format!("/api/cloud-accounts/{with_regions}/scan"), json!({ "tools": ["canary"] })).await;
    assert_eq!(r["regions"], json!(["eu-west-1", "eu-north-1"]), "{r}");
    cancel(&app, &token, &r).await;

    let (_, r) = app
        .api
        .post(
            &token,
            &format!("/api/cloud-accounts/{without}/scan"),
            json!({ "scan_type": "quick", "tools": ["canary"] }),
        )
        .await;
    assert_eq!(r["regions"], json!(["us-east-1"]), "{r}");
    cancel(&app, &token, &r).await;

    let (_, r) = app
        .api
        .post(
            &token,
            &format!("/api/cloud-accounts/{without}/scan"),
            json!({ "scan_type": "full", "tools": ["canary"] }),
        )
        .await;
    assert_eq!(r["regions"].as_array().map(Vec::len), Some(13), "{r}");
    assert_eq!(r["sub_jobs_count"], json!(13));
    cancel(&app, &token, &r).await;

    let (s, gcp) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({ "provider": "gcp", "account_id": "my-project-42", "account_name": "g" }),
        )
        .await;
    assert_eq!(s, 201, "{gcp}");
    let (_, r) = app
        .api
        .post(
            &token,
            "/api/cloud-scans/initiate",
            json!({ "account_id": gcp["id"], "regions": ["europe-west1"], "tools": ["canary:a", "canary:b"] }),
        )
        .await;
    assert_eq!(r["regions"], json!(["global"]), "{r}");
    assert_eq!(r["sub_jobs_count"], json!(2));
}

async fn cancel(app: &TestApi, token: &str, run: &serde_json::Value) {
    let id = run["run_id"].as_str().expect("run id");
    let (s, b) = app.api.delete(token, &format!("/api/cloud-scans/{id}")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], json!("cancelled"));
}

#[tokio::test]
async fn a_region_by_tool_scan_creates_one_subjob_each_and_waits_in_the_queue() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let account = app.api.aws_account(&token, "200000000001", &["us-east-1", "eu-west-1", "eu-central-1"]).await;
    let (s, r) = app
        .api
        .post(&token, "/api/cloud-scans/initiate", json!({ "account_id": account, "tools": ["canary:a", "canary:b"] }))
        .await;
    assert_eq!(s, 202, "{r}");
    assert_eq!(r["status"], json!("queued"));
    assert_eq!(r["sub_jobs_count"], json!(6));
    let run = r["run_id"].as_str().expect("id");
    let (s, st) = app.api.get(&token, &format!("/api/cloud-scans/{run}/status")).await;
    assert_eq!(s, 200);
    let jobs = st["sub_jobs"].as_array().expect("sub jobs");
    assert_eq!(jobs.len(), 6);
    let mut pairs: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j["region"].as_str().unwrap_or("").into(), j["tool"].as_str().unwrap_or("").into()))
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 6, "one SubJob per region × tool");
    assert_eq!(st["progress"]["queued"], json!(6));
    assert_eq!(st["progress"]["overall"], json!(0.0));
    // Small messages in Redis, the SubJobs themselves in MongoDB.
    let mut conn = cspm_shared::redis::Client::open(cspm_tests::redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let depth: u64 = cspm_shared::redis::cmd("ZCARD")
        .arg(format!("{}:cspm:cloud:scheduled", app.prefix))
        .query_async(&mut conn)
        .await
        .expect("zcard");
    assert_eq!(depth, 6);
    let (s, list) = app.api.get(&token, &format!("/api/cloud-scans?account_id={account}&status=queued")).await;
    assert_eq!(s, 200);
    assert_eq!(list["total"], json!(1), "{list}");
}

#[tokio::test]
async fn two_concurrent_initiate_requests_for_one_account_produce_one_run() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let account = app.api.aws_account(&token, "300000000001", &["us-east-1", "eu-west-1"]).await;
    let body = json!({ "account_id": account, "tools": ["canary"] });
    let attempts = (0..8).map(|_| app.api.post(&token, "/api/cloud-scans/initiate", body.clone()));
    let answers = futures::future::join_all(attempts).await;
    let created: Vec<_> = answers.iter().filter(|(s, _)| *s == 202).collect();
    let existing: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    assert_eq!(existing.len(), 7, "{answers:?}");
    let run = created[0].1["run_id"].clone();
    assert!(existing.iter().all(|(_, b)| b["run_id"] == run && b["already_running"] == json!(true)), "{answers:?}");
    let runs = app.mongo.scan_runs.count_documents(doc! { "account_id": &account }).await.expect("count");
    assert_eq!(runs, 1);
    let subjobs = app.mongo.sub_jobs.count_documents(doc! {}).await.expect("count");
    assert_eq!(subjobs, 2);
}

#[tokio::test]
async fn roles_decide_who_may_start_and_cancel_scans() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let account = app.api.aws_account(&admin, "400000000001", &["us-east-1"]).await;
    let p = &app.prefix;
    let viewer = user_token(&app.api, &app.mongo, &format!("viewer@{p}.t"), &team, Role::Viewer).await;
    let auditor = user_token(&app.api, &app.mongo, &format!("auditor@{p}.t"), &team, Role::Auditor).await;
    let analyst = user_token(&app.api, &app.mongo, &format!("analyst@{p}.t"), &team, Role::SecurityAnalyst).await;
    let manager = user_token(&app.api, &app.mongo, &format!("manager@{p}.t"), &team, Role::SecurityManager).await;
    let start = json!({ "account_id": account, "tools": ["canary"] });
    for t in [&viewer, &auditor] {
        let (s, b) = app.api.post(t, "/api/cloud-scans/initiate", start.clone()).await;
        assert_problem(s, &b, 403, "does not allow");
        let (s, _) = app.api.get(t, "/api/cloud-scans").await;
        assert_eq!(s, 200, "viewing needs any role");
        let (s, b) = app.api.post(t, "/api/native-scans/network-discovery", json!({ "target": "127.0.0.1" })).await;
        assert_problem(s, &b, 403, "run_scans");
    }
    let (s, run) = app.api.post(&analyst, "/api/cloud-scans/initiate", start.clone()).await;
    assert_eq!(s, 202, "{run}");
    let run_id = run["run_id"].as_str().expect("id");
    let (s, b) = app.api.delete(&analyst, &format!("/api/cloud-scans/{run_id}")).await;
    assert_problem(s, &b, 403, "manage_scans");
    let (s, b) = app
        .api
        .post(
            &analyst,
            "/api/cloud-accounts",
            json!({ "provider": "aws", "account_id": "400000000002", "account_name": "x" }),
        )
        .await;
    assert_problem(s, &b, 403, "manage_cloud_accounts");
    let (s, b) = app.api.delete(&manager, &format!("/api/cloud-scans/{run_id}")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app.api.delete(&manager, &format!("/api/cloud-scans/{run_id}")).await;
    assert_problem(s, &b, 409, "already finished");
}

#[tokio::test]
async fn invalid_scan_requests_are_refused_with_what_is_wrong() {
    let app = TestApi::spawn_with(&[("CSPM_MAX_SUBJOBS_PER_RUN", "10")]).await;
    let token = app.admin().await;
    let account = app.api.aws_account(&token, "500000000001", &[]).await;
    let cases = [
        (json!({ "account_id": account, "scan_type": "deep" }), 422, "unknown scan type"),
        (json!({ "account_id": account, "tools": ["nessus"] }), 422, "unknown tool"),
        (json!({ "account_id": account, "tools": ["nmap"] }), 422, "does not scan cloud"),
        (json!({ "account_id": account, "tools": ["canary", "canary"] }), 422, "listed twice"),
        (json!({ "account_id": account, "regions": ["Not A Region"], "tools": ["canary"] }), 422, "region"),
        (
            json!({ "account_id": account, "tools": ["canary"], "canary": { "duration_ms": 1, "explode": true } }),
            422,
            "unknown field",
        ),
        (json!({ "account_id": account, "tools": ["prowler"], "canary": { "duration_ms": 1 } }), 422, "no canary tool"),
        (json!({ "account_id": account, "scan_type": "full", "tools": ["canary"] }), 422, "more than the limit of 10"),
        (json!({ "account_id": account, "provider": "gcp" }), 422, "aws account"),
        (json!({ "account_id": "acc_nope" }), 404, "cloud account not found"),
        (json!({ "account_id": "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV" }), 404, "cloud account not found"),
        (json!({ "tools": ["canary"] }), 422, "account_id"),
    ];
    for (body, status, needle) in cases {
        let (s, b) = app.api.post(&token, "/api/cloud-scans/initiate", body.clone()).await;
        assert_problem(s, &b, status, needle);
    }
    assert_eq!(app.mongo.scan_runs.count_documents(doc! {}).await.expect("count"), 0, "nothing was created");
}

#[tokio::test]
async fn native_targets_are_checked_against_the_ssrf_policy() {
    let strict = TestApi::spawn_with(&[("CSPM_ALLOW_LOOPBACK_SCAN_TARGETS", "false")]).await;
    let token = strict.admin().await;
    let cases = [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("10.1.2.3", "private"),
        ("169.254.169.254", "metadata"),
        ("0.0.0.0", "never scanned"),
        ("10.0.0.0/8", "limited to /24"),
        ("1.2.3.4; rm -rf /", "not an IP address"),
        ("no-such-host.invalid", "cannot resolve"),
    ];
    for (target, needle) in cases {
        let (s, b) = strict.api.post(&token, "/api/native-scans/network-discovery", json!({ "target": target })).await;
        assert_problem(s, &b, 422, needle);
    }
    let (s, b) = strict
        .api
        .post(&token, "/api/native-scans/network-discovery", json!({ "target": "8.8.8.8", "ports": "0-10" }))
        .await;
    assert_problem(s, &b, 422, "port");
    let (s, b) = strict
        .api
        .post(&token, "/api/native-scans/network-discovery", json!({ "target": "8.8.8.8", "scan_type": "nuke" }))
        .await;
    assert_problem(s, &b, 422, "scan type");

    let open = TestApi::spawn_with(&[("CSPM_ALLOW_LOOPBACK_SCAN_TARGETS", "true")]).await;
    let token = open.admin().await;
    let (s, b) = open
        .api
        .post(
            &token,
            "/api/native-scans/network-discovery",
            json!({ "target": "127.0.0.1", "ports": "22,80", "scan_type": "port_scan" }),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["status"], json!("queued"));
    let id = b["scan_id"].as_str().expect("id");
    let (s, r) = open.api.get(&token, &format!("/api/native-scans/results/{id}")).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["target"], json!("127.0.0.1"));
    assert_eq!(r["tool_type"], json!("nmap"));
    let (s, b) =
        open.api.post(&token, "/api/native-scans/network-discovery", json!({ "target": "169.254.169.254" })).await;
    assert_problem(s, &b, 422, "metadata");
}
