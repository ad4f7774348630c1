//! Prowler: cloud posture checks, read from its native `json-ocsf` output (OCSF Detection Findings).
//!
//! Credentials are decrypted here, for this SubJob only, and reach Prowler through its environment (AWS,
//! Azure) or a 0600 file in the SubJob's directory (GCP), never through its command line or the logs.
//! Prowler's own `finding_info.uid` is the finding's identity.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use bson::doc;
use cspm_shared::domain::finding::Verdict;
use cspm_shared::domain::native::TargetPolicy;
use cspm_shared::domain::provider::{GLOBAL_REGION, Provider};
use cspm_shared::domain::severity::Severity;
use cspm_shared::store::accounts::{self, AccountDoc};
use cspm_shared::store::findings::NewFinding;
use serde::Deserialize;

use super::json_array::{JsonArrayElements, place};
use super::{FindingSink, JobContext, Plan, ToolError, is_blank_report, open_output};
use crate::config::WorkerConfig;
use crate::runner::ProcessSpec;
use crate::runner::local::find_executable;

const OUTPUT_NAME: &str = "prowler";

pub fn check_available(config: &WorkerConfig) -> Result<(), ToolError> {
    find_executable(&config.prowler_path).map(|_| ()).ok_or_else(|| {
        ToolError::new(format!(
            "tool `prowler` is not available on this worker: `{}` was not found (install Prowler, set CSPM_PROWLER_PATH, \
             or run this queue on workers that have it)",
            config.prowler_path
        ))
    })
}

pub async fn plan(ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
    let job = ctx.job;
    let (Some(account_id), Some(provider)) = (&job.account_id, job.provider) else {
        return Err(ToolError::new("the SubJob names no cloud account"));
    };
    let account = accounts::get(ctx.mongo, &job.team_id, account_id)
        .await
        .map_err(|e| ToolError::new(format!("cannot load the cloud account: {e}")))?
        .ok_or_else(|| ToolError::new("the cloud account was deleted"))?;
    let creds = decrypt(ctx.config, &account)?;
    let mut args: Vec<String> = vec![provider.as_str().into()];
    let mut env = Vec::new();
    let mut secret_files = Vec::new();
    match provider {
        Provider::Aws => {
            for (field, var) in [
                ("access_key_id", "AWS_ACCESS_KEY_ID"),
                ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                ("session_token", "AWS_SESSION_TOKEN"),
            ] {
                if let Some(v) = creds.get(field) {
                    env.push((var.to_string(), v.clone()));
                }
            }
            if job.region != GLOBAL_REGION {
                args.extend(["--region".into(), job.region.clone()]);
            }
            if let Some(endpoint) = &account.endpoint_url {
                check_endpoint(endpoint, &ctx.config.target_policy).await?;
                env.push(("AWS_ENDPOINT_URL".to_string(), endpoint.clone()));
            }
        }
        Provider::Azure => {
            for (field, var) in [
                ("client_id", "AZURE_CLIENT_ID"),
                ("client_secret", "AZURE_CLIENT_SECRET"),
                ("tenant_id", "AZURE_TENANT_ID"),
            ] {
                if let Some(v) = creds.get(field) {
                    env.push((var.to_string(), v.clone()));
                }
            }
            args.push("--sp-env-auth".into());
        }
        Provider::Gcp => {
            let sa = creds
                .get("service_account_json")
                .ok_or_else(|| ToolError::new("the GCP account has no service account key"))?;
            let path = write_secret_file(&ctx.workdir, "gcp-credentials.json", sa)?;
            args.extend(["--credentials-file".into(), path.display().to_string()]);
            secret_files.push(path);
            args.extend(["--project-id".into(), account.provider_account_id.clone()]);
        }
    }
    if !account.services.is_empty() {
        args.push("--service".into());
        args.extend(account.services.iter().cloned());
    }
    if !account.excluded_checks.is_empty() {
        args.push("--excluded-check".into());
        args.extend(account.excluded_checks.iter().cloned());
    }
    args.extend([
        "--output-formats".into(),
        "json-ocsf".into(),
        "--output-directory".into(),
        ctx.workdir.display().to_string(),
        "--output-filename".into(),
        OUTPUT_NAME.into(),
        "--no-banner".into(),
    ]);
    Ok(Plan::Process(ProcessSpec {
        program: ctx.config.prowler_path.clone(),
        args,
        env,
        workdir: ctx.workdir.clone(),
        // Prowler exits 3 when some checks failed: that is a finished scan with findings.
        ok_exit_codes: vec![3],
        secret_files,
        mounts: vec![],
    }))
}

