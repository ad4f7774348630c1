//! Rendering normalised findings as OCSF 1.4.0 events.
//!
//! A finding's class decides the event: Detection Finding (2004) for posture checks, exposures and
//! secrets; Vulnerability Finding (2002) for CVEs and web vulnerabilities; Compliance Finding (2003) for
//! control checks against a named standard. Cloud findings declare the `cloud` profile and carry the
//! provider, account and region. The lifecycle status is the finding's current one, so a run's events
//! read today say what is still open. Tool-specific detail travels in `unmapped`.

use serde_json::{Map, Value, json};

use crate::domain::finding::{FindingClass, FindingStatus, NewFinding, Verdict, VulnId, Vulnerability};
use crate::domain::provider::Provider;
use crate::domain::severity::Severity;
use crate::time::Timestamp;

pub const OCSF_VERSION: &str = "1.4.0";

/// Where and when a finding was seen, and where it stands, as OCSF needs it.
#[derive(Debug, Clone)]
pub struct EventContext<'a> {
    /// The tool that reported it (`nmap`, `prowler`, `trivy`...).
    pub tool: &'a str,
    pub tool_version: Option<&'a str>,
    /// The finding's stable identity.
    pub dedup_key: &'a str,
    /// When it was (last) seen: the event's time.
    pub seen_at: Timestamp,
    pub first_seen: Option<Timestamp>,
    pub status: FindingStatus,
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
        "trivy" => ("Trivy", "Aqua Security"),
        "zap" => ("ZAP", "ZAP Dev Team"),
        "wapiti" => ("Wapiti", "Wapiti Project"),
        "canary" => ("CSPM canary", "CSPM"),
        _ => ("CSPM", "CSPM"),
    }
}

