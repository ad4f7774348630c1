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

use super::json_array::{ArrayError, JsonArrayReader, Text, place};
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

/// The fields of a Prowler OCSF finding the fleet uses. Strings are borrowed from the element's bytes
/// where they hold no escape, so a finding costs one copy of each kept value and nothing for the rest.
#[derive(Deserialize)]
struct OcsfFinding<'a> {
    #[serde(default, borrow)]
    finding_info: FindingInfo<'a>,
    #[serde(default, borrow)]
    metadata: Metadata<'a>,
    #[serde(default, borrow)]
    severity: Option<Text<'a>>,
    #[serde(default, borrow)]
    status_code: Option<Text<'a>>,
    #[serde(default)]
    status_id: Option<i64>,
    #[serde(default, borrow)]
    status_detail: Option<Text<'a>>,
    #[serde(default, borrow)]
    message: Option<Text<'a>>,
    #[serde(default, borrow)]
    risk_details: Option<Text<'a>>,
    /// Only the first resource is the finding's (Prowler writes one).
    #[serde(default, borrow, deserialize_with = "first_resource")]
    resources: Option<Resource<'a>>,
    #[serde(default, borrow)]
    remediation: Option<Remediation<'a>>,
    #[serde(default, borrow)]
    cloud: Option<Cloud<'a>>,
    #[serde(default, borrow)]
    unmapped: Unmapped<'a>,
    /// Prowler 3's JSON (pre-OCSF) names its checks here: recognised to say so.
    #[serde(rename = "CheckID", default)]
    legacy_check_id: Option<serde::de::IgnoredAny>,
    /// AWS Security Hub (ASFF) output.
    #[serde(rename = "SchemaVersion", default)]
    asff_schema: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct FindingInfo<'a> {
    #[serde(default, borrow)]
    uid: Text<'a>,
    #[serde(default, borrow)]
    title: Text<'a>,
    #[serde(default, borrow)]
    desc: Text<'a>,
    #[serde(default)]
    types: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    event_code: Text<'a>,
    #[serde(default, borrow)]
    version: Text<'a>,
}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(default, borrow)]
    uid: Text<'a>,
    #[serde(default, borrow)]
    name: Text<'a>,
    #[serde(rename = "type", default, borrow)]
    kind: Text<'a>,
    #[serde(default, borrow)]
    region: Text<'a>,
    #[serde(default, borrow)]
    group: Option<Group<'a>>,
}

#[derive(Deserialize)]
struct Group<'a> {
    #[serde(default, borrow)]
    name: Text<'a>,
}

#[derive(Deserialize)]
struct Remediation<'a> {
    #[serde(default, borrow)]
    desc: Text<'a>,
    #[serde(default)]
    references: Vec<String>,
}

#[derive(Deserialize)]
struct Cloud<'a> {
    #[serde(default, borrow)]
    region: Text<'a>,
}

#[derive(Deserialize, Default)]
struct Unmapped<'a> {
    #[serde(default)]
    compliance: BTreeMap<String, Vec<String>>,
    #[serde(default, borrow)]
    related_url: Option<Text<'a>>,
    #[serde(default)]
    muted: Option<bool>,
}

/// `resources`: the first element, the others skipped without being built; `null` is none.
fn first_resource<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Resource<'de>>, D::Error> {
    struct First;
    impl<'de> serde::de::Visitor<'de> for First {
        type Value = Option<Resource<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of resources")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Resource<'de>>()?;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    d.deserialize_any(First)
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

/// Streams the JSON array element by element: each finding is deserialised from the text buffer,
/// borrowing its strings, and converted before the next is read, so the file's size does not matter.
pub fn parse_reader<R: std::io::BufRead>(mut input: R, name: &str, sink: &mut FindingSink) -> Result<(), ToolError> {
    if is_blank_report(&mut input).map_err(|e| ToolError::new(format!("{name}: cannot read it: {e}")))? {
        return Err(ToolError::new(format!(
            "{name}: the Prowler output is empty (Prowler stopped before writing its findings; see its log)"
        )));
    }
    let mut elements = JsonArrayReader::new(input);
    let mut index = 0u64;
    loop {
        let (Element(converted), at) = match elements.next_element::<Element>() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(ArrayError::Element { error, at }) => {
                let (line, column) = place(&error, at);
                return Err(ToolError::new(format!(
                    "{name}: not valid Prowler json-ocsf output at line {line}, column {column}: finding {index}: {error}"
                )));
            }
            Err(e) => return Err(ToolError::new(format!("{name}: not valid Prowler json-ocsf output: {e}"))),
        };
        let finding = converted.map_err(|refusal| refusal.explain(name, index, at.line))?;
        sink.count_examined(1);
        sink.push(finding)?;
        index += 1;
    }
    sink.flush()
}