/// An account's endpoint override may only point where native scans may: its host is resolved and
/// every address checked against the target policy (no cloud metadata, no loopback or private ranges
/// unless allowed).
async fn check_endpoint(endpoint: &str, policy: &TargetPolicy) -> Result<(), ToolError> {
    let refuse = |e: String| ToolError::new(format!("the account's endpoint `{endpoint}` may not be scanned: {e}"));
    let url = url::Url::parse(endpoint).map_err(|e| refuse(e.to_string()))?;
    let host = url.host_str().ok_or_else(|| refuse("it has no host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    super::check_host(host, url.port_or_known_default().unwrap_or(443), policy).await.map_err(refuse)
}

fn decrypt(config: &WorkerConfig, account: &AccountDoc) -> Result<BTreeMap<String, String>, ToolError> {
    let Some(blob) = &account.credentials_encrypted else {
        return Ok(BTreeMap::new()); // ambient credentials (instance role, workload identity)
    };
    let cipher = config.cipher.as_ref().ok_or_else(|| {
        ToolError::new("this worker has no CLOUD_ENCRYPTION_KEY, so it cannot use the account's credentials")
    })?;
    let plain = cipher
        .decrypt(blob, &AccountDoc::credential_binding(&account.team_id, &account.id))
        .map_err(|e| ToolError::new(e.to_string()))?;
    serde_json::from_slice(&plain).map_err(|_| ToolError::new("the stored credentials are not in the expected format"))
}

fn write_secret_file(dir: &Path, name: &str, content: &str) -> Result<PathBuf, ToolError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ToolError::new(format!("cannot write the credential file: {e}")))?;
    f.write_all(content.as_bytes()).map_err(|e| ToolError::new(format!("cannot write the credential file: {e}")))?;
    Ok(path)
}

/// The fields of a Prowler OCSF finding the fleet uses.
#[derive(Deserialize)]
struct OcsfFinding {
    #[serde(default)]
    finding_info: FindingInfo,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    status_code: Option<String>,
    #[serde(default)]
    status_id: Option<i64>,
    #[serde(default)]
    status_detail: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    risk_details: Option<String>,
    #[serde(default)]
    resources: Vec<Resource>,
    #[serde(default)]
    remediation: Option<Remediation>,
    #[serde(default)]
    cloud: Option<Cloud>,
    #[serde(default)]
    unmapped: Unmapped,
    /// Prowler 3's JSON (pre-OCSF) names its checks here: recognised to say so.
    #[serde(rename = "CheckID", default)]
    legacy_check_id: Option<serde::de::IgnoredAny>,
    /// AWS Security Hub (ASFF) output.
    #[serde(rename = "SchemaVersion", default)]
    asff_schema: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct FindingInfo {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    desc: String,
    #[serde(default)]
    types: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    event_code: String,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    group: Option<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Remediation {
    #[serde(default)]
    desc: String,
    #[serde(default)]
    references: Vec<String>,
}

#[derive(Deserialize)]
struct Cloud {
    #[serde(default)]
    region: String,
}

#[derive(Deserialize, Default)]
struct Unmapped {
    #[serde(default)]
    compliance: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    related_url: Option<String>,
    #[serde(default)]
    muted: Option<bool>,
}

/// Finds Prowler's `*.ocsf.json` output in the SubJob's directory.
fn output_file(workdir: &Path) -> Result<PathBuf, ToolError> {
    let entries =
        std::fs::read_dir(workdir).map_err(|e| ToolError::new(format!("cannot list {}: {e}", workdir.display())))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".ocsf.json")))
        .ok_or_else(|| ToolError::new(format!("Prowler wrote no json-ocsf output in {}", workdir.display())))
}