/// The OCSF severity caption.
pub fn severity_caption(s: Severity) -> &'static str {
    match s {
        Severity::Informational => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

fn non_empty(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}

/// The finding as an OCSF event of its class.
pub fn render(f: &NewFinding, ctx: &EventContext<'_>) -> Value {
    let class = f.class;
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
    let title = non_empty(&f.title).unwrap_or(&f.rule_id);
    let mut finding_info = json!({
        "uid": ctx.dedup_key,
        "title": title,
        "product_uid": ctx.tool,
        "types": [f.rule_id],
        "last_seen_time": ctx.seen_at.millis(),
    });
    if let Some(d) = non_empty(&f.description) {
        finding_info["desc"] = json!(d);
    }
    if let Some(first) = ctx.first_seen {
        finding_info["first_seen_time"] = json!(first.millis());
    }
    if let Some(url) = f.references.iter().find(|r| r.starts_with("http")) {
        finding_info["src_url"] = json!(url);
    }
    let (status_id, status) = ctx.status.ocsf_status();
    let class_uid = class.ocsf_class_uid();
    let mut event = json!({
        "activity_id": 1,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": class_uid,
        "class_name": class.ocsf_class_name(),
        "type_uid": u64::from(class_uid) * 100 + 1,
        "type_name": format!("{}: Create", class.ocsf_class_name()),
        "severity_id": f.severity.ocsf_id(),
        "severity": severity_caption(f.severity),
        "status_id": status_id,
        "status": status,
        "status_code": f.verdict.status_code(),
        "time": ctx.seen_at.millis(),
        "time_dt": ctx.seen_at.to_rfc3339(),
        "message": non_empty(&f.description).unwrap_or(title),
        "finding_info": finding_info,
    });

    let mut resource = Map::new();
    let uid = non_empty(&f.resource_uid).or(f.resource_name.as_deref()).unwrap_or("unknown");
    resource.insert("uid".into(), json!(uid));
    if let Some(t) = non_empty(&f.resource_type) {
        resource.insert("type".into(), json!(t));
    }
    if let Some(n) = f.resource_name.as_deref().and_then(non_empty) {
        resource.insert("name".into(), json!(n));
    }
    if let Some(s) = f.service.as_deref().and_then(non_empty) {
        resource.insert("group".into(), json!({ "name": s }));
    }
    if let Some(c) = &ctx.cloud {
        metadata["profiles"] = json!(["cloud"]);
        event["cloud"] = json!({
            "provider": c.provider.as_str(),
            "region": c.region,
            "account": { "uid": c.account_uid },
        });
        resource.insert("region".into(), json!(c.region));
    }
    event["metadata"] = metadata;
    event["resources"] = json!([Value::Object(resource)]);

    let remediation = f.remediation.as_deref().and_then(non_empty).map(|desc| {
        let mut r = json!({ "desc": desc });
        if !f.references.is_empty() {
            r["references"] = json!(f.references);
        }
        r
    });
    match class {
        FindingClass::Vulnerability => {
            let vulns: Vec<Value> = if f.vulnerabilities.is_empty() {
                // A vulnerability finding always names one: fall back to the rule as an advisory.
                vec![json!({ "advisory": { "uid": f.rule_id, "title": title }, "title": title })]
            } else {
                f.vulnerabilities.iter().map(|v| vulnerability(v, f, remediation.as_ref())).collect()
            };
            event["vulnerabilities"] = json!(vulns);
        }
        FindingClass::Compliance => {
            if let Some(r) = remediation {
                event["remediation"] = r;
            }
            event["compliance"] = compliance(f, name);
            if let Some(e) = evidences(f) {
                event["evidences"] = e;
            }
        }
        FindingClass::Detection => {
            if let Some(r) = remediation {
                event["remediation"] = r;
            }
            if let Some(e) = evidences(f) {
                event["evidences"] = e;
            }
        }
    }

    let mut unmapped = Map::new();
    if !f.details.is_empty()
        && let Ok(Value::Object(details)) = serde_json::to_value(&f.details)
    {
        unmapped.extend(details);
    }
    if !f.compliance.is_empty() && class != FindingClass::Compliance {
        unmapped.insert("compliance".into(), json!(f.compliance));
    }
    if f.muted {
        unmapped.insert("muted".into(), json!(true));
    }
    if !unmapped.is_empty() {
        event["unmapped"] = Value::Object(unmapped);
    }
    event
}

fn vulnerability(v: &Vulnerability, f: &NewFinding, remediation: Option<&Value>) -> Value {
    let mut out = json!({
        "title": non_empty(&v.title).unwrap_or(v.id.as_str()),
        "severity": severity_caption(v.severity),
    });
    if let Some(d) = non_empty(&v.description) {
        out["desc"] = json!(d);
    }
    if !v.references.is_empty() {
        out["references"] = json!(v.references);
    }
    if let Some(fix) = v.fix_available {
        out["is_fix_available"] = json!(fix);
    }
    if let Some(r) = remediation {
        out["remediation"] = r.clone();
    }
    match &v.id {
        VulnId::Cve(id) => {
            let mut cve = json!({ "uid": id });
            if let Some(t) = non_empty(&v.title) {
                cve["title"] = json!(t);
            }
            if !v.cvss.is_empty() {
                let scores: Vec<Value> = v
                    .cvss
                    .iter()
                    .map(|c| {
                        let mut s = json!({ "version": c.version, "base_score": c.base_score });
                        if let Some(vec) = &c.vector {
                            s["vector_string"] = json!(vec);
                        }
                        if let Some(src) = &c.source {
                            s["vendor_name"] = json!(src);
                        }
                        s
                    })
                    .collect();
                cve["cvss"] = json!(scores);
            }
            if let Some(first) = v.cwes.first() {
                cve["cwe_uid"] = json!(first);
                cve["related_cwes"] = json!(v.cwes.iter().map(|c| json!({ "uid": c })).collect::<Vec<_>>());
            }
            if let Some(ms) = v.published_ms {
                cve["created_time"] = json!(ms);
            }
            out["cve"] = cve;
        }
        VulnId::Cwe(id) => out["cwe"] = json!({ "uid": id }),
        VulnId::Advisory(id) => out["advisory"] = json!({ "uid": id, "title": non_empty(&v.title).unwrap_or(id) }),
    }
    if let Some(p) = &v.package {
        let mut pkg = json!({ "name": p.name, "version": p.version });
        for (k, val) in [
            ("fixed_in_version", &p.fixed_in_version),
            ("purl", &p.purl),
            ("package_manager", &p.package_manager),
            ("path", &p.path),
        ] {
            if let Some(val) = val.as_deref().and_then(non_empty) {
                pkg[k] = json!(val);
            }
        }
        out["affected_packages"] = json!([pkg]);
    }
    if let Some(loc) = &f.location {
        out["affected_code"] = json!([code(loc)]);
    }
    out
}

fn file_object(path: &str) -> Value {
    let name = path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(path);
    json!({ "name": name, "path": path, "type_id": 1, "type": "Regular File" })
}

fn code(loc: &crate::domain::finding::CodeLocation) -> Value {
    let mut c = json!({ "file": file_object(&loc.path) });
    if let Some(l) = loc.start_line {
        c["start_line"] = json!(l);
    }
    if let Some(l) = loc.end_line {
        c["end_line"] = json!(l);
    }
    c
}

fn evidences(f: &NewFinding) -> Option<Value> {
    let mut items = Vec::new();
    if let Some(loc) = &f.location {
        let mut e = json!({ "file": file_object(&loc.path) });
        let lines: Map<String, Value> = [("start_line", loc.start_line), ("end_line", loc.end_line)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), json!(v))))
            .collect();
        if !lines.is_empty() {
            e["data"] = Value::Object(lines);
        }
        items.push(e);
    }
    if let Some(ep) = &f.endpoint {
        let mut e = Map::new();
        let mut dst = Map::new();
        if let Some(ip) = &ep.ip {
            dst.insert("ip".into(), json!(ip));
        }
        if let Some(h) = &ep.hostname {
            dst.insert("hostname".into(), json!(h));
        }
        if let Some(p) = ep.port {
            dst.insert("port".into(), json!(p));
        }
        if let Some(s) = &ep.service {
            dst.insert("svc_name".into(), json!(s));
        }
        let has_address = dst.contains_key("ip") || dst.contains_key("hostname") || dst.contains_key("svc_name");
        if has_address {
            e.insert("dst_endpoint".into(), Value::Object(dst));
        }
        if let Some(u) = &ep.url {
            e.insert("url".into(), json!({ "url_string": u }));
            let mut req = json!({ "url": { "url_string": u } });
            if let Some(m) = &ep.http_method {
                req["http_method"] = json!(m);
            }
            e.insert("http_request".into(), req);
        }
        if !e.is_empty() {
            items.push(Value::Object(e));
        }
    }
    (!items.is_empty()).then(|| json!(items))
}

