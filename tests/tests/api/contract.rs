//! The contract: schemathesis (PyPI, installed by `scripts/lib.sh`) fuzzes the running API against its
//! own OpenAPI document (`/api/openapi.json`) for a bounded number of examples per operation. No answer
//! may be a 5xx, and every answer must match the document (status, content type, body schema).
//!
//! Before it runs, the test makes real objects through the API (cloud accounts, scans, a native scan,
//! schedules, API keys, team members, the operator's SCF catalog, a control-state override and a
//! finished compliance sync), stores what the scans' SubJobs would have found the way the worker does
//! (Prowler's AWS example for the cloud scan, a Trivy image report with CVEs for the native scan, with
//! their vulnerability occurrences) and one raw artifact of the cloud scan, and gives their ids to the
//! operations that take them (fixed path parameters in a `schemathesis.toml`), so that those operations
//! answer with the objects rather than 404 and their success bodies are checked too. A route that
//! deletes gets an object of its own, and so does a route whose effect would make another's a 409 (a
//! resolved finding is not resolved again; only a suppressed one can be unsuppressed).

use std::time::Duration;

use cspm_shared::artifacts::ArtifactOwner;
use cspm_shared::compliance::store as compliance_store;
use cspm_shared::domain::finding::NewFinding;
use cspm_shared::ids::RunId;
use cspm_shared::store::findings::{self, FindingScope};
use cspm_shared::store::occurrences;
use cspm_shared::store::subjobs::{self, SubJobDoc};
use cspm_tests::{TestApi, USER_PASSWORD};
use cspm_worker::tools::ReportKind;
use serde_json::{Value, json};

use crate::fixtures::{fixture, import, json_import, parse_report, prowler_aws_findings, sync_and_wait};

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
    let seeded = seed(&app, &token).await;
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, seeded.config(&doc)).expect("schemathesis config written");
    let report = dir.join("report.json");
    let junit = dir.join("junit.xml");
    let har = dir.join("exchanges.har");
    let mut cmd = tokio::process::Command::new("schemathesis");
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
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
        .args(["--report", "json,junit,har"])
        .arg("--report-json-path")
        .arg(&report)
        .arg("--report-junit-path")
        .arg(&junit)
        .arg("--report-har-path")
        .arg(&har)
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
    let har = std::fs::read_to_string(&har).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let reached = succeeded_operations(&doc, &har.expect("schemathesis wrote its HAR file"));
    println!("{} of {tested} operations answered a 2xx at least once", reached.len());
    // Each seeded object's routes reach it: the operations below answer with the object, not 404.
    for op in [
        "GET /api/cloud-accounts/{id}",
        "GET /api/cloud-scans/{run_id}/status",
        "GET /api/cloud-scans/{run_id}/summary",
        "GET /api/schedules/{id}",
        "GET /api/api-keys/{key_id}",
        "GET /api/teams/{team_id}",
        "GET /api/native-scans/results/{scan_id}",
        "GET /api/cspm/findings/{id}",
        "GET /api/vulnerabilities/occurrences/{id}",
        "GET /api/cloud-scans/{run_id}/artifacts/{artifact_id}",
        "GET /api/common-controls/catalog",
        "GET /api/common-controls/control/{scf_id}",
        "GET /api/compliance-engine/sync/{job_id}",
        "PUT /api/vulnerabilities/occurrences/{id}/status",
    ] {
        assert!(reached.contains(op), "{op} never answered a 2xx: {reached:?}");
    }
}

