//! `cspm-worker normalize`: the offline converter, as users run it in their pipelines.

use std::process::Command;

use cspm_tests::{assert_valid_ocsf, bin_dir};

fn normalize(tool: &str, file: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(bin_dir().join("cspm-worker"))
        .args(["normalize", "--tool", tool])
        .arg(file)
        .output()
        .expect("cspm-worker runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_report_converts_to_one_valid_ocsf_event_per_line() {
    let fixtures = cspm_shared::testing::fixtures_dir();
    let (code, stdout, stderr) = normalize("nmap", &fixtures.join("nmap/defectdojo/nmap_multiple_port.xml"));
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert!(events.len() >= 10);
    assert_valid_ocsf(&events);
    let (code, stdout, _) = normalize("prowler", &fixtures.join("prowler/examples/example_output_gcp.ocsf.json"));
    assert_eq!(code, 0);
    assert!(!stdout.is_empty());
}

#[test]
fn unreadable_input_exits_non_zero_with_a_message() {
    let fixtures = cspm_shared::testing::fixtures_dir();
    let (code, stdout, stderr) = normalize("nmap", &fixtures.join("prowler/examples/example_output_aws.ocsf.json"));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("not an nmap XML report"), "{stderr}");
    let dir = std::env::temp_dir().join(format!("cspm-normalize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let truncated = dir.join("cut.ocsf.json");
    let full =
        std::fs::read_to_string(fixtures.join("prowler/examples/example_output_aws.ocsf.json")).expect("fixture");
    std::fs::write(&truncated, &full[..full.len() / 3]).expect("write");
    let (code, _, stderr) = normalize("prowler", &truncated);
    assert_eq!(code, 1);
    assert!(stderr.contains("cut.ocsf.json") && stderr.contains("line"), "{stderr}");
    let (code, _, stderr) = normalize("nmap", &dir.join("missing.xml"));
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read"), "{stderr}");
}