pub fn parse(workdir: &Path, max_bytes: u64, sink: &mut FindingSink) -> Result<(), ToolError> {
    let path = output_file(workdir)?;
    let file = open_output(&path, max_bytes)?;
    parse_reader(BufReader::new(file), &path.display().to_string(), sink)
}

/// Streams the JSON array element by element: each finding is cut out of the file and parsed from
/// memory, so the file's size does not matter and parsing runs at memory speed.
pub fn parse_reader<R: std::io::BufRead>(mut input: R, name: &str, sink: &mut FindingSink) -> Result<(), ToolError> {
    if is_blank_report(&mut input).map_err(|e| ToolError::new(format!("{name}: cannot read it: {e}")))? {
        return Err(ToolError::new(format!(
            "{name}: the Prowler output is empty (Prowler stopped before writing its findings; see its log)"
        )));
    }
    let mut elements = JsonArrayElements::new(input);
    let mut index = 0u64;
    loop {
        let (bytes, at) = match elements.next_element() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return Err(ToolError::new(format!("{name}: not valid Prowler json-ocsf output: {e}"))),
        };
        let f: OcsfFinding = serde_json::from_slice(bytes).map_err(|e| {
            let (line, column) = place(&e, at);
            ToolError::new(format!(
                "{name}: not valid Prowler json-ocsf output at line {line}, column {column}: finding {index}: {e}"
            ))
        })?;
        let finding = to_finding(f, name, index, at.line)?;
        sink.count_examined(1);
        sink.push(finding)?;
        index += 1;
    }
    sink.flush()
}

