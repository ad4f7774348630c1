//! The API, in-process, against the real Redis and Mongo-wire servers: authentication, validation,
//! problem details, team isolation, roles, race-free scan creation, dependency outages, and the
//! artifact store the API serves raw scanner output from.

mod access;
mod accounts;
mod api_keys;
mod artifact_store;
mod artifacts;
mod audit;
mod auth;
mod compliance;
mod contract;
mod docs;
mod findings;
mod fixtures;
mod hygiene;
mod identity;
mod kev;
mod outages;
mod scans;
mod schedules;

use serde_json::Value;

/// Asserts the one error shape: problem details with the given status and a `detail` containing `needle`.
pub fn assert_problem(status: u16, body: &Value, expected: u16, needle: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"].as_u64(), Some(u64::from(expected)), "{body}");
    assert!(body["title"].is_string(), "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.to_lowercase().contains(&needle.to_lowercase()), "`{needle}` not in `{detail}`");
}
