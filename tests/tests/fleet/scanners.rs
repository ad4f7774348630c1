//! Native scans through the whole fleet with real scanners: Trivy on a directory the test writes (offline:
//! misconfigurations and secrets), rescanned after a fix; Wapiti against a deliberately vulnerable web
//! application the test starts on 127.0.0.1.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use cspm_tests::{Fleet, KillOnDrop};
use serde_json::{Value, json};

async fn findings(fleet: &Fleet, token: &str, query: &str) -> Vec<Value> {
    let (s, b) = fleet.api.get(token, &format!("/api/cspm/findings?limit=500&{query}")).await;
    assert_eq!(s, 200, "{b}");
    b["findings"].as_array().cloned().unwrap_or_default()
}

/// A secret Trivy's GitHub rule recognises (`ghp_` + 36 characters), not one of its allow-listed examples.
const FAKE_TOKEN: &str = "ghp_Zq7Kd2Lm9Xc4Vb8Np1Rt6Ys3Hw5Ju0Ae2GfQ";

fn write_repo(dir: &Path, with_user: bool) {
    let mut dockerfile = String::from("FROM alpine:3.19\nRUN apk add --no-cache curl\n");
    if with_user {
        dockerfile.push_str("USER 10001\nHEALTHCHECK CMD curl -f http://localhost/ || exit 1\n");
    }
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    std::fs::write(dir.join("deploy.env"), format!("GITHUB_TOKEN={FAKE_TOKEN}\n")).expect("secret file");
}

#[tokio::test]
async fn a_filesystem_scan_finds_misconfigurations_and_secrets_and_a_fix_resolves_them() {
    let root = tempfile::tempdir().expect("root");
    let repo = root.path().join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    write_repo(&repo, false);
    let cache = root.path().join("trivy-cache");
    let roots = root.path().display().to_string();
    let mut fleet = Fleet::start(&[("CSPM_SCAN_PATH_ROOTS", &roots)]).await;
    fleet.add_worker(&[("CSPM_TRIVY_OFFLINE", "true"), ("CSPM_TRIVY_CACHE_DIR", cache.to_str().expect("utf-8"))]);
    let token = fleet.admin().await;

    let (s, b) = fleet.api.post(&token, "/api/native-scans/filesystem", json!({ "path": "/etc" })).await;
    assert_eq!(s, 422, "a path outside the roots is refused: {b}");

    let path = repo.display().to_string();
    let scan = |expect: &'static str| {
        let (fleet, token, path) = (&fleet, token.clone(), path.clone());
        async move {
            let (s, b) = fleet
                .api
                .post(
                    &token,
                    "/api/native-scans/filesystem",
                    json!({ "path": path, "scanners": ["secret", "misconfig"] }),
                )
                .await;
            assert_eq!(s, 202, "{b}");
            assert_eq!(b["tool_type"], json!("trivy"));
            let result =
                crate::wait_native(fleet, &token, b["scan_id"].as_str().expect("id"), Duration::from_secs(180)).await;
            assert_eq!(result["status"], json!(expect), "{result}");
            result
        }
    };
    let first = scan("completed").await;
    let all = findings(&fleet, &token, "tool=trivy").await;
    let secret = all.iter().find(|f| f["class"] == json!("detection")).expect("the secret is found");
    assert!(secret["location"]["path"].as_str().unwrap_or("").ends_with("deploy.env"), "{secret}");
    let user_check: Vec<&Value> = all
        .iter()
        .filter(|f| f["class"] == json!("compliance") && f["status"] == json!("open"))
        .filter(|f| f["title"].as_str().unwrap_or("").to_lowercase().contains("user"))
        .collect();
    assert_eq!(user_check.len(), 1, "the missing USER is reported: {all:#?}");
    let text = serde_json::to_string(&all).expect("json") + &first.to_string();
    assert!(!text.contains(FAKE_TOKEN), "the secret itself is never stored or shown");
    let events = fleet.api.ocsf_events(&token, first["scan_id"].as_str().expect("id")).await;
    assert!(!events.is_empty());
    cspm_tests::assert_valid_ocsf(&events);
    assert!(!events.iter().any(|e| e.to_string().contains(FAKE_TOKEN)));

    // Fix the Dockerfile: its USER finding is resolved by the rescan, the secret stays open.
    write_repo(&repo, true);
    let second = scan("completed").await;
    assert!(second["summary"]["resolved_findings"].as_i64().unwrap_or(0) >= 1, "{second}");
    let id = user_check[0]["id"].as_str().expect("id");
    let (_, after) = fleet.api.get(&token, &format!("/api/cspm/findings/{id}")).await;
    assert_eq!(after["status"], json!("resolved"), "{after}");
    assert_eq!(after["resolution"]["run_id"], second["scan_id"], "the closing run is recorded");
    let secret_now = findings(&fleet, &token, "tool=trivy&class=detection").await;
    assert_eq!(secret_now.len(), 1);
    assert_eq!(secret_now[0]["status"], json!("open"));
}

#[tokio::test]
async fn a_web_scan_finds_the_reflected_xss_of_a_vulnerable_application() {
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/../worker/testdata/wapiti/vulnerable_app.py");
    let mut child = std::process::Command::new("python3")
        .arg(app)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the vulnerable app starts");
    let stdout = child.stdout.take().expect("stdout");
    let _app = KillOnDrop(child);
    let mut first_line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut first_line).expect("the app prints its port");
    let port: u16 = first_line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("PORT <n>");

    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let (s, b) = fleet
        .api
        .post(
            &token,
            "/api/native-scans/web-vulnerability",
            json!({ "target_url": format!("http://127.0.0.1:{port}/"), "scan_type": "standard" }),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["tool_type"], json!("wapiti"));
    let result = crate::wait_native(&fleet, &token, b["scan_id"].as_str().expect("id"), Duration::from_secs(300)).await;
    assert_eq!(result["status"], json!("completed"), "{result}");

    let vulns = findings(&fleet, &token, "tool=wapiti&class=vulnerability").await;
    let xss = vulns
        .iter()
        .find(|f| {
            f["vulnerabilities"][0]["id"]["id"] == json!("CWE-79")
                && f["endpoint"]["url"].to_string().contains("/search")
        })
        .unwrap_or_else(|| panic!("the reflected XSS on /search: {vulns:#?}"));
    assert_eq!(xss["status"], json!("open"));
    let events = fleet.api.ocsf_events(&token, result["scan_id"].as_str().expect("id")).await;
    cspm_tests::assert_valid_ocsf(&events);
    assert!(events.iter().any(|e| e["class_uid"] == json!(2002)));

    let (s, b) = fleet
        .api
        .post(&token, "/api/native-scans/web-vulnerability", json!({ "target_url": "http://169.254.169.254/latest/" }))
        .await;
    assert_eq!(s, 422, "the metadata address is refused: {b}");
    let (s, b) = fleet
        .api
        .post(&token, "/api/native-scans/web-vulnerability", json!({ "target_url": "file:///etc/passwd" }))
        .await;
    assert_eq!(s, 422, "{b}");
}
