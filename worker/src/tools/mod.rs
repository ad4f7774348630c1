//! Tool adapters. Every adapter has the same shape: `check_available` (can this worker run it?), `plan`
//! (what to execute for a SubJob: command line, environment, output files) and `parse` (what the tool
//! wrote, streamed into findings). Runners execute plans; the pipeline stores what parsers emit.

pub mod canary;
pub mod json_array;
pub mod nmap;
pub mod prowler;
pub mod trivy;
pub mod wapiti;
pub mod zap;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cspm_shared::domain::finding::FindingStatus;
use cspm_shared::domain::scan::{CanaryFailure, Tool};
use cspm_shared::ocsf::event::{EventContext, render};
use cspm_shared::store::findings::NewFinding;
use cspm_shared::store::subjobs::SubJobDoc;
use tokio::sync::mpsc;

use crate::config::WorkerConfig;
use crate::runner::{ImageInput, ProcessSpec};

/// A failure of the tool or of its output. The message becomes the SubJob's error: it must tell a person
/// what went wrong and, where possible, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub message: String,
}

impl ToolError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// What the pipeline knows about the SubJob it hands to an adapter.
pub struct JobContext<'a> {
    pub job: &'a SubJobDoc,
    pub mongo: &'a cspm_shared::db::Mongo,
    /// The SubJob's own output directory, as this worker sees it.
    pub workdir: PathBuf,
    pub config: &'a WorkerConfig,
}

/// How to execute a SubJob.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Run a scanner process.
    Process(ProcessSpec),
    /// Run a scanner process that reads a container image, which the Docker runner hands it from the
    /// local image store when it is there (see `ImageInput`).
    ProcessReadingImage(ProcessSpec, ImageInput),
    /// The canary: no process, the pipeline simulates one (duration and failure mode).
    Simulated { duration: Duration, failure: CanaryFailure },
}

/// The adapters, dispatched by tool.
pub enum Adapter {
    Canary,
    Nmap,
    Prowler,
    Trivy,
    Zap,
    Wapiti,
}

impl Adapter {
    pub fn for_tool(tool: Tool) -> Self {
        match tool {
            Tool::Canary => Adapter::Canary,
            Tool::Nmap => Adapter::Nmap,
            Tool::Prowler => Adapter::Prowler,
            Tool::Trivy => Adapter::Trivy,
            Tool::Zap => Adapter::Zap,
            Tool::Wapiti => Adapter::Wapiti,
        }
    }

    /// Whether this worker can run the tool; the error names what is missing.
    pub fn check_available(&self, config: &WorkerConfig) -> Result<(), ToolError> {
        match self {
            Adapter::Canary => Ok(()),
            Adapter::Nmap => nmap::check_available(config),
            Adapter::Prowler => prowler::check_available(config),
            Adapter::Trivy => trivy::check_available(config),
            Adapter::Zap => zap::check_available(config),
            Adapter::Wapiti => wapiti::check_available(config),
        }
    }

    pub async fn plan(&self, ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
        match self {
            Adapter::Canary => canary::plan(ctx),
            Adapter::Nmap => nmap::plan(ctx).await,
            Adapter::Prowler => prowler::plan(ctx).await,
            Adapter::Trivy => trivy::plan(ctx).await,
            Adapter::Zap => zap::plan(ctx).await,
            Adapter::Wapiti => wapiti::plan(ctx).await,
        }
    }

    /// Parses the output in `workdir`, sending findings to `sink`. Runs on a blocking thread.
    pub fn parse(
        &self,
        job: &SubJobDoc,
        workdir: &Path,
        max_bytes: u64,
        sink: &mut FindingSink,
    ) -> Result<(), ToolError> {
        match self {
            Adapter::Canary => canary::parse(job, workdir, sink),
            Adapter::Nmap => nmap::parse(workdir, max_bytes, sink),
            Adapter::Prowler => prowler::parse(workdir, max_bytes, sink),
            Adapter::Trivy => trivy::parse_for(job, workdir, max_bytes, sink),
            Adapter::Zap => zap::parse(workdir, max_bytes, sink),
            Adapter::Wapiti => wapiti::parse(workdir, max_bytes, sink),
        }
    }
}

