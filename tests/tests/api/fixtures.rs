//! Fixture input shared by the API tests: the operator's SCF catalog imported through the API (as
//! `curl -F field=@file` sends it; nothing of it is in this repository, it is read from the fixtures at
//! run time), scanner reports parsed with the worker's own parsers, and a compliance sync waited for.

use std::path::PathBuf;

use cspm_shared::domain::finding::NewFinding;
use cspm_shared::testing::fixtures_dir;
use cspm_tests::{TestApi, wait_until};
use cspm_worker::tools::{FindingSink, ReportKind};
use serde_json::{Value, json};

pub fn fixture(rel: &str) -> PathBuf {
    fixtures_dir().join(rel)
}

/// (field, file name, path) of the JSON catalog and its crosswalk: the smaller, quicker layout.
pub fn json_import() -> Vec<(&'static str, String, PathBuf)> {
    vec![
        ("catalog", "scf-controls.json".into(), fixture("scf/security-controls-mcp/scf-controls.json")),
        ("crosswalk", "framework-to-scf.json".into(), fixture("scf/security-controls-mcp/framework-to-scf.json")),
    ]
}

/// A `multipart/form-data` body, as `curl -F field=@file` sends it.
fn multipart(parts: &[(&str, String, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = format!("cspm-test-{}", ulid::Ulid::generate());
    let mut body = Vec::new();
    for (field, name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `POST /api/common-controls/import-scf` with the files of `parts`.
pub async fn import(app: &TestApi, token: &str, parts: Vec<(&'static str, String, PathBuf)>) -> (u16, Value) {
    let parts: Vec<(&str, String, Vec<u8>)> = parts
        .into_iter()
        .map(|(f, n, p)| (f, n, std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))))
        .collect();
    import_bytes(app, token, &parts).await
}

pub async fn import_bytes(app: &TestApi, token: &str, parts: &[(&str, String, Vec<u8>)]) -> (u16, Value) {
    let (ctype, body) = multipart(parts);
    let req = app
        .api
        .http
        .post(app.api.url("/api/common-controls/import-scf"))
        .bearer_auth(token)
        .header("content-type", ctype)
        // A whole catalog on a busy test server: more than the client's default minute.
        .timeout(std::time::Duration::from_secs(300))
        .body(body);
    app.api.raw(req).await
}

/// A scanner report of the fixtures (`rel` below the fixtures directory), through the worker's parser
/// for `kind`. Blocking: call it from `spawn_blocking`.
pub fn parse_report(kind: ReportKind, rel: &str) -> Vec<NewFinding> {
    let path = fixture(rel);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let parser = std::thread::spawn(move || {
        let mut sink = FindingSink::new(tx, 500);
        kind.parse_reader(std::io::BufReader::new(file), &name, &mut sink).and_then(|()| sink.flush())
    });
    let mut out = Vec::new();
    while let Some(batch) = rx.blocking_recv() {
        out.extend(batch);
    }
    parser.join().expect("parser thread").unwrap_or_else(|e| panic!("{rel} parses: {}", e.message));
    out
}

/// Prowler's AWS example, through the worker's parser. Blocking: call it from `spawn_blocking`.
pub fn prowler_aws_findings() -> Vec<NewFinding> {
    let mut batch = parse_report(ReportKind::Prowler, "prowler/examples/example_output_aws.ocsf.json");
    // The example's `finding_info.uid` is the placeholder `<finding_uid>` in every finding (it is a
    // template of the output); the check tells them apart.
    for f in &mut batch {
        f.identity.push(f.rule_id.clone());
    }
    batch
}

/// Starts a compliance sync of the caller's team through the API and waits until it has finished;
/// returns the sync job.
pub async fn sync_and_wait(app: &TestApi, token: &str) -> Value {
    let (s, b) = app.api.post(token, "/api/compliance-engine/sync", json!({})).await;
    assert!(s == 202 || s == 200, "{s} {b}");
    let job = b["job_id"].as_str().expect("job id").to_string();
    wait_until(std::time::Duration::from_secs(60), "the sync to finish", || async {
        let (_, j) = app.api.get(token, &format!("/api/compliance-engine/sync/{job}")).await;
        (j["status"] != json!("running")).then_some(j)
    })
    .await
}