fn compliance(f: &NewFinding, product_name: &str) -> Value {
    let (status_id, status) = match f.verdict {
        Verdict::Pass => (1, "Pass"),
        Verdict::Manual => (2, "Warning"),
        Verdict::Fail => (3, "Fail"),
    };
    let standards: Vec<&str> =
        if f.compliance.is_empty() { vec![product_name] } else { f.compliance.keys().map(String::as_str).collect() };
    let requirements: Vec<String> =
        f.compliance.iter().flat_map(|(fw, reqs)| reqs.iter().map(move |r| format!("{fw}: {r}"))).collect();
    let mut c = json!({
        "standards": standards,
        "control": f.rule_id,
        "status_id": status_id,
        "status": status,
        "status_code": f.verdict.status_code(),
    });
    if !requirements.is_empty() {
        c["requirements"] = json!(requirements);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::finding::{AffectedPackage, CodeLocation, Cvss, Endpoint};
    use crate::ocsf::schema::OcsfSchema;

    fn schema() -> OcsfSchema {
        OcsfSchema::load(&crate::testing::fixtures_dir().join("ocsf/compiled/ocsf-1.4.0.export.json")).expect("schema")
    }

    fn ctx(status: FindingStatus) -> EventContext<'static> {
        EventContext {
            tool: "trivy",
            tool_version: Some("0.76.0"),
            dedup_key: "k1",
            seen_at: Timestamp::from_millis(1_700_000_000_000),
            first_seen: Some(Timestamp::from_millis(1_600_000_000_000)),
            status,
            cloud: None,
        }
    }

    fn base(class: FindingClass) -> NewFinding {
        NewFinding {
            class,
            rule_id: "R1".into(),
            title: "A title".into(),
            description: "What is wrong".into(),
            severity: Severity::High,
            resource_uid: "alpine:3.10".into(),
            resource_type: "container_image".into(),
            identity: vec!["x".into()],
            remediation: Some("Fix it".into()),
            references: vec!["https://example.org/r1".into()],
            ..NewFinding::default()
        }
    }

    #[test]
    fn every_class_renders_valid_events() {
        let s = schema();
        let mut vuln = base(FindingClass::Vulnerability);
        let mut cve = Vulnerability::new(VulnId::Cve("CVE-2022-22965".into()), "Spring4Shell", Severity::Critical);
        cve.cvss = vec![Cvss { version: "3.1".into(), base_score: 9.8, vector: Some("AV:N".into()), source: None }];
        cve.cwes = vec!["CWE-94".into()];
        cve.package = Some(AffectedPackage {
            name: "spring-beans".into(),
            version: "5.3.15".into(),
            fixed_in_version: Some("5.3.18".into()),
            ..AffectedPackage::default()
        });
        vuln.vulnerabilities = vec![cve, Vulnerability::new(VulnId::cwe(79), "XSS", Severity::Medium)];
        vuln.location = Some(CodeLocation { path: "app/pom.xml".into(), start_line: Some(3), end_line: None });
        let mut comp = base(FindingClass::Compliance);
        comp.compliance.insert("CIS-5.0".into(), vec!["1.1".into()]);
        comp.verdict = Verdict::Pass;
        let mut det = base(FindingClass::Detection);
        det.endpoint = Some(Endpoint {
            ip: Some("127.0.0.1".into()),
            port: Some(8080),
            service: Some("http".into()),
            url: Some("http://127.0.0.1:8080/".into()),
            http_method: Some("GET".into()),
            ..Endpoint::default()
        });
        det.location = Some(CodeLocation { path: "secrets.env".into(), start_line: Some(1), end_line: Some(1) });
        det.muted = true;
        let empty_vuln = NewFinding { vulnerabilities: vec![], ..base(FindingClass::Vulnerability) };
        for (f, status) in [
            (&vuln, FindingStatus::Open),
            (&comp, FindingStatus::Passed),
            (&det, FindingStatus::Suppressed),
            (&empty_vuln, FindingStatus::Reopened),
        ] {
            let e = render(f, &ctx(status));
            assert_eq!(s.validate(&e), Vec::<String>::new(), "{e:#}");
            assert_eq!(e["class_uid"], json!(f.class.ocsf_class_uid()));
            assert_eq!(e["status_id"], json!(status.ocsf_status().0));
        }
        let e = render(&vuln, &ctx(FindingStatus::Open));
        assert_eq!(e["vulnerabilities"][0]["cve"]["uid"], json!("CVE-2022-22965"));
        assert_eq!(e["vulnerabilities"][0]["affected_packages"][0]["fixed_in_version"], json!("5.3.18"));
        assert_eq!(e["vulnerabilities"][1]["cwe"]["uid"], json!("CWE-79"));
        let e = render(&comp, &ctx(FindingStatus::Passed));
        assert_eq!(e["compliance"]["requirements"], json!(["CIS-5.0: 1.1"]));
        assert_eq!(e["compliance"]["status_id"], json!(1));
    }

    #[test]
    fn cloud_findings_carry_the_cloud_profile() {
        let mut c = ctx(FindingStatus::Open);
        c.cloud = Some(CloudContext { provider: Provider::Aws, account_uid: "123456789012", region: "eu-west-1" });
        let e = render(&base(FindingClass::Detection), &c);
        assert_eq!(e["metadata"]["profiles"], json!(["cloud"]));
        assert_eq!(e["cloud"]["account"]["uid"], json!("123456789012"));
        assert_eq!(schema().validate(&e), Vec::<String>::new());
    }
}