/// Checks that a host a scanner will contact (an image registry, a cloud endpoint override) is one
/// scans may reach: its addresses (a name is resolved) must pass the target policy. A name that does
/// not resolve passes: the scanner then fails to reach it, with its own message.
pub async fn check_host(
    host: &str,
    port: u16,
    policy: &cspm_shared::domain::native::TargetPolicy,
) -> Result<(), String> {
    use cspm_shared::domain::native::Target;
    let target = Target::parse(host)?;
    let addrs: Vec<std::net::IpAddr> = match &target {
        Target::Host(h) => match tokio::net::lookup_host((h.as_str(), port)).await {
            Ok(found) => found.map(|sa| sa.ip()).collect(),
            Err(_) => Vec::new(),
        },
        other => other.literal_addresses(),
    };
    for ip in addrs {
        policy.check(ip)?;
    }
    Ok(())
}

/// Streams findings from a parser (on a blocking thread) to the store (async), in batches, so that
/// memory stays flat whatever the size of the output. A counting sink (for the validation pass, which
/// reads the whole output before anything is stored) keeps nothing.
pub struct FindingSink {
    tx: Option<mpsc::Sender<Vec<NewFinding>>>,
    batch: Vec<NewFinding>,
    batch_size: usize,
    /// Findings pushed so far.
    pub emitted: u64,
    /// What the tool says it examined (hosts up, targets, sites, checks): with no finding, a report that
    /// examined something is a verified empty result; one that examined nothing is not, and the
    /// zero-findings guard keeps it from resolving anything.
    pub examined: u64,
}

impl FindingSink {
    pub fn new(tx: mpsc::Sender<Vec<NewFinding>>, batch_size: usize) -> Self {
        Self { tx: Some(tx), batch: Vec::with_capacity(batch_size), batch_size, emitted: 0, examined: 0 }
    }

    /// A sink that only counts.
    pub fn counting() -> Self {
        Self { tx: None, batch: Vec::new(), batch_size: 0, emitted: 0, examined: 0 }
    }

    pub fn push(&mut self, mut f: NewFinding) -> Result<(), ToolError> {
        self.emitted += 1;
        if self.tx.is_none() {
            return Ok(());
        }
        bound_fields(&mut f);
        self.batch.push(f);
        if self.batch.len() >= self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Records that the tool examined `n` more things (see `examined`).
    pub fn count_examined(&mut self, n: u64) {
        self.examined += n;
    }

    pub fn flush(&mut self) -> Result<(), ToolError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        tx.blocking_send(batch).map_err(|_| ToolError::new("the finding store stopped accepting findings"))
    }
}

/// Longest text kept in a finding's short fields (title, resource, rule, identity parts) and in its
/// long ones (description, remediation). A report may repeat a huge value (an artifact name) in every
/// finding: bounded here once for every parser.
const MAX_SHORT_FIELD: usize = 2048;
const MAX_LONG_FIELD: usize = 16 * 1024;

/// Cuts `s` to at most `max` bytes (on a character boundary), marking the cut with `…`.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
}

/// Bounds a finding's text fields. An identity part that is too long keeps a prefix and a digest of the
/// whole, so that two long values stay two identities.
fn bound_fields(f: &mut NewFinding) {
    for s in [&mut f.rule_id, &mut f.title, &mut f.resource_uid, &mut f.resource_type] {
        cut(s, MAX_SHORT_FIELD);
    }
    for s in [f.resource_name.as_mut(), f.service.as_mut()].into_iter().flatten() {
        cut(s, MAX_SHORT_FIELD);
    }
    cut(&mut f.description, MAX_LONG_FIELD);
    if let Some(r) = f.remediation.as_mut() {
        cut(r, MAX_LONG_FIELD);
    }
    for part in &mut f.identity {
        if part.len() > MAX_SHORT_FIELD {
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(part.as_bytes()));
            cut(part, 256);
            part.push_str(&format!(" sha256:{digest}"));
        }
    }
}

