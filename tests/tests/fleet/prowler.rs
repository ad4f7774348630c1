//! A real cloud scan: real Prowler, in its locally built container (`scripts/images.sh prowler`),
//! against moto (an AWS emulator from PyPI) on loopback, seeded with a public bucket, a console user
//! without MFA and a security group open to the world. The account is registered through the API with
//! an endpoint override; the scan's findings are ingested, deduplicated on a rescan and attached to the
//! run, and Prowler's raw output is in the artifact store. Every secret the scan handled — the cloud
//! credentials, the administrator's password, the session token, an API key — is then looked for in
//! every log line of every process: none may appear.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cspm_tests::{Fleet, KillOnDrop, fleet_containers, free_port, wait_until};
use serde_json::{Value, json};

const PROWLER_IMAGE: &str = "cspm-prowler:local";

fn prowler_image_present() -> bool {
    Command::new("docker")
        .args(["image", "inspect", PROWLER_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// moto on a port of its own (the S3 test server is shared by other tests), with AWS managed policies
/// loaded (Prowler's IAM checks read them).
async fn start_moto() -> (KillOnDrop, String) {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto starts (pip install 'moto[server]')");
    let endpoint = format!("http://127.0.0.1:{port}");
    cspm_shared::artifacts::install_tls_provider();
    let probe = reqwest::Client::new();
    wait_until(Duration::from_secs(60), "moto to answer", || async {
        probe.get(format!("{endpoint}/moto-api/")).send().await.ok().map(|_| ())
    })
    .await;
    (KillOnDrop(child), endpoint)
}

fn seed(endpoint: &str, prefix: &str) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/seed_moto.py");
    let out = Command::new("python3").arg(script).args([endpoint, prefix]).output().expect("seeding runs");
    assert!(out.status.success(), "seeding failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("seeding prints JSON")
}

/// Starts a scan of the account and waits for its run to finish: (run id, status document).
async fn scan(fleet: &Fleet, token: &str, account_id: &str) -> (String, Value) {
    let (s, b) =
        fleet.api.post(token, &format!("/api/cloud-accounts/{account_id}/scan"), json!({ "scan_type": "full" })).await;
    assert_eq!(s, 202, "{b}");
    let run = b["run_id"].as_str().expect("run id").to_string();
    let status = fleet.api.wait_finished(token, &run, Duration::from_secs(900)).await;
    (run, status)
}

/// The worker's "sub-job ended" line for a SubJob: its fields.
fn ended_line(log: &str) -> Option<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|j| j["message"] == json!("sub-job ended") && j["status"] == json!("completed"))
}

#[tokio::test]
async fn prowler_in_its_container_scans_an_emulated_aws_account_end_to_end() {
    assert!(prowler_image_present(), "{PROWLER_IMAGE} is missing: build it with scripts/images.sh prowler");
    let (_moto, endpoint) = start_moto().await;
    let mut fleet = Fleet::start(&[]).await;
    let made = seed(&endpoint, &fleet.prefix);
    let out = fleet.log_dir.join("docker-output");
    std::fs::create_dir_all(&out).expect("output dir");
    let out = out.to_str().expect("utf-8").to_string();
    fleet.add_worker(&[
        ("CSPM_SCANNER_RUNNER", "docker"),
        ("CSPM_DOCKER_IMAGE_PROWLER", PROWLER_IMAGE),
        ("CSPM_DOCKER_PULL", "never"),
        ("CSPM_DOCKER_NETWORK", "host"),
        ("CSPM_WORKER_OUTPUT_DIR", &out),
        ("PROWLER_HOST_OUTPUT_DIR", &out),
    ]);
    let token = fleet.admin().await;
    // Distinctive secrets, to look for in the logs afterwards (moto accepts any key pair).
    let access_key = format!("AKIA{}", fleet.prefix.to_ascii_uppercase());
    let secret_key = format!("Secret/{}/k3y+with+symbols", fleet.prefix);

    let (s, account) = fleet
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({
                "provider": "aws",
                "account_id": "123456789012",
                "account_name": "moto",
                "regions": ["us-east-1"],
                "credentials": { "access_key_id": access_key, "secret_access_key": secret_key },
                "endpoint_url": endpoint,
                "services": ["s3", "iam", "ec2"],
                // moto ships ~1,300 public snapshots: these two checks would read them all.
                "excluded_checks": ["ec2_ebs_snapshots_encrypted", "ec2_ebs_public_snapshot"],
            }),
        )
        .await;
    assert_eq!(s, 201, "{account}");
    let account_id = account["id"].as_str().expect("account id").to_string();

    // An API key reads the run as CI would.
    let (s, key) =
        fleet.api.post(&token, "/api/api-keys", json!({ "name": "ci", "scope_preset": "ci_cd_basic" })).await;
    assert_eq!(s, 201, "{key}");
    let api_key = key["api_key"].as_str().expect("the key, shown once").to_string();

    let started = Instant::now();
    let (run, status) = scan(&fleet, &token, &account_id).await;
    let resp = fleet
        .api
        .http
        .get(fleet.api.url(&format!("/api/cloud-scans/{run}/status")))
        .header("x-api-key", &api_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let wall = started.elapsed();
    assert_eq!(status["status"], json!("completed"), "{status}");

    let (s, summary) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/summary")).await;
    assert_eq!(s, 200, "{summary}");
    let (s, found) = fleet.api.get(&token, "/api/cspm/findings?tool=prowler&limit=500").await;
    assert_eq!(s, 200, "{found}");
    let items = found["findings"].as_array().cloned().unwrap_or_default();
    assert!(!items.is_empty(), "no finding was ingested: {summary}");
    let text = Value::Array(items.clone()).to_string();
    for what in ["bucket", "user", "security_group"] {
        let name = made[what].as_str().expect("seeded name");
        assert!(text.contains(name), "no finding names the seeded {what} {name}");
    }
    // Failing checks on the seeded resources (Prowler's own check names).
    let failing = |needle: &str, resource: &str| {
        items.iter().any(|f| {
            f["rule_id"].as_str().unwrap_or_default().contains(needle)
                && f.to_string().contains(resource)
                && f["result"] == json!("fail")
        })
    };
    assert!(failing("s3_bucket_public", made["bucket"].as_str().unwrap_or("-")), "no public-bucket failure");
    assert!(failing("mfa", made["user"].as_str().unwrap_or("-")), "no missing-MFA failure");
    assert!(failing("securitygroup", made["security_group"].as_str().unwrap_or("-")), "no open-SG failure");
    let first_total = found["total"].clone();

    // The raw json-ocsf output is kept.
    let (s, arts) = fleet.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts")).await;
    assert_eq!(s, 200, "{arts}");
    assert!(
        arts["artifacts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["file_name"].as_str().is_some_and(|n| n.ends_with(".ocsf.json")))),
        "{arts}"
    );
    assert!(fleet_containers(&format!("{}_", fleet.prefix)).is_empty(), "the Prowler container was left behind");

    // A rescan finds the same things: nothing new, nothing duplicated.
    let (run2, status2) = scan(&fleet, &token, &account_id).await;
    assert_eq!(status2["status"], json!("completed"), "{status2}");
    let (_, summary2) = fleet.api.get(&token, &format!("/api/cloud-scans/{run2}/summary")).await;
    let (_, found2) = fleet.api.get(&token, "/api/cspm/findings?tool=prowler&limit=500").await;
    assert_eq!(found2["total"], first_total, "a rescan duplicated findings");
    assert_eq!(summary2["new_findings"], json!(0), "{summary2}");
    assert!(summary2["total_findings"].as_i64().unwrap_or(0) > 0, "{summary2}");

    // Where the time went, for the notes.
    let log = fleet.workers[0].log_text();
    let ended = ended_line(&log).expect("a completed sub-job line");
    let container_start = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|j| j["message"] == json!("scanner container started"))
        .map(|j| j["start_seconds"].clone());
    // No secret in any log line of any process (API, scheduler, workers, and the scanner output the
    // worker relays).
    let secrets = [
        ("the AWS access key", access_key.as_str()),
        ("the AWS secret key", secret_key.as_str()),
        ("the admin password", cspm_tests::ADMIN_PASSWORD),
        ("the session token", token.as_str()),
        ("the API key", api_key.as_str()),
    ];
    let mut lines = 0;
    let mut saw_the_scan = false;
    for entry in std::fs::read_dir(&fleet.log_dir).expect("log dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).expect("log");
            lines += text.lines().count();
            saw_the_scan |= text.contains("sub-job ended");
            for (what, secret) in secrets {
                assert!(!text.contains(secret), "{what} appears in {}", path.display());
            }
            // Nor their most telling parts (a token's signature, a key's random part).
            let signature = token.rsplit('.').next().unwrap_or(&token);
            assert!(!text.contains(signature), "a token signature appears in {}", path.display());
            assert!(!text.contains(&api_key[4..]), "the API key's secret part appears in {}", path.display());
        }
    }
    assert!(lines > 10 && saw_the_scan, "the logs that were searched hold the scan ({lines} lines)");
    eprintln!(
        "prowler e2e: wall {:.1}s; container start {container_start:?}s; scan {}s; parse+store {}s; findings {}",
        wall.as_secs_f64(),
        ended["scan_seconds"],
        ended["store_seconds"],
        ended["findings"],
    );
}
