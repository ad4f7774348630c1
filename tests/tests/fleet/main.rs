//! End to end: the real binaries (API, workers, scheduler) as processes, real Redis, the Mongo-wire
//! server and real nmap. Run one at a time (see `.config/nextest.toml`).

mod backlog;
mod cloud;
mod crashes;
mod lifecycle;
mod network;
mod normalize;
mod scanners;

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