/// Whether a report holds nothing but blanks. Looks past the first buffer when it is all blanks (those
/// are consumed), so a report that starts with a long run of blanks is not mistaken for an empty one.
pub fn is_blank_report<R: std::io::BufRead>(input: &mut R) -> std::io::Result<bool> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(true);
        }
        if !buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(false);
        }
        let n = buf.len();
        input.consume(n);
    }
}

/// Opens an output file, refusing one larger than the configured maximum.
pub fn open_output(path: &Path, max_bytes: u64) -> Result<std::fs::File, ToolError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ToolError::new(format!("cannot read the scanner output {}: {e}", path.display())))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max_bytes {
        return Err(ToolError::new(format!(
            "the scanner output {} is {len} bytes, more than the limit of {max_bytes} (CSPM_WORKER_MAX_OUTPUT_BYTES)",
            path.display()
        )));
    }
    Ok(file)
}

/// A scanner report the offline converter understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    /// Prowler `json-ocsf`.
    Prowler,
    /// Trivy JSON (`--format json`): images, filesystems, IaC, Kubernetes.
    Trivy,
    /// ZAP traditional JSON or JSON-plus.
    Zap,
    /// Nmap XML (`-oX`).
    Nmap,
    /// Wapiti JSON (`-f json`).
    Wapiti,
}

impl ReportKind {
    pub fn tool(self) -> Tool {
        match self {
            ReportKind::Prowler => Tool::Prowler,
            ReportKind::Trivy => Tool::Trivy,
            ReportKind::Zap => Tool::Zap,
            ReportKind::Nmap => Tool::Nmap,
            ReportKind::Wapiti => Tool::Wapiti,
        }
    }

    /// Parses a report with the parser the worker uses for this tool.
    pub fn parse_reader<R: std::io::BufRead>(
        self,
        input: R,
        name: &str,
        sink: &mut FindingSink,
    ) -> Result<(), ToolError> {
        match self {
            ReportKind::Prowler => prowler::parse_reader(input, name, sink),
            ReportKind::Trivy => trivy::parse_reader(input, name, sink),
            ReportKind::Zap => zap::parse_reader(input, name, sink),
            ReportKind::Nmap => nmap::parse_reader(input, name, sink),
            ReportKind::Wapiti => wapiti::parse_reader(input, name, sink),
        }
    }
}

/// The team identities of offline conversions are computed for: a team of its own, so that they are
/// stable from one conversion to the next.
const OFFLINE_TEAM: &str = "team_00000000000000000000000000";

