//! Building OCSF 1.4.0 events from normalised findings.
//!
//! Every finding becomes a Detection Finding (class 2004): posture checks, exposures and (later) secrets.
//! Cloud findings declare the `cloud` profile and carry the provider, account and region. Tool-specific
//! detail travels in `unmapped`.

use serde_json::{Value, json};

use crate::domain::provider::Provider;
use crate::domain::severity::Severity;
use crate::store::findings::NewFinding;
use crate::time::Timestamp;

pub const OCSF_VERSION: &str = "1.4.0";

/// Where a finding was seen, as OCSF needs it.
#[derive(Debug, Clone)]
pub struct EventContext<'a> {
    /// The tool that reported it (`nmap`, `prowler`, `canary`).
    pub tool: &'a str,
    pub tool_version: Option<&'a str>,
    /// The finding's stable identity.
    pub dedup_key: &'a str,
    pub seen_at: Timestamp,
    pub cloud: Option<CloudContext<'a>>,
}

#[derive(Debug, Clone)]
pub struct CloudContext<'a> {
    pub provider: Provider,
    pub account_uid: &'a str,
    pub region: &'a str,
}

fn product(tool: &str) -> (&'static str, &'static str) {
    match tool {
        "nmap" => ("Nmap", "Nmap Project"),
        "prowler" => ("Prowler", "Prowler"),
        "canary" => ("CSPM canary", "CSPM"),
        _ => ("CSPM", "CSPM"),
    }
}

fn severity_caption(s: Severity) -> &'static str {
    match s {
        Severity::Informational => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

/// A Detection Finding (2004, activity Create) for a finding.
pub fn detection_finding(f: &NewFinding, ctx: &EventContext<'_>) -> Value {
    let (name, vendor) = product(ctx.tool);
    let mut product = json!({ "name": name, "vendor_name": vendor, "uid": ctx.tool });
    if let Some(v) = ctx.tool_version {
        product["version"] = json!(v);
    }
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": product,
        "event_code": f.rule_id,
        "uid": ctx.dedup_key,
        "profiles": [],
    });
    let mut resource = json!({ "uid": f.resource_uid, "type": f.resource_type });
    let mut event = json!({
        "activity_id": 1,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": f.severity.ocsf_id(),
        "severity": severity_caption(f.severity),
        "status_id": 1,
        "status": "New",
        "time": ctx.seen_at.millis(),
        "time_dt": ctx.seen_at.to_rfc3339(),
        "message": f.description,
        "finding_info": {
            "uid": ctx.dedup_key,
            "title": f.title,
            "desc": f.description,
            "product_uid": ctx.tool,
            "types": [f.rule_id],
        },
    });
    if let Some(code) = f.details.get_str("status_code").ok().filter(|c| !c.is_empty()) {
        event["status_code"] = json!(code);
    }
    if let Some(r) = &f.remediation {
        event["remediation"] = json!({ "desc": r });
    }
    if let Some(c) = &ctx.cloud {
        metadata["profiles"] = json!(["cloud"]);
        event["cloud"] = json!({
            "provider": c.provider.as_str(),
            "region": c.region,
            "account": { "uid": c.account_uid },
        });
        resource["region"] = json!(c.region);
    }
    event["metadata"] = metadata;
    event["resources"] = json!([resource]);
    if !f.details.is_empty()
        && let Ok(details) = serde_json::to_value(&f.details)
    {
        event["unmapped"] = details;
    }
    event
}
