//! Tool adapters. Every adapter has the same shape: `check_available` (can this worker run it?), `plan`
//! (what to execute for a SubJob: command line, environment, output files) and `parse` (what the tool
//! wrote, streamed into findings). Runners execute plans; the pipeline stores what parsers emit.

pub mod canary;
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
use crate::runner::ProcessSpec;

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
            Adapter::Trivy => trivy::parse(workdir, max_bytes, sink),
            Adapter::Zap => zap::parse(workdir, max_bytes, sink),
            Adapter::Wapiti => wapiti::parse(workdir, max_bytes, sink),
        }
    }
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

    pub fn push(&mut self, f: NewFinding) -> Result<(), ToolError> {
        self.emitted += 1;
        if self.tx.is_none() {
            return Ok(());
        }
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

    #[test]
    fn every_nmap_and_prowler_fixture_normalises_to_valid_ocsf() {
        let fixtures = cspm_shared::testing::fixtures_dir();
        let schema = OcsfSchema::load(&fixtures.join("ocsf/compiled/ocsf-1.4.0.export.json")).expect("schema");
        let mut cases = Vec::new();
        for dir in ["nmap/generated", "nmap/defectdojo"] {
            for entry in std::fs::read_dir(fixtures.join(dir)).expect("fixtures").flatten() {
                if entry.path().extension().is_some_and(|e| e == "xml") {
                    cases.push((ReportKind::Nmap, entry.path()));
                }
            }
        }
        for cloud in ["aws", "azure", "gcp", "kubernetes"] {
            cases.push((
                ReportKind::Prowler,
                fixtures.join(format!("prowler/examples/example_output_{cloud}.ocsf.json")),
            ));
        }
        assert!(cases.len() >= 11, "{cases:?}");
        let mut total = 0;
        for (kind, path) in cases {
            for e in events(kind, &path) {
                let errors = schema.validate(&e);
                assert!(errors.is_empty(), "{}: {errors:?}\n{e}", path.display());
                total += 1;
            }
        }
        assert!(total >= 30, "{total} events");
    }

    #[test]
    fn identities_are_stable_across_conversions() {
        let path = cspm_shared::testing::fixtures_dir().join("nmap/defectdojo/nmap_multiple_port.xml");
        let uids =
            |v: Vec<serde_json::Value>| v.iter().map(|e| e["finding_info"]["uid"].to_string()).collect::<Vec<_>>();
        assert_eq!(uids(events(ReportKind::Nmap, &path)), uids(events(ReportKind::Nmap, &path)));
    }
}
