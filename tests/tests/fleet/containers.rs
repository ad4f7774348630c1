//! Scanners in sibling containers (the Docker runner) with the real Docker engine and the locally built
//! images (`scripts/images.sh`): a network scan through nmap's container, the worker itself in a
//! container (Docker-out-of-Docker, output through the host directory), and a worker killed mid-scan
//! leaving no container behind; a Trivy image scan, in Trivy's container, of an image that exists only
//! in the host's local image store (exported by the worker, never uploaded as raw output).

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cspm_shared::testing::{LocalImage, fake_github_token};
use cspm_tests::{ContainerWorker, Fleet, fleet_containers, wait_until, with};
use serde_json::json;

use crate::network_scan;

const NMAP_IMAGE: &str = "cspm-nmap:local";

/// The overrides that put a worker's scanners in containers. Host networking: nmap must reach the
/// listeners this test opens on the host's loopback.
fn docker_mode(output: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CSPM_SCANNER_RUNNER", "docker".into()),
        ("CSPM_DOCKER_IMAGE_NMAP", NMAP_IMAGE.into()),
        ("CSPM_DOCKER_PULL", "never".into()),
        ("CSPM_DOCKER_NETWORK", "host".into()),
        ("CSPM_WORKER_OUTPUT_DIR", output.into()),
        ("PROWLER_HOST_OUTPUT_DIR", output.into()),
    ]
}

/// A fleet whose raw outputs go to a fresh S3 bucket, with one worker in Docker mode (plus `extra`
/// settings) writing to the returned output directory.
async fn docker_fleet(extra: &[(&'static str, &str)]) -> (Fleet, PathBuf) {
    let bucket = format!("cspm-{}", cspm_tests::unique_prefix());
    cspm_tests::create_bucket(&bucket).await;
    let s3 = cspm_tests::s3_overrides(&bucket);
    let s3: Vec<(&str, &str)> = s3.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut fleet = Fleet::start(&s3).await;
    let out = output_dir(&fleet, "docker-output");
    let mut overrides = docker_mode(out.to_str().expect("utf-8"));
    overrides.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fleet.add_worker(&overrides);
    (fleet, out)
}

fn output_dir(fleet: &Fleet, name: &str) -> PathBuf {
    let dir = fleet.log_dir.join(name);
    std::fs::create_dir_all(&dir).expect("output dir");
    dir
}

fn listeners(n: usize) -> (Vec<TcpListener>, String) {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("listener")).collect();
    let ports = ls.iter().map(|l| l.local_addr().expect("addr").port().to_string()).collect::<Vec<_>>().join(",");
    (ls, ports)
}

/// A listener that never greets and hangs up on whatever it is sent: service detection waits for a
/// banner first (a few seconds), then gets through its probes quickly.
fn quiet_listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = l.local_addr().expect("addr").port().to_string();
    let accepting = l.try_clone().expect("clone");
    std::thread::spawn(move || {
        for conn in accepting.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = std::io::Read::read(&mut conn, &mut [0u8; 1024]);
            });
        }
    });
    (l, port)
}