/// Converts a report file to OCSF, one event per line, through the parsers the worker uses. Returns how
/// many events were written.
pub fn normalize_report(
    kind: ReportKind,
    path: &Path,
    max_bytes: u64,
    out: &mut dyn std::io::Write,
) -> Result<u64, ToolError> {
    let file = open_output(path, max_bytes)?;
    let name = path.display().to_string();
    let (tx, mut rx) = mpsc::channel::<Vec<NewFinding>>(4);
    let parser = std::thread::spawn(move || {
        let mut sink = FindingSink::new(tx, 500);
        kind.parse_reader(std::io::BufReader::new(file), &name, &mut sink)
    });
    let tool = kind.tool().as_str();
    let team: cspm_shared::ids::TeamId = OFFLINE_TEAM.parse().map_err(|e| ToolError::new(format!("{e}")))?;
    let seen_at = cspm_shared::time::Timestamp::now();
    let mut written = 0;
    let mut write_error = None;
    let mut line = Vec::with_capacity(4096);
    while let Some(batch) = rx.blocking_recv() {
        for f in &batch {
            let key = cspm_shared::store::findings::dedup_key(&team, tool, &f.identity);
            let ctx = EventContext {
                tool,
                tool_version: None,
                dedup_key: &key,
                seen_at,
                first_seen: None,
                status: FindingStatus::first(f.verdict),
                cloud: None,
            };
            let event = render(f, &ctx);
            if write_error.is_none() {
                line.clear();
                let written_line =
                    serde_json::to_writer(&mut line, &event).map_err(std::io::Error::other).and_then(|()| {
                        line.push(b'\n');
                        out.write_all(&line)
                    });
                if let Err(e) = written_line {
                    write_error = Some(e);
                }
            }
            written += 1;
        }
    }
    let parsed = parser.join().map_err(|_| ToolError::new("the parser crashed"))?;
    if let Some(e) = write_error {
        return Err(ToolError::new(format!("cannot write the events: {e}")));
    }
    parsed.map(|()| written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cspm_shared::ocsf::schema::OcsfSchema;

    fn events(kind: ReportKind, path: &Path) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        normalize_report(kind, path, 64 << 20, &mut out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        String::from_utf8(out).expect("utf-8").lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
    }

    /// Every scanner report of the fixtures and of the project's own test data, with its kind (the
    /// ZAP report template is not a report and is left out).
    fn every_report() -> Vec<(ReportKind, std::path::PathBuf)> {
        let fixtures = cspm_shared::testing::fixtures_dir();
        let testdata = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let dirs = [
            (ReportKind::Nmap, fixtures.join("nmap/generated"), "xml"),
            (ReportKind::Nmap, fixtures.join("nmap/defectdojo"), "xml"),
            (ReportKind::Prowler, fixtures.join("prowler/examples"), "json"),
            (ReportKind::Trivy, fixtures.join("trivy/golden"), "json"),
            (ReportKind::Trivy, fixtures.join("trivy/defectdojo"), "json"),
            (ReportKind::Trivy, testdata.join("trivy"), "json"),
            (ReportKind::Zap, fixtures.join("zap/zap-extensions"), "json"),
            (ReportKind::Zap, fixtures.join("zap/bcgov"), "json"),
            (ReportKind::Wapiti, testdata.join("wapiti"), "json"),
        ];
        let mut cases = Vec::new();
        for (kind, dir, ext) in dirs {
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("template-")))
                .collect();
            files.sort();
            cases.extend(files.into_iter().map(|f| (kind, f)));
        }
        cases
    }

    #[test]
    fn every_report_of_every_tool_normalises_to_valid_ocsf_through_the_converter() {
        let fixtures = cspm_shared::testing::fixtures_dir();
        let schema = OcsfSchema::load(&fixtures.join("ocsf/compiled/ocsf-1.4.0.export.json")).expect("schema");
        let cases = every_report();
        for kind in [ReportKind::Nmap, ReportKind::Prowler, ReportKind::Trivy, ReportKind::Zap, ReportKind::Wapiti] {
            assert!(cases.iter().any(|(k, _)| *k == kind), "no report for {kind:?}");
        }
        let mut total = 0;
        let mut classes = std::collections::BTreeSet::new();
        for (kind, path) in &cases {
            for e in events(*kind, path) {
                let errors = schema.validate(&e);
                assert!(errors.is_empty(), "{}: {errors:?}\n{e}", path.display());
                assert_eq!(e["metadata"]["product"]["uid"], serde_json::json!(kind.tool().as_str()));
                classes.insert(e["class_uid"].as_u64().unwrap_or(0));
                total += 1;
            }
        }
        assert!(total >= 200, "{total} events from {} reports", cases.len());
        assert_eq!(classes.into_iter().collect::<Vec<_>>(), vec![2002, 2003, 2004], "all three finding classes");
    }

    /// The normalised output of each nmap and Prowler report, kept as a snapshot (the other tools keep
    /// theirs in their own modules).
    #[test]
    fn nmap_and_prowler_reports_match_their_snapshots() {
        for (kind, path) in
            every_report().into_iter().filter(|(k, _)| matches!(k, ReportKind::Nmap | ReportKind::Prowler))
        {
            let summary: Vec<serde_json::Value> = events(kind, &path)
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "class_uid": e["class_uid"],
                        "rule": e["metadata"]["event_code"],
                        "severity": e["severity"],
                        "status_code": e["status_code"],
                        "resource": e["resources"][0]["uid"],
                        "title": e["finding_info"]["title"],
                        "cves": e["vulnerabilities"].as_array().map(|v| v.iter().map(|x| x["cve"]["uid"].clone()).collect::<Vec<_>>()),
                        "compliance": e["unmapped"]["compliance"].as_object().map(|c| c.len()),
                    })
                })
                .collect();
            let name = format!("{:?}-{}", kind, path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default())
                .to_lowercase()
                .replace('.', "_");
            insta::assert_json_snapshot!(name, summary);
        }
    }

    mod never_panics {
        use super::super::*;
        use proptest::prelude::*;

        const KINDS: [ReportKind; 5] =
            [ReportKind::Nmap, ReportKind::Prowler, ReportKind::Trivy, ReportKind::Zap, ReportKind::Wapiti];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any bytes given to any parser end in a result, never a panic.
            #[test]
            fn arbitrary_bytes(kind in 0usize..5, bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let mut sink = FindingSink::counting();
                let _ = KINDS[kind].parse_reader(&bytes[..], "fuzz", &mut sink);
            }

            /// A report cut anywhere, or with a byte changed, ends in a result, never a panic; cut before
            /// its end, it is an error, never a silent partial success.
            #[test]
            fn damaged_reports(which in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
                let cases = super::every_report();
                let (kind, path) = &cases[which.index(cases.len())];
                let bytes = std::fs::read(path).expect("report");
                let at = cut.index(bytes.len().max(1));
                let trimmed = String::from_utf8_lossy(&bytes[..at]).trim_end().len();
                let mut sink = FindingSink::counting();
                let result = kind.parse_reader(&bytes[..at], "cut", &mut sink);
                if trimmed < String::from_utf8_lossy(&bytes).trim_end().len() && at > 0 {
                    prop_assert!(result.is_err(), "{} cut at {at} parsed", path.display());
                }
                let mut changed = bytes.clone();
                if let Some(last) = changed.len().checked_sub(1) {
                    changed[at.min(last)] ^= flip;
                }
                let _ = kind.parse_reader(&changed[..], "flipped", &mut FindingSink::counting());
            }
        }
    }

    #[test]
    fn huge_values_are_bounded_and_long_identities_stay_distinct() {
        let long = |c: char| std::iter::repeat_n(c, 100_000).collect::<String>();
        let make = |c: char| NewFinding {
            rule_id: "r".into(),
            title: long(c),
            resource_uid: long(c),
            description: long(c),
            identity: vec![format!("{}{c}", long('x'))],
            ..NewFinding::default()
        };
        let (tx, mut rx) = mpsc::channel(4);
        let mut sink = FindingSink::new(tx, 2);
        sink.push(make('a')).expect("pushed");
        sink.push(make('b')).expect("pushed");
        drop(sink);
        let batch = rx.blocking_recv().expect("a batch");
        assert!(
            batch.iter().all(|f| f.title.len() <= MAX_SHORT_FIELD + 3 && f.description.len() <= MAX_LONG_FIELD + 3)
        );
        assert!(batch[0].identity[0].len() < 400, "{}", batch[0].identity[0].len());
        assert_ne!(batch[0].identity, batch[1].identity, "a digest of the whole keeps them apart");
    }

    #[test]
    fn a_report_that_starts_with_a_long_run_of_blanks_is_not_empty() {
        let fixtures = cspm_shared::testing::fixtures_dir();
        for (kind, rel) in [
            (ReportKind::Prowler, "prowler/examples/example_output_gcp.ocsf.json"),
            (ReportKind::Zap, "zap/bcgov/zap_2.14.0_itsecgames.json"),
        ] {
            let mut bytes = vec![b' '; 100_000];
            bytes.extend(std::fs::read(fixtures.join(rel)).expect("fixture"));
            let mut sink = FindingSink::counting();
            kind.parse_reader(std::io::BufReader::new(&bytes[..]), rel, &mut sink).expect("parses");
            assert!(sink.emitted > 0, "{rel}");
            let blank = vec![b'\n'; 100_000];
            let err = kind.parse_reader(std::io::BufReader::new(&blank[..]), rel, &mut sink).expect_err("empty");
            assert!(err.message.contains("empty"), "{err}");
        }
    }

    #[test]
    fn identities_are_stable_across_conversions() {
        let path = cspm_shared::testing::fixtures_dir().join("nmap/defectdojo/nmap_multiple_port.xml");
        let uids =
            |v: Vec<serde_json::Value>| v.iter().map(|e| e["finding_info"]["uid"].to_string()).collect::<Vec<_>>();
        assert_eq!(uids(events(ReportKind::Nmap, &path)), uids(events(ReportKind::Nmap, &path)));
    }
}
