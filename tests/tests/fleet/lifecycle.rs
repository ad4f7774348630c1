//! The finding lifecycle through the whole fleet: findings a rescan no longer reports are resolved
//! (recording the closing run), come back reopened, and an empty report that examined nothing resolves
//! nothing (the zero-findings guard). Canary findings in a cloud scope, and real nmap against listeners
//! the test opens and closes.

use std::net::TcpListener;

use cspm_tests::Fleet;
use serde_json::{Value, json};

use crate::{FINISH, network_scan, start_canary};

async fn counts(fleet: &Fleet, token: &str, query: &str) -> Value {
    let (s, b) = fleet.api.get(token, &format!("/api/cspm/findings/stats?{query}")).await;
    assert_eq!(s, 200, "{b}");
    b["by_status"].clone()
}

#[tokio::test]
async fn rescans_resolve_and_reopen_findings_and_an_unverified_empty_report_resolves_nothing() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "300000000001", &["eu-west-1"]).await;
    let scan = |findings: u32, unverified: bool| {
        let (fleet, token, account) = (&fleet, token.clone(), account.clone());
        async move {
            let run = start_canary(
                fleet,
                &token,
                &account,
                &["canary"],
                json!({ "findings": findings, "unverified": unverified }),
            )
            .await;
            let status = fleet.api.wait_finished(&token, &run, FINISH).await;
            assert_eq!(status["status"], json!("completed"), "{status}");
            let (_, summary) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/summary")).await;
            (run, summary)
        }
    };
    let q = format!("account_id={account}");

    let (_, s1) = scan(5, false).await;
    assert_eq!(s1["new_findings"], json!(5), "{s1}");
    assert_eq!(counts(&fleet, &token, &q).await["open"], json!(5));

    // Two fewer: those two are resolved by this run.
    let (run2, s2) = scan(3, false).await;
    assert_eq!(s2["resolved_findings"], json!(2), "{s2}");
    let c = counts(&fleet, &token, &q).await;
    assert_eq!((c["open"].clone(), c["resolved"].clone()), (json!(3), json!(2)), "{c}");
    let (_, resolved) = fleet.api.get(&token, &format!("/api/cspm/findings?{q}&status=resolved")).await;
    for f in resolved["findings"].as_array().expect("findings") {
        assert_eq!(f["resolution"]["kind"], json!("auto"), "{f}");
        assert_eq!(f["resolution"]["run_id"], json!(run2), "the closing run is recorded");
    }

    // Nothing reported and nothing examined: unverified, so nothing is resolved, and the run says so.
    let (_, s3) = scan(0, true).await;
    assert_eq!(s3["resolved_findings"], json!(0), "{s3}");
    let warnings = s3["warnings"].to_string();
    assert!(warnings.contains("zero-findings guard"), "{s3}");
    assert_eq!(counts(&fleet, &token, &q).await["open"], json!(3));

    // All five again: the two resolved ones are reopened, nothing is new.
    let (_, s4) = scan(5, false).await;
    assert_eq!(s4["reopened_findings"], json!(2), "{s4}");
    assert_eq!(s4["new_findings"], json!(0), "{s4}");
    let c = counts(&fleet, &token, &q).await;
    assert_eq!((c["open"].clone(), c["reopened"].clone(), c["resolved"].clone()), (json!(3), json!(2), json!(0)));

    // A verified empty report (the canary examined its region) resolves everything it owned.
    let (_, s5) = scan(0, false).await;
    assert_eq!(s5["resolved_findings"], json!(5), "{s5}");
    assert_eq!(counts(&fleet, &token, &q).await["resolved"], json!(5));
}

#[tokio::test]
async fn a_truncated_report_fails_its_subjob_stores_nothing_and_resolves_nothing() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let account = fleet.api.aws_account(&token, "300000000002", &["eu-west-1"]).await;
    let q = format!("account_id={account}");
    let run = start_canary(&fleet, &token, &account, &["canary"], json!({ "findings": 5 })).await;
    assert_eq!(fleet.api.wait_finished(&token, &run, FINISH).await["status"], json!("completed"));

    // 1,200 findings, cut after 600: more than a store batch would already have written in one pass.
    let run =
        start_canary(&fleet, &token, &account, &["canary"], json!({ "findings": 1200, "failure": "malformed" })).await;
    let status = fleet.api.wait_finished(&token, &run, FINISH).await;
    assert_eq!(status["status"], json!("failed"), "{status}");
    let error = status["sub_jobs"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("canary.json") && error.contains("line"), "names the file and the position: {error}");
    let c = counts(&fleet, &token, &q).await;
    assert_eq!(c["open"], json!(5), "nothing of the truncated report was stored, nothing was resolved: {c}");
    let (_, none) = fleet.api.get(&token, &format!("/api/cspm/findings?run_id={run}")).await;
    assert_eq!(none["total"], json!(0), "{none}");
}

#[tokio::test]
async fn a_closed_port_is_resolved_and_reopened_when_it_listens_again() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let a = TcpListener::bind("127.0.0.1:0").expect("listener");
    let b = TcpListener::bind("127.0.0.1:0").expect("listener");
    let (pa, pb) = (a.local_addr().expect("addr").port(), b.local_addr().expect("addr").port());
    let ports = format!("{pa},{pb}");
    let status_of = |port: u16| {
        let (fleet, token) = (&fleet, token.clone());
        async move {
            let (_, list) =
                fleet.api.get(&token, &format!("/api/cspm/findings?tool=nmap&search=127.0.0.1:{port}/tcp")).await;
            assert_eq!(list["total"], json!(1), "{list}");
            list["findings"][0]["status"].as_str().unwrap_or_default().to_string()
        }
    };

    let first = network_scan(&fleet, &token, &ports, "port_scan").await;
    assert_eq!(first["findings_count"], json!(2), "{first}");

    drop(b);
    let second = network_scan(&fleet, &token, &ports, "port_scan").await;
    assert_eq!(second["status"], json!("completed"), "{second}");
    assert_eq!(second["summary"]["resolved_findings"], json!(1), "{second}");
    assert_eq!(status_of(pa).await, "open");
    assert_eq!(status_of(pb).await, "resolved");

    let b = TcpListener::bind(("127.0.0.1", pb)).expect("the port listens again");
    let third = network_scan(&fleet, &token, &ports, "port_scan").await;
    assert_eq!(third["summary"]["reopened_findings"], json!(1), "{third}");
    assert_eq!(status_of(pb).await, "reopened");
    let (_, grouped) = fleet.api.get(&token, "/api/cspm/findings/grouped?tool=nmap").await;
    assert_eq!(grouped["groups"][0]["count"], json!(2), "{grouped}");
    drop((a, b));
}
