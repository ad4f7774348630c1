//! The canary: a scanner that scans nothing. It goes through every stage (plan, run, output directory,
//! parse, store, roll-up) so that operators can check a fleet end to end and tests can drive it; it can be
//! slow, fail, crash its worker, or hang, on request.

use std::path::Path;

use bson::doc;
use cspm_shared::domain::severity::Severity;
use cspm_shared::store::findings::NewFinding;
use cspm_shared::store::subjobs::SubJobDoc;
use serde::{Deserialize, Serialize};

use super::{FindingSink, JobContext, Plan, ToolError, open_output};

pub const OUTPUT_FILE: &str = "canary.json";

/// What the simulated scan writes, as JSON lines: this header, one line per finding, and an end marker,
/// so that the parser streams it like a real report (and a truncated one is caught like a real one).
#[derive(Debug, Serialize, Deserialize)]
pub struct CanaryReport {
    pub subjob_id: String,
    pub region: String,
    pub findings: u32,
    #[serde(default)]
    pub unverified: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    end: bool,
}

pub fn plan(ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
    let opts = ctx.job.canary.clone().unwrap_or_default();
    Ok(Plan::Simulated {
        duration: std::time::Duration::from_millis(opts.duration_ms),
        failure: opts.failure_for(&ctx.job.region),
    })
}

/// Writes the report the parser reads (called by the pipeline when the simulated scan ends well, or,
/// with `truncated`, cut off in the middle of its findings).
pub fn write_report(job: &SubJobDoc, workdir: &Path, truncated: bool) -> std::io::Result<()> {
    use std::io::Write;
    let report = CanaryReport {
        subjob_id: job.id.to_string(),
        region: job.region.clone(),
        findings: job.canary.as_ref().map(|c| c.findings).unwrap_or(0),
        unverified: job.canary.as_ref().is_some_and(|c| c.unverified),
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(workdir.join(OUTPUT_FILE))?);
    serde_json::to_writer(&mut out, &report)?;
    out.write_all(b"\n")?;
    let lines = if truncated { report.findings / 2 } else { report.findings };
    for i in 0..lines {
        serde_json::to_writer(&mut out, &Line { index: Some(i), end: false })?;
        out.write_all(b"\n")?;
    }
    if truncated {
        out.write_all(b"{\"index\": ")?;
    } else {
        serde_json::to_writer(&mut out, &Line { index: None, end: true })?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

pub fn parse(job: &SubJobDoc, workdir: &Path, sink: &mut FindingSink) -> Result<(), ToolError> {
    use std::io::BufRead;
    let path = workdir.join(OUTPUT_FILE);
    let name = path.display().to_string();
    let file = open_output(&path, 64 * 1024 * 1024)?;
    let mut lines = std::io::BufReader::new(file).lines();
    let bad =
        |n: usize, e: &dyn std::fmt::Display| ToolError::new(format!("{name}: not a canary report at line {n}: {e}"));
    let header = lines.next().ok_or_else(|| bad(1, &"the report is empty"))?.map_err(|e| bad(1, &e))?;
    let report: CanaryReport = serde_json::from_str(&header).map_err(|e| bad(1, &e))?;
    let scope = job.account_id.as_ref().map(|a| a.to_string()).unwrap_or_default();
    let mut ended = false;
    for (n, line) in lines.enumerate() {
        let number = n + 2;
        let line: Line = serde_json::from_str(&line.map_err(|e| bad(number, &e))?).map_err(|e| bad(number, &e))?;
        if line.end {
            ended = true;
            break;
        }
        let i = line.index.ok_or_else(|| bad(number, &"a line without an index"))?;
        sink.push(NewFinding {
            rule_id: "canary.synthetic".into(),
            title: format!("Canary finding {i}"),
            description: "A synthetic finding reported by the canary tool; it says nothing about the account.".into(),
            severity: Severity::Informational,
            resource_uid: format!("canary://{scope}/{}/{i}", job.region),
            resource_type: "canary".into(),
            identity: vec![scope.clone(), job.region.clone(), job.tool.to_string(), i.to_string()],
            details: doc! { "index": i64::from(i) },
            ..NewFinding::default()
        })?;
    }
    if !ended {
        return Err(ToolError::new(format!("{name}: the canary report is truncated (it ends before its end marker)")));
    }
    // The canary examined its region (an empty report is a verified one), unless told to claim otherwise.
    if !report.unverified {
        sink.count_examined(1);
    }
    sink.flush()
}
