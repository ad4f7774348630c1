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

/// What the simulated scan writes: enough for the parser to produce the requested findings.
#[derive(Debug, Serialize, Deserialize)]
pub struct CanaryReport {
    pub subjob_id: String,
    pub region: String,
    pub findings: u32,
    #[serde(default)]
    pub unverified: bool,
}

pub fn plan(ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
    let opts = ctx.job.canary.clone().unwrap_or_default();
    Ok(Plan::Simulated {
        duration: std::time::Duration::from_millis(opts.duration_ms),
        failure: opts.failure_for(&ctx.job.region),
    })
}

/// Writes the report the parser reads (called by the pipeline when the simulated scan ends well).
pub fn write_report(job: &SubJobDoc, workdir: &Path) -> std::io::Result<()> {
    let report = CanaryReport {
        subjob_id: job.id.to_string(),
        region: job.region.clone(),
        findings: job.canary.as_ref().map(|c| c.findings).unwrap_or(0),
        unverified: job.canary.as_ref().is_some_and(|c| c.unverified),
    };
    std::fs::write(workdir.join(OUTPUT_FILE), serde_json::to_vec(&report).unwrap_or_default())
}

pub fn parse(job: &SubJobDoc, workdir: &Path, sink: &mut FindingSink) -> Result<(), ToolError> {
    let path = workdir.join(OUTPUT_FILE);
    let file = open_output(&path, 1024 * 1024)?;
    let report: CanaryReport = serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| ToolError::new(format!("{}: not a canary report: {e}", path.display())))?;
    let scope = job.account_id.as_ref().map(|a| a.to_string()).unwrap_or_default();
    for i in 0..report.findings {
        sink.push(NewFinding {
            rule_id: "canary.synthetic".into(),
            title: format!("Canary finding {i}"),
            description: "A synthetic finding reported by the canary tool; it says nothing about the account.".into(),
            severity: Severity::Informational,
            resource_uid: format!("canary://{scope}/{}/{i}", job.region),
            resource_type: "canary".into(),
            identity: vec![scope.clone(), job.region.clone(), job.tool.to_string(), i.to_string()],
            details: doc! { "index": i as i64 },
            ..NewFinding::default()
        })?;
    }
    // The canary examined its region (an empty report is a verified one), unless told to claim otherwise.
    if !report.unverified {
        sink.count_examined(1);
    }
    sink.flush()
}
