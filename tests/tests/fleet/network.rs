//! Network discovery through the API with real nmap against listeners the test opens.

use std::net::TcpListener;
use std::time::Duration;

use bson::doc;
use cspm_tests::{Fleet, wait_until};

use crate::network_scan;
use serde_json::json;

#[tokio::test]
async fn a_network_scan_finds_the_listeners_and_a_rescan_changes_no_counts() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    // Two listeners, and one port that is certainly closed (bound, then released).
    let a = TcpListener::bind("127.0.0.1:0").expect("listener");
    let b = TcpListener::bind("127.0.0.1:0").expect("listener");
    let closed = TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let (pa, pb) = (a.local_addr().expect("addr").port(), b.local_addr().expect("addr").port());
    let ports = format!("{pa},{pb},{closed}");

    let first = network_scan(&fleet, &token, &ports, "port_scan").await;
    assert_eq!(first["status"], json!("completed"), "{first}");
    assert_eq!(first["findings_count"], json!(2), "{first}");
    let found = crate::resource_uids(&first);
    let mut expected = vec![format!("127.0.0.1:{pa}/tcp"), format!("127.0.0.1:{pb}/tcp")];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(first["summary"]["new_findings"], json!(2));

    let stored = || async { fleet.mongo.findings.count_documents(doc! { "tool": "nmap" }).await.expect("count") };
    assert_eq!(stored().await, 2);
    let before = fleet
        .mongo
        .findings
        .find_one(doc! { "resource_uid": format!("127.0.0.1:{pa}/tcp") })
        .await
        .expect("db")
        .expect("stored");

    let second = network_scan(&fleet, &token, &ports, "port_scan").await;
    assert_eq!(second["status"], json!("completed"), "{second}");
    assert_eq!(second["findings_count"], json!(2));
    assert_eq!(second["summary"]["new_findings"], json!(0), "nothing is new on a rescan");
    assert_eq!(stored().await, 2, "a rescan creates no duplicate");
    let after = fleet
        .mongo
        .findings
        .find_one(doc! { "resource_uid": format!("127.0.0.1:{pa}/tcp") })
        .await
        .expect("db")
        .expect("stored");
    assert_eq!(before.get("first_seen"), after.get("first_seen"), "first_seen is kept");
    assert_eq!(before.get("first_run_id"), after.get("first_run_id"));
    assert_ne!(before.get("last_run_id"), after.get("last_run_id"), "the last run is updated");

    let events = fleet.api.ocsf_events(&token, second["scan_id"].as_str().expect("id")).await;
    assert_eq!(events.len(), 2);
    cspm_tests::assert_valid_ocsf(&events);
    assert!(events.iter().all(|e| e["class_uid"] == json!(2004) && e["metadata"]["product"]["name"] == json!("Nmap")));

    let (s, list) = fleet.api.get(&token, "/api/native-scans/results?tool_type=nmap").await;
    assert_eq!(s, 200);
    assert_eq!(list["total"], json!(2), "{list}");
    drop((a, b));
}

#[tokio::test]
async fn service_detection_reports_what_answers_on_the_port() {
    let mut fleet = Fleet::start(&[]).await;
    fleet.add_worker(&[]);
    let token = fleet.admin().await;
    let port = cspm_tests::free_port();
    let _http = cspm_tests::KillOnDrop(
        std::process::Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python http.server"),
    );
    wait_until(Duration::from_secs(20), "the HTTP listener", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
    .await;
    let result = network_scan(&fleet, &token, &port.to_string(), "service_detection").await;
    assert_eq!(result["status"], json!("completed"), "{result}");
    let f = &result["findings"][0];
    assert_eq!(f["details"]["service"]["name"], json!("http"), "{f}");
    assert!(f["description"].as_str().unwrap_or("").contains("SimpleHTTPServer"), "{f}");
}
