//! End to end: the real binaries (API, workers, scheduler) as processes, real Redis, the Mongo-wire
//! server and real nmap. Run one at a time (see `.config/nextest.toml`).

mod backlog;
mod cloud;
mod containers;
mod crashes;
mod lifecycle;
mod network;
mod normalize;
mod prowler;
mod scanners;
mod schedules;

use std::time::Duration;

use serde_json::{Value, json};

/// Starts a canary cloud scan and returns its run id.
pub async fn start_canary(
    fleet: &cspm_tests::Fleet,
    token: &str,
    account: &str,
    tools: &[&str],
    canary: Value,
) -> String {
    let (s, b) = fleet
        .api
        .post(token, "/api/cloud-scans/initiate", json!({ "account_id": account, "tools": tools, "canary": canary }))
        .await;
    assert_eq!(s, 202, "{b}");
    b["run_id"].as_str().expect("run id").to_string()
}

pub const FINISH: Duration = Duration::from_secs(120);

/// Waits until a native scan's result record says it finished, and returns the record.
pub async fn wait_native(fleet: &cspm_tests::Fleet, token: &str, id: &str, timeout: Duration) -> Value {
    cspm_tests::wait_until(timeout, "the native scan to finish", || async {
        let (s, r) = fleet.api.get(token, &format!("/api/native-scans/results/{id}")).await;
        (s == 200 && ["completed", "failed", "partial"].contains(&r["status"].as_str().unwrap_or(""))).then_some(r)
    })
    .await
}

/// The resource uids of a native scan's findings, sorted.
pub fn resource_uids(result: &Value) -> Vec<String> {
    let mut found: Vec<String> = result["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["resource"]["uid"].as_str().unwrap_or("").to_string())
        .collect();
    found.sort();
    found
}

/// Starts a network discovery of 127.0.0.1 and waits for its result record.
pub async fn network_scan(fleet: &cspm_tests::Fleet, token: &str, ports: &str, scan_type: &str) -> Value {
    let (s, b) = fleet
        .api
        .post(
            token,
            "/api/native-scans/network-discovery",
            json!({ "target": "127.0.0.1", "ports": ports, "scan_type": scan_type }),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    wait_native(fleet, token, b["scan_id"].as_str().expect("scan id"), Duration::from_secs(120)).await
}