fn empty_dir(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// Downloads every artifact of a run through the API: (file name, decompressed bytes).
async fn artifacts_of(fleet: &Fleet, token: &str, run: &str) -> Vec<(String, Vec<u8>)> {
    let (s, list) = fleet.api.get(token, &format!("/api/cloud-scans/{run}/artifacts")).await;
    assert_eq!(s, 200, "{list}");
    let items = list["artifacts"].as_array().cloned().expect("an artifact list");
    let mut out = Vec::new();
    for a in items {
        let id = a["id"].as_str().expect("artifact id");
        let resp = fleet
            .api
            .http
            .get(fleet.api.url(&format!("/api/cloud-scans/{run}/artifacts/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("download");
        assert_eq!(resp.status().as_u16(), 200);
        let gz = resp.bytes().await.expect("body");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).expect("gzip");
        out.push((a["file_name"].as_str().unwrap_or_default().to_string(), raw));
    }
    out
}

#[tokio::test]
async fn a_network_scan_runs_nmap_in_a_sibling_container_and_keeps_its_output_in_s3() {
    let (fleet, out) = docker_fleet(&[]).await;
    let token = fleet.admin().await;
    let (ls, ports) = listeners(2);

    let result = network_scan(&fleet, &token, &ports, "port_scan").await;
    assert_eq!(result["status"], json!("completed"), "{result}");
    assert_eq!(result["findings_count"], json!(2), "{result}");
    assert!(fleet_containers(&format!("{}_", fleet.prefix)).is_empty(), "a scanner container was left behind");
    assert!(empty_dir(&out), "the output directory was left behind");
    // The raw nmap XML, compressed in the bucket, comes back byte for byte through the API.
    let run = result["scan_id"].as_str().expect("scan id");
    let files = artifacts_of(&fleet, &token, run).await;
    assert_eq!(files.len(), 1, "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    let xml = String::from_utf8_lossy(&files[0].1);
    assert!(files[0].0.ends_with(".xml") && xml.contains("<nmaprun") && xml.contains("</nmaprun>"), "{}", files[0].0);
    let log = fleet.workers[0].log_text();
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
    drop(ls);
}

#[tokio::test]
async fn a_worker_in_a_container_runs_scanners_beside_it_through_the_host_socket() {
    let fleet = Fleet::start(&[]).await;
    let out = output_dir(&fleet, "dood-output");
    let dir = out.to_str().expect("utf-8").to_string();
    let env = with(
        fleet.env.clone(),
        &[
            ("CSPM_WORKER_NAME", "dood"),
            ("CSPM_WORKER_BIND", "127.0.0.1:0"),
            ("CSPM_DOCKER_IMAGE_NMAP", NMAP_IMAGE),
            ("CSPM_DOCKER_PULL", "never"),
            ("CSPM_DOCKER_NETWORK", "host"),
        ],
    );
    let worker = ContainerWorker::start(&format!("{}-dood-worker", fleet.prefix), &env, &out);
    let token = fleet.admin().await;
    let (ls, ports) = listeners(2);

    let result = network_scan(&fleet, &token, &ports, "port_scan").await;
    assert_eq!(result["status"], json!("completed"), "{result}\n{}", worker.logs());
    assert_eq!(result["findings_count"], json!(2), "{result}");
    let found = crate::resource_uids(&result);
    let mut expected: Vec<String> = ports.split(',').map(|p| format!("127.0.0.1:{p}/tcp")).collect();
    expected.sort();
    assert_eq!(found, expected);
    // The scanner wrote under the host directory, the worker read it through its mount, then removed it.
    assert!(fleet_containers(&format!("{}_", fleet.prefix)).is_empty(), "a scanner container was left behind");
    assert!(
        empty_dir(&out),
        "the per-job directories were not removed: {:?}",
        std::fs::read_dir(&out).map(|d| d.count())
    );
    assert!(worker.logs().contains("sub-job ended"), "{}", worker.logs());
    // Written by the containerised worker to the shared artifact directory, served by the API.
    let files = artifacts_of(&fleet, &token, result["scan_id"].as_str().expect("scan id")).await;
    assert_eq!(files.len(), 1);
    assert!(String::from_utf8_lossy(&files[0].1).contains("</nmaprun>"));
    drop((ls, dir));
}

#[tokio::test]
async fn a_worker_killed_mid_scan_leaves_no_container_after_recovery() {
    let mut fleet = Fleet::start(&[]).await;
    let out = output_dir(&fleet, "docker-output");
    let overrides = docker_mode(out.to_str().expect("utf-8"));
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fleet.add_worker(&overrides);
    let token = fleet.admin().await;
    // Service detection waits a few seconds for a banner that never comes: time to kill the worker.
    let (ls, ports) = quiet_listener();
    let (s, b) = fleet
        .api
        .post(
            &token,
            "/api/native-scans/network-discovery",
            json!({ "target": "127.0.0.1", "ports": ports, "scan_type": "service_detection" }),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let scan_id = b["scan_id"].as_str().expect("scan id").to_string();
    let label = format!("{}_", fleet.prefix);
    wait_until(Duration::from_secs(60), "the scanner container to start", || async {
        (!fleet_containers(&label).is_empty()).then_some(())
    })
    .await;

    // The worker dies; its scanner container lives on without it.
    fleet.workers[0].sigkill();
    assert_eq!(fleet_containers(&label).len(), 1, "the scanner container should outlive its worker");
    let restarted = Instant::now();
    fleet.add_worker(&overrides);

    let result = crate::wait_native(&fleet, &token, &scan_id, Duration::from_secs(240)).await;
    assert_eq!(result["status"], json!("completed"), "{result}");
    assert_eq!(result["findings_count"], json!(1), "{result}");
    assert!(fleet_containers(&label).is_empty(), "an orphaned scanner container was left behind");
    let log = fleet.workers[1].log_text();
    assert!(
        log.contains("replacing the container of an earlier attempt")
            || log.contains("removing the container of a worker that is gone"),
        "the new worker never met the old container: {log}"
    );
    eprintln!("recovered in {:?}", restarted.elapsed());
    drop(ls);
}

const TRIVY_IMAGE: &str = "cspm-trivy:local";

#[tokio::test]
async fn an_image_scan_of_a_local_only_image_runs_trivy_in_its_container_on_the_workers_export() {
    let (fleet, out) = docker_fleet(&[
        ("CSPM_DOCKER_IMAGE_TRIVY", TRIVY_IMAGE),
        ("CSPM_DOCKER_NETWORK", "none"),
        // No vulnerability database here: the secret scanner needs none.
        ("CSPM_TRIVY_OFFLINE", "true"),
        ("CSPM_DOCKER_LOCAL_IMAGES", "true"),
        ("CSPM_DOCKER_LOCAL_IMAGE_MAX_MB", "1024"),
    ])
    .await;
    let token = fleet.admin().await;
    let secret = fake_github_token();
    let image = LocalImage::build(&[("deploy.env", &format!("REGION=eu-west-1\nGITHUB_TOKEN={secret}\n"))]);

    let (s, b) = fleet
        .api
        .post(&token, "/api/native-scans/container-image", json!({ "image": image.0, "scanners": ["secret"] }))
        .await;
    assert_eq!(s, 202, "{b}");
    let run = b["scan_id"].as_str().expect("scan id").to_string();
    let result = crate::wait_native(&fleet, &token, &run, Duration::from_secs(300)).await;
    assert_eq!(result["status"], json!("completed"), "{result}\n{}", fleet.workers[0].log_text());
    // The finding names the image the scan asked for, as a scan from a registry would.
    assert_eq!(crate::resource_uids(&result), vec![format!("{}:/app/deploy.env", image.0)], "{result}");
    assert!(!result.to_string().contains(&secret), "the secret itself is never stored or shown");
    assert!(!result.to_string().contains(".cspm-image.tar"), "the export's path leaked: {result}");
    assert!(fleet_containers(&format!("{}_", fleet.prefix)).is_empty(), "a scanner container was left behind");
    assert!(empty_dir(&out), "the output directory (and the image export) was left behind");
    // The raw output is Trivy's report, not the image.
    let files = artifacts_of(&fleet, &token, &run).await;
    let names: Vec<&String> = files.iter().map(|f| &f.0).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with("trivy.json"), "{names:?}");
    assert!(String::from_utf8_lossy(&files[0].1).contains("github-pat"));
    let log = fleet.workers[0].log_text();
    assert!(log.contains("image exported from the local image store"), "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");

    // An image that is neither local nor reachable goes to its registry, and fails with Trivy's error.
    let absent = "registry.invalid/cspm/absent:1";
    let (s, b) = fleet
        .api
        .post(&token, "/api/native-scans/container-image", json!({ "image": absent, "scanners": ["secret"] }))
        .await;
    assert_eq!(s, 202, "{b}");
    let failed =
        crate::wait_native(&fleet, &token, b["scan_id"].as_str().expect("scan id"), Duration::from_secs(300)).await;
    assert_eq!(failed["status"], json!("failed"), "{failed}");
    let why = failed["summary"]["warnings"][0].as_str().unwrap_or_default();
    assert!(why.contains("trivy exited with") && why.contains(absent) && why.contains("remote error"), "{failed}");
    assert!(fleet_containers(&format!("{}_", fleet.prefix)).is_empty(), "a scanner container was left behind");
}
