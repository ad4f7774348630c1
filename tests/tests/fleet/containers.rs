//! Scanners in sibling containers (the Docker runner) with the real Docker engine and the locally built
//! images (`scripts/images.sh`): a network scan through nmap's container, the worker itself in a
//! container (Docker-out-of-Docker, output through the host directory), and a worker killed mid-scan
//! leaving no container behind.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

#[tokio::test]
async fn a_network_scan_runs_nmap_in_a_sibling_container() {
    let mut fleet = Fleet::start(&[]).await;
    let out = output_dir(&fleet, "docker-output");
    let overrides = docker_mode(out.to_str().expect("utf-8"));
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fleet.add_worker(&overrides);
    let token = fleet.admin().await;
    let (ls, ports) = listeners(2);

    let result = network_scan(&fleet, &token, &ports, "port_scan").await;
    assert_eq!(result["status"], json!("completed"), "{result}");
    assert_eq!(result["findings_count"], json!(2), "{result}");
    assert!(fleet_containers(&format!("{}_", fleet.prefix)).is_empty(), "a scanner container was left behind");
    assert!(empty_dir(&out), "the output directory was left behind");
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
    let mut found: Vec<String> = result["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["resource"]["uid"].as_str().unwrap_or("").to_string())
        .collect();
    found.sort();
    let mut expected: Vec<String> = ports.split(',').map(|p| format!("127.0.0.1:{p}/tcp")).collect();
    expected.sort();
    assert_eq!(found, expected);
    // The scanner wrote under the host directory, the worker read it through its mount, then removed it.
    assert!(fleet_containers(&format!("{}_", fleet.prefix)).is_empty(), "a scanner container was left behind");
    assert!(empty_dir(&out), "the per-job directories were not removed: {:?}", std::fs::read_dir(&out).map(|d| d.count()));
    assert!(worker.logs().contains("sub-job ended"), "{}", worker.logs());
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