fn to_finding(f: OcsfFinding, name: &str, index: u64, line: u64) -> Result<NewFinding, ToolError> {
    if f.legacy_check_id.is_some() {
        return Err(ToolError::new(format!(
            "{name}: this is Prowler 3's JSON format, not json-ocsf; run Prowler 4 or later with `--output-formats json-ocsf`"
        )));
    }
    if f.asff_schema.is_some() {
        return Err(ToolError::new(format!(
            "{name}: this is AWS Security Hub (ASFF) output, not json-ocsf; run Prowler with `--output-formats json-ocsf`"
        )));
    }
    if f.finding_info.uid.trim().is_empty() {
        return Err(ToolError::new(format!(
            "{name}: finding {index} (line {line}) has no finding_info.uid (is this Prowler json-ocsf output?)"
        )));
    }
    let verdict = match f.status_code.as_deref() {
        Some(code) => Verdict::parse_loose(code).ok_or_else(|| {
            ToolError::new(format!(
                "{name}: finding {index} (line {line}) has an unknown status_code `{code}` (expected PASS, FAIL or MANUAL)"
            ))
        })?,
        None => Verdict::Fail,
    };
    let resource = f.resources.first();
    let region = resource
        .map(|r| r.region.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| f.cloud.as_ref().map(|c| c.region.clone()))
        .unwrap_or_default();
    // OCSF also has Fatal (6), above Critical, and Unknown / Other: Fatal is the worst we have.
    let severity = match f.severity.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("fatal") => Severity::Critical,
        Some(s) => s.parse().unwrap_or(Severity::Informational),
        None => Severity::Informational,
    };
    let description = f.status_detail.or(f.message).filter(|s| !s.is_empty()).unwrap_or(f.finding_info.desc);
    let (remediation, mut references) = match f.remediation {
        Some(r) => (Some(r.desc).filter(|d| !d.is_empty()), r.references),
        None => (None, Vec::new()),
    };
    if let Some(url) = f.unmapped.related_url.filter(|u| !u.is_empty() && !references.contains(u)) {
        references.push(url);
    }
    let service = resource.and_then(|r| r.group.as_ref()).map(|g| g.name.clone()).filter(|s| !s.is_empty());
    let mut details = doc! {
        "status_code": verdict.status_code(),
        "check_id": &f.metadata.event_code,
        "region": region,
        "categories": f.finding_info.types.clone(),
        "prowler_finding_uid": &f.finding_info.uid,
    };
    if let Some(risk) = f.risk_details.filter(|r| !r.is_empty()) {
        details.insert("risk", risk);
    }
    if !f.metadata.version.is_empty() {
        details.insert("ocsf_version", f.metadata.version);
    }
    Ok(NewFinding {
        rule_id: f.metadata.event_code,
        title: f.finding_info.title,
        description,
        severity,
        verdict,
        muted: f.status_id == Some(3) || f.unmapped.muted == Some(true),
        resource_uid: resource.map(|r| r.uid.clone()).unwrap_or_default(),
        resource_type: resource.map(|r| r.kind.clone()).unwrap_or_default(),
        resource_name: resource.map(|r| r.name.clone()).filter(|n| !n.is_empty()),
        service,
        identity: vec![f.finding_info.uid],
        remediation,
        references,
        compliance: f.unmapped.compliance,
        details,
        ..NewFinding::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[test]
    fn prowler_ocsf_examples_parse_with_prowler_identities() {
        for cloud in ["aws", "azure", "gcp", "kubernetes"] {
            let path =
                cspm_shared::testing::fixtures_dir().join(format!("prowler/examples/example_output_{cloud}.ocsf.json"));
            let (tx, mut rx) = mpsc::channel(1024);
            let mut sink = FindingSink::new(tx, 3);
            let file = std::fs::File::open(&path).expect("fixture");
            parse_reader(BufReader::new(file), "x", &mut sink).expect("parses");
            drop(sink);
            let mut all = Vec::new();
            while let Ok(b) = rx.try_recv() {
                all.extend(b);
            }
            assert!(!all.is_empty(), "{cloud}");
            assert!(all.iter().all(|f| !f.rule_id.is_empty() && f.identity.len() == 1), "{cloud}");
            assert!(all.iter().any(|f| !f.compliance.is_empty()), "{cloud}: compliance kept");
            assert!(all.iter().all(|f| f.service.is_some()), "{cloud}: service kept");
        }
    }

    #[test]
    fn broken_output_names_the_file_and_position() {
        let (tx, _rx) = mpsc::channel(1024);
        let mut sink = FindingSink::new(tx, 3);
        let err = parse_reader(&b"[{\"severity\": \"Low\"}, {"[..], "out.ocsf.json", &mut sink).expect_err("truncated");
        assert!(err.message.contains("out.ocsf.json") && err.message.contains("line 1"), "{err}");
        let err = parse_reader(&b"{\"not\": \"an array\"}"[..], "legacy.json", &mut sink).expect_err("object");
        assert!(err.message.contains("legacy.json"), "{err}");
        let v3 = br#"[{"AssessmentStartTime": "2023-01-01", "CheckID": "s3_bucket_public_access", "Status": "FAIL"}]"#;
        let err = parse_reader(&v3[..], "v3.json", &mut sink).expect_err("v3");
        assert!(err.message.contains("Prowler 3") && err.message.contains("json-ocsf"), "{err}");
        let err = parse_reader(&b"  \n"[..], "empty.ocsf.json", &mut sink).expect_err("empty");
        assert!(err.message.contains("empty"), "{err}");
        let mut counting = FindingSink::counting();
        parse_reader(&b"[]"[..], "none.ocsf.json", &mut counting).expect("an empty array is a report");
        assert_eq!((counting.emitted, counting.examined), (0, 0));
    }
}
