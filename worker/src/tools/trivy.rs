//! Trivy: images, filesystems, IaC and Kubernetes (adapter in progress: parsing and planning land next).

use std::path::Path;

use super::{FindingSink, JobContext, Plan, ToolError};
use crate::config::WorkerConfig;
use crate::runner::local::find_executable;

pub fn check_available(config: &WorkerConfig) -> Result<(), ToolError> {
    find_executable(&config.trivy_path).map(|_| ()).ok_or_else(|| {
        ToolError::new(format!("tool `trivy` is not available on this worker: `{}` was not found", config.trivy_path))
    })
}

pub async fn plan(_ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
    Err(ToolError::new("the trivy adapter cannot run scans yet"))
}

pub fn parse(_workdir: &Path, _max_bytes: u64, _sink: &mut FindingSink) -> Result<(), ToolError> {
    Err(ToolError::new("the trivy adapter cannot parse reports yet"))
}

pub fn parse_reader<R: std::io::BufRead>(_input: R, name: &str, _sink: &mut FindingSink) -> Result<(), ToolError> {
    Err(ToolError::new(format!("{name}: the trivy adapter cannot parse reports yet")))
}
