//! The contract: schemathesis (PyPI, installed by `scripts/lib.sh`) fuzzes the running API against its
//! own OpenAPI document (`/api/openapi.json`) for a bounded number of examples per operation. No answer
//! may be a 5xx, and every answer must match the document (status, content type, body schema).

use std::time::Duration;

use cspm_tests::TestApi;
use serde_json::Value;

/// Examples per operation in the fuzzing phase: the whole run stays within a few minutes on two cores.
const MAX_EXAMPLES: &str = "15";
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_openapi_contract_under_fuzzing() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let (status, doc) = app.api.get(&token, "/api/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let operations: usize =
        doc["paths"].as_object().map(|p| p.values().map(|i| i.as_object().map_or(0, |o| o.len())).sum()).unwrap_or(0);
    assert!(operations > 80, "the document has {operations} operations");

    let dir = std::env::temp_dir().join("cspm-tests").join(&app.prefix).join("schemathesis");
    std::fs::create_dir_all(&dir).expect("report dir");
    let report = dir.join("report.json");
    let junit = dir.join("junit.xml");
    let mut cmd = tokio::process::Command::new("schemathesis");
    cmd.arg("run")
        .arg(app.api.url("/api/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--seed", "6"])
        // One worker: hypothesis' lambda-source cache is not thread-safe (a rare internal error).
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Random `X-API-Key` values would win over the bearer token and make every call a 401.
        .args(["--generation-with-security-parameters", "false"])
        // A session, not an API key: a key's limit (at most 600 calls a minute) would turn most of the
        // run into 429s. So the fuzzer must not end its own session.
        .args(["--exclude-path", "/api/auth/logout"])
        .args(["--exclude-path-regex", "^/api/auth/sessions/"])
        .args(["--report", "json,junit"])
        .arg("--report-json-path")
        .arg(&report)
        .arg("--report-junit-path")
        .arg(&junit)
        .arg("--no-color")
        // Its example database goes with the report, not into the source tree.
        .current_dir(&dir)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(420), cmd.output())
        .await
        .expect("schemathesis finished within 7 minutes")
        .unwrap_or_else(|e| panic!("schemathesis did not start ({e}): install it with scripts/lib.sh ensure_tools"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = std::fs::read_to_string(&report).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
    println!("{stdout}");
    assert!(out.status.success(), "schemathesis found problems (exit {:?}):\n{stdout}\n{stderr}", out.status.code());
    let summary = summary.expect("schemathesis wrote its JSON report");
    let tested = summary["operations"]["tested"].as_u64().unwrap_or(0);
    let selected = summary["operations"]["selected"].as_u64().unwrap_or(0);
    let generated = summary["test_cases"]["generated"].as_u64().unwrap_or(0);
    println!(
        "schemathesis {}: {tested} of {} operations tested, {generated} examples checked, {} failures, {} errors",
        summary["schemathesis_version"].as_str().unwrap_or("?"),
        summary["operations"]["total"],
        summary["test_cases"]["with_failures"],
        summary["errors"].as_array().map_or(0, Vec::len),
    );
    assert_eq!(tested, selected, "every selected operation was tested: {}", summary["operations"]);
    // All but the two excluded session-ending routes (schemathesis may merge a trailing-slash twin).
    assert!(tested as usize + 3 >= operations, "{tested} operations tested of {operations}");
    assert!(generated >= tested * 5, "only {generated} examples for {tested} operations");
}