/// The ids of the objects made for the fuzzer.
struct Seeded {
    /// `(method, path template, parameter, value)`; the parameter with its location (`path.id`,
    /// `body.account_id`).
    parameters: Vec<(&'static str, &'static str, &'static str, String)>,
}

impl Seeded {
    /// A `schemathesis.toml` fixing each operation's path parameters to real objects. An operation is
    /// named by its `operationId`: schemathesis combines `include-path` and `include-method` with "or",
    /// and takes the parameters of the first entry that applies.
    fn config(&self, doc: &Value) -> String {
        // One entry per operation, with all its parameters.
        let mut by_operation: std::collections::BTreeMap<(&str, &str), Vec<String>> = Default::default();
        for (method, path, name, value) in &self.parameters {
            by_operation.entry((method, path)).or_default().push(format!("\"{name}\" = \"{value}\""));
        }
        let mut out = String::from("# Written by the contract test: the objects it made for the fuzzer.\n");
        for ((method, path), params) in by_operation {
            let id = doc["paths"][path][method.to_ascii_lowercase()]["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
            out.push_str(&format!(
                "\n# {method} {path}\n[[operations]]\ninclude-operation-id = \"{id}\"\nparameters = {{ {} }}\n",
                params.join(", ")
            ));
        }
        out
    }
}

/// Makes the objects the fuzzer is pointed at, each through the API as a client would.
async fn seed(app: &TestApi, token: &str) -> Seeded {
    let api = &app.api;
    let created = |what: &str, (status, body): (u16, Value), key: &str| -> String {
        assert!((200..300).contains(&status), "seeding {what}: {status} {body}");
        body[key].as_str().unwrap_or_else(|| panic!("seeding {what}: no `{key}` in {body}")).to_string()
    };
    let account = |n: u32| json!({ "provider": "aws", "account_id": format!("12345678901{n}"), "account_name": format!("contract {n}") });
    let kept = created("an account", api.post(token, "/api/cloud-accounts", account(1)).await, "id");
    let doomed = created("an account to delete", api.post(token, "/api/cloud-accounts", account(2)).await, "id");
    let other =
        created("an account to scan and cancel", api.post(token, "/api/cloud-accounts", account(3)).await, "id");
    // Without a worker the runs stay queued; the Prowler scan's SubJob gets its findings below.
    let scan = |account: &str, tool: &str| json!({ "account_id": account, "regions": ["us-east-1"], "tools": [tool] });
    let run = created("a scan", api.post(token, "/api/cloud-scans/initiate", scan(&kept, "prowler")).await, "run_id");
    let cancelled = created(
        "a scan to cancel",
        api.post(token, "/api/cloud-scans/initiate", scan(&other, "canary:a")).await,
        "run_id",
    );
    // The image of the Trivy report stored for it below.
    let native = created(
        "a native scan",
        api.post(token, "/api/native-scans/container-image", json!({ "image": "alpine:3.10" })).await,
        "scan_id",
    );
    let schedule = |name: &str| {
        json!({
            "name": name,
            "target": { "kind": "cloud_account", "account_id": kept, "tools": ["canary:a"] },
            "trigger": { "type": "cron", "expression": "0 3 * * *" },
        })
    };
    let sched = created("a schedule", api.post(token, "/api/schedules", schedule("contract")).await, "id");
    let doomed_sched =
        created("a schedule to delete", api.post(token, "/api/schedules", schedule("doomed")).await, "id");
    let key = |name: &str| json!({ "name": name, "scope_preset": "read_only" });
    let api_key = created("an API key", api.post(token, "/api/api-keys", key("contract")).await, "key_id");
    let doomed_key = created("an API key to revoke", api.post(token, "/api/api-keys", key("doomed")).await, "key_id");
    let team_key =
        created("an API key to revoke as admin", api.post(token, "/api/api-keys", key("admin")).await, "key_id");
    let team = app.admin_team().await.to_string();
    let member = |n: u32| json!({ "email": format!("member{n}@contract.test"), "role": "viewer", "name": format!("Member {n}"), "password": USER_PASSWORD });
    let members = format!("/api/teams/{team}/members");
    let user = created("a member", api.post(token, &members, member(1)).await, "user_id");
    let doomed_user = created("a member to remove", api.post(token, &members, member(2)).await, "user_id");
    let me = created("the caller", api.get(token, "/api/auth/me").await, "id");

    // What the Prowler SubJob found, stored as the worker stores it, and its raw output.
    let prowler = only_subjob(app, &run).await;
    let batch = tokio::task::spawn_blocking(prowler_aws_findings).await.expect("the Prowler example parsed");
    store_as_worker(app, &prowler, &batch).await;
    let (status, listed) = api.get(token, &format!("/api/cspm/findings?run_id={run}&limit=500")).await;
    assert_eq!(status, 200, "{listed}");
    let mut stored: Vec<(bool, String)> = listed["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let active = matches!(f["status"].as_str(), Some("open" | "reopened"));
            (!active, f["id"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    stored.sort();
    assert!(stored.len() >= 4 && !stored[0].0, "four findings, one of them active: {listed}");
    // One finding per lifecycle route: resolving needs an active one, unsuppressing a suppressed one.
    let mut stored = stored.into_iter().map(|(_, id)| id);
    let mut next = || stored.next().unwrap_or_default();
    let (to_resolve, to_suppress, suppressed, viewed) = (next(), next(), next(), next());
    let reason = json!({ "reason": "contract: its suppression is lifted by the fuzzer" });
    let path = format!("/api/cspm/findings/{suppressed}/suppress");
    created("a suppressed finding", api.post(token, &path, reason).await, "id");
    let out = tempfile::tempdir().expect("an output directory");
    let report = "example_output_aws.ocsf.json";
    std::fs::copy(fixture(&format!("prowler/examples/{report}")), out.path().join(report)).expect("copied");
    let owner = ArtifactOwner {
        team_id: prowler.team_id.clone(),
        run_id: prowler.run_id.clone(),
        subjob_id: prowler.id.clone(),
        tool: prowler.tool.clone(),
    };
    let uploaded = app.artifacts.upload_dir(&app.mongo, &owner, out.path()).await.expect("the artifact uploaded");
    let artifact = uploaded.first().map(|a| a.id.to_string()).expect("one artifact");

    // What the native scan's Trivy SubJob found: CVEs, hence vulnerability occurrences.
    let trivy = only_subjob(app, &native).await;
    let batch = tokio::task::spawn_blocking(|| parse_report(ReportKind::Trivy, "trivy/golden/alpine-310.json"))
        .await
        .expect("the Trivy report parsed");
    assert!(batch.iter().any(|f| !f.cves().is_empty()), "the Trivy report has CVEs");
    store_as_worker(app, &trivy, &batch).await;
    let (status, listed) = api.get(token, "/api/vulnerabilities/occurrences?source=container&limit=1").await;
    assert_eq!(status, 200, "{listed}");
    let occurrence = listed["occurrences"][0]["id"].as_str().unwrap_or_else(|| panic!("no occurrence: {listed}"));
    let occurrence = occurrence.to_string();

    // The operator's SCF catalog, a sync of the team's findings, and a control they are evidence for
    // (one reached through a crosswalk if there is one), with an override to lift.
    let (status, catalog) = import(app, token, json_import()).await;
    assert_eq!(status, 201, "seeding the SCF catalog: {catalog}");
    let job = sync_and_wait(app, token).await;
    assert_eq!(job["status"], json!("completed"), "seeding a sync: {job}");
    let sync_job = job["job_id"].as_str().unwrap_or_else(|| panic!("no job id: {job}")).to_string();
    let states = compliance_store::team_states(&app.mongo, &app.admin_team().await).await.expect("control states");
    let control = states
        .values()
        .filter(|c| c.evidence_count > 0)
        .min_by_key(|c| (!c.paths.contains_key("crosswalk"), c.scf_id.clone()))
        .map(|c| c.scf_id.clone())
        .unwrap_or_else(|| panic!("no control has the team's findings as evidence: {states:?}"));
    let state = json!({ "state": "implemented", "justification": "contract: lifted by the fuzzer" });
    let path = format!("/api/common-controls/control/{control}/state");
    created("a control-state override", api.put(token, &path, state).await, "scf_id");

    let mut p = Vec::new();
    for m in ["GET", "PUT"] {
        p.push((m, "/api/cloud-accounts/{id}", "path.id", kept.clone()));
    }
    p.push(("DELETE", "/api/cloud-accounts/{id}", "path.id", doomed));
    p.push(("POST", "/api/cloud-accounts/{id}/scan", "path.id", kept.clone()));
    for path in [
        "/api/cloud-scans/{run_id}/status",
        "/api/cloud-scans/{run_id}/summary",
        "/api/cloud-scans/{run_id}/ocsf",
        "/api/cloud-scans/{run_id}/artifacts",
    ] {
        p.push(("GET", path, "path.run_id", run.clone()));
    }
    p.push(("DELETE", "/api/cloud-scans/{run_id}", "path.run_id", cancelled));
    // A scan request names an account in its body: the one scanning already (a 200 naming its run).
    for path in ["/api/cloud-scans", "/api/cloud-scans/", "/api/cloud-scans/initiate"] {
        p.push(("POST", path, "body.account_id", kept.clone()));
    }
    p.push(("GET", "/api/native-scans/results/{scan_id}", "path.scan_id", native));
    for (m, path) in [
        ("GET", "/api/schedules/{id}"),
        ("PUT", "/api/schedules/{id}"),
        ("POST", "/api/schedules/{id}/pause"),
        ("POST", "/api/schedules/{id}/resume"),
        ("GET", "/api/schedules/{id}/history"),
    ] {
        p.push((m, path, "path.id", sched.clone()));
    }
    p.push(("DELETE", "/api/schedules/{id}", "path.id", doomed_sched));
    for (m, path) in [
        ("GET", "/api/api-keys/{key_id}"),
        ("PATCH", "/api/api-keys/{key_id}"),
        ("POST", "/api/api-keys/{key_id}/rotate"),
    ] {
        p.push((m, path, "path.key_id", api_key.clone()));
    }
    p.push(("DELETE", "/api/api-keys/{key_id}", "path.key_id", doomed_key));
    p.push(("DELETE", "/api/api-keys/admin/{key_id}", "path.key_id", team_key));
    for (m, path) in [
        ("GET", "/api/teams/{team_id}"),
        ("POST", "/api/teams/{team_id}/switch"),
        ("GET", "/api/teams/{team_id}/members"),
        ("POST", "/api/teams/{team_id}/members"),
        ("PUT", "/api/teams/{team_id}/members/{user_id}"),
        ("DELETE", "/api/teams/{team_id}/members/{user_id}"),
        ("POST", "/api/teams/{team_id}/members/{user_id}/revoke-sessions"),
    ] {
        p.push((m, path, "path.team_id", team.clone()));
    }
    p.push(("PUT", "/api/teams/{team_id}/members/{user_id}", "path.user_id", user.clone()));
    p.push(("POST", "/api/teams/{team_id}/members/{user_id}/revoke-sessions", "path.user_id", user));
    p.push(("DELETE", "/api/teams/{team_id}/members/{user_id}", "path.user_id", doomed_user));
    p.push(("GET", "/api/audit-trail/user/{user_id}", "path.user_id", me));
    p.push(("GET", "/api/cspm/findings/{id}", "path.id", viewed));
    p.push(("POST", "/api/cspm/findings/{id}/resolve", "path.id", to_resolve));
    p.push(("POST", "/api/cspm/findings/{id}/suppress", "path.id", to_suppress));
    p.push(("POST", "/api/cspm/findings/{id}/unsuppress", "path.id", suppressed));
    let decide = "/api/vulnerabilities/occurrences/{id}/status";
    p.push(("GET", "/api/vulnerabilities/occurrences/{id}", "path.id", occurrence.clone()));
    p.push(("PUT", decide, "path.id", occurrence));
    let download = "/api/cloud-scans/{run_id}/artifacts/{artifact_id}";
    p.push(("GET", download, "path.run_id", run.clone()));
    p.push(("GET", download, "path.artifact_id", artifact));
    for (m, path) in [
        ("GET", "/api/common-controls/control/{scf_id}"),
        ("PUT", "/api/common-controls/control/{scf_id}/state"),
        ("DELETE", "/api/common-controls/control/{scf_id}/state"),
    ] {
        p.push((m, path, "path.scf_id", control.clone()));
    }
    p.push(("GET", "/api/compliance-engine/sync/{job_id}", "path.job_id", sync_job));
    Seeded { parameters: p }
}

/// The one SubJob of a run.
async fn only_subjob(app: &TestApi, run: &str) -> SubJobDoc {
    let id: RunId = run.parse().unwrap_or_else(|_| panic!("`{run}` is a run id"));
    let mut jobs = subjobs::list_for_run(&app.mongo, &id).await.expect("the run's SubJobs");
    assert_eq!(jobs.len(), 1, "the run {run} has one SubJob");
    jobs.remove(0)
}

/// Stores what a SubJob found as the worker's store stage does: the findings under the SubJob's scope,
/// then the vulnerability occurrences they name.
async fn store_as_worker(app: &TestApi, job: &SubJobDoc, batch: &[NewFinding]) {
    let scope = FindingScope::of_subjob(job);
    findings::upsert_batch(&app.mongo, &scope, batch).await.expect("findings stored");
    occurrences::sync_batch(&app.mongo, &scope, batch).await.expect("occurrences stored");
}

/// The operations (`METHOD /template`) that answered a 2xx at least once in the recorded exchanges.
fn succeeded_operations(doc: &Value, har: &Value) -> std::collections::BTreeSet<String> {
    let templates: Vec<(&str, Vec<&str>)> = doc["paths"]
        .as_object()
        .map(|p| p.keys().map(|k| (k.as_str(), k.split('/').collect())).collect())
        .unwrap_or_default();
    let mut out = std::collections::BTreeSet::new();
    for entry in har["log"]["entries"].as_array().into_iter().flatten() {
        let status = entry["response"]["status"].as_u64().unwrap_or(0);
        if !(200..300).contains(&status) {
            continue;
        }
        let method = entry["request"]["method"].as_str().unwrap_or_default();
        let url = entry["request"]["url"].as_str().unwrap_or_default();
        let path = url.split("://").nth(1).and_then(|r| r.find('/').map(|i| &r[i..])).unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        // The template that matches with the most literal segments (`/api/api-keys/scopes` before
        // `/api/api-keys/{key_id}`).
        let best = templates
            .iter()
            .filter(|(_, t)| {
                t.len() == segments.len()
                    && t.iter().zip(&segments).all(|(a, b)| a == b || (a.starts_with('{') && !b.is_empty()))
            })
            .max_by_key(|(_, t)| t.iter().filter(|a| !a.starts_with('{')).count());
        // Only documented operations count (the fuzzer also tries methods a path does not have).
        if let Some((template, _)) = best
            && doc["paths"][*template][method.to_ascii_lowercase()].is_object()
        {
            out.insert(format!("{method} {template}"));
        }
    }
    out
}