/// One finding of the report, converted to the fleet's shape while its text is still borrowed.
struct Element(Result<NewFinding, Refusal>);

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OcsfFinding::deserialize(d).map(|f| Element(to_finding(f)))
    }
}

/// Why an element that is valid JSON is not a Prowler json-ocsf finding.
enum Refusal {
    Prowler3,
    Asff,
    NoUid,
    UnknownStatus(String),
}

impl Refusal {
    fn explain(self, name: &str, index: u64, line: u64) -> ToolError {
        ToolError::new(match self {
            Refusal::Prowler3 => format!(
                "{name}: this is Prowler 3's JSON format, not json-ocsf; run Prowler 4 or later with `--output-formats json-ocsf`"
            ),
            Refusal::Asff => format!(
                "{name}: this is AWS Security Hub (ASFF) output, not json-ocsf; run Prowler with `--output-formats json-ocsf`"
            ),
            Refusal::NoUid => format!(
                "{name}: finding {index} (line {line}) has no finding_info.uid (is this Prowler json-ocsf output?)"
            ),
            Refusal::UnknownStatus(code) => format!(
                "{name}: finding {index} (line {line}) has an unknown status_code `{code}` (expected PASS, FAIL or MANUAL)"
            ),
        })
    }
}

fn to_finding(f: OcsfFinding<'_>) -> Result<NewFinding, Refusal> {
    if f.legacy_check_id.is_some() {
        return Err(Refusal::Prowler3);
    }
    if f.asff_schema.is_some() {
        return Err(Refusal::Asff);
    }
    if f.finding_info.uid.trim().is_empty() {
        return Err(Refusal::NoUid);
    }
    let verdict = match f.status_code.as_deref() {
        Some(code) => Verdict::parse_loose(code).ok_or_else(|| Refusal::UnknownStatus(code.to_string()))?,
        None => Verdict::Fail,
    };
    // OCSF also has Fatal (6), above Critical, and Unknown / Other: Fatal is the worst we have.
    let severity = match f.severity.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("fatal") => Severity::Critical,
        Some(s) => s.parse().unwrap_or(Severity::Informational),
        None => Severity::Informational,
    };
    let Unmapped { compliance, related_url, muted } = f.unmapped;
    let description = f.status_detail.or(f.message).filter(|s| !s.is_empty()).unwrap_or(f.finding_info.desc);
    let (remediation, mut references) = match f.remediation {
        Some(r) => (Some(r.desc).filter(|d| !d.is_empty()), r.references),
        None => (None, Vec::new()),
    };
    if let Some(url) = related_url.filter(|u| !u.is_empty() && !references.iter().any(|r| r == &**u)) {
        references.push(url.into_owned());
    }
    let (resource_uid, resource_type, resource_name, service, region) = match f.resources {
        Some(r) => (
            r.uid.into_owned(),
            r.kind.into_owned(),
            Some(r.name).filter(|n| !n.is_empty()).map(Text::into_owned),
            r.group.map(|g| g.name).filter(|s| !s.is_empty()).map(Text::into_owned),
            Some(r.region).filter(|r| !r.is_empty()),
        ),
        None => (String::new(), String::new(), None, None, None),
    };
    let region = region.or_else(|| f.cloud.map(|c| c.region)).unwrap_or_default();
    let identity = f.finding_info.uid.into_owned();
    let rule_id = f.metadata.event_code.into_owned();
    let mut details = doc! {
        "status_code": verdict.status_code(),
        "check_id": &rule_id,
        "region": &*region,
        "categories": f.finding_info.types,
        "prowler_finding_uid": &identity,
    };
    if let Some(risk) = f.risk_details.filter(|r| !r.is_empty()) {
        details.insert("risk", &*risk);
    }
    if !f.metadata.version.is_empty() {
        details.insert("ocsf_version", &*f.metadata.version);
    }
    Ok(NewFinding {
        rule_id,
        title: f.finding_info.title.into_owned(),
        description: description.into_owned(),
        severity,
        verdict,
        muted: f.status_id == Some(3) || muted == Some(true),
        resource_uid,
        resource_type,
        resource_name,
        service,
        identity: vec![identity],
        remediation: remediation.map(Text::into_owned),
        references,
        compliance,
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
